"""ID-sync endpoint benchmark: the production server on loopback, driven by wrk.

    make bench-idsync                     # 20 s, 32 connections
    .venv/bin/python bench/idsync.py --seconds 30 --connections 128 --workers 4

It creates a scratch database next to DATABASE_URL's (``<name>_idsync_bench``), migrates it,
seeds a partner data source and 100,000 returning visitors (profiles with a mapping), starts
gunicorn as the README runs its ID-sync pool (portal/gunicorn_conf.py with WEB_POOL=idsync:
``--workers`` sync workers, default 2 per core) on a free loopback port, and runs ``wrk``
(Debian package ``wrk``) from another process: a mix of
returning visitors (their signed cookie, a known DPUUID: a refresh) and new visitors (no
cookie, a new DPUUID: a profile and a mapping, counted against the limits in Redis), each
from its own client address through the loopback proxy. It prints requests/s, p50/p99
latency, every answer that is not 2xx/3xx and the calls refused by the limits (0 expected).
Target (2 cores): >= 2,000 requests/s, p99 <= 50 ms, zero errors.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from scratch import scratch_database  # bench/, the script's own folder

BASE_DIR = Path(__file__).resolve().parent.parent
RETURNING = 100_000

# Returning visitors send their signed cookie (read from a file the bench writes); every
# call comes through the proxy (loopback, a trusted one) from a client address of its own in
# X-Real-IP, so that the per-address limit never stops a new visitor and every new one
# is counted in Redis: the real write path.
WRK_SCRIPT = """
math.randomseed(os.time())
local returning = %(returning)d
local cookies = {}
for line in io.lines("%(cookies)s") do cookies[#cookies + 1] = line end
local n = 0
local function address()
  local r = math.random
  return string.format("10.%%d.%%d.%%d", r(0, 255), r(0, 255), r(1, 254))
end
request = function()
  n = n + 1
  if math.random() < %(share)f then
    local i = math.random(1, returning)
    return wrk.format("GET", "/ibs:dpid=801&dpuuid=v" .. i,
                      {["Cookie"] = "dd_uuid=" .. cookies[i], ["X-Real-IP"] = address()})
  end
  local id = "new-" .. os.time() .. "-" .. n .. "-" .. math.random(1, 1000000000)
  return wrk.format("GET", "/ibs:dpid=801&dpuuid=" .. id, {["X-Real-IP"] = address()})
end
"""


def _cookie_file(secret_key: str) -> str:
    """The returning visitors' cookies, one a line, signed as the endpoint signs them."""
    from django.core.signing import Signer

    sys.path.insert(0, str(BASE_DIR))
    from partners.idsync.cookies import SALT

    signer = Signer(key=secret_key, salt=SALT, fallback_keys=[])
    with tempfile.NamedTemporaryFile("w", suffix=".cookies", delete=False) as out:
        for i in range(1, RETURNING + 1):
            out.write(signer.sign("1" + str(i).zfill(37)) + "\n")
    return out.name


def _refused_today(redis_url: str) -> int:
    """Calls of the bench's data source refused today (partners/idsync/limits.py)."""
    import redis

    day = time.strftime("%Y-%m-%d", time.gmtime())
    counts = redis.Redis.from_url(redis_url).hvals(f"idsync:refused:801:{day}")
    return sum(int(c) for c in counts)


def _seed(database_url: str) -> None:
    # As `make bench-idsync` runs it: no SECRET_KEY in the environment (the settings need one).
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret-key"),
    }
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], check=True, env=env)
    create = (
        "from partners.models import DataSource, Partner;"
        "p = Partner.objects.create(pid=9001, slug='bench', name='Bench Partner');"
        "DataSource.objects.create(dpid=801, partner=p, name='Bench', id_type='cookie',"
        " inbound_id_type='dpuuid')"
    )
    subprocess.run([*manage, "shell", "-c", create], check=True, env=env)
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO segments_profile (uuid, created_at)"
            " SELECT '1' || lpad(g::text, 37, '0'), now() FROM generate_series(1, %s) g",
            [RETURNING],
        )
        conn.execute(
            "INSERT INTO partners_idmapping (data_source_id, dpuuid, profile_id, first_seen_at,"
            " last_seen_at) SELECT 801, 'v' || ltrim(substr(uuid, 2), '0'), id, now(), now()"
            " FROM segments_profile"
        )
        conn.execute("ANALYZE")


def _cpu_seconds(wanted: Callable[[int, str], bool]) -> float:
    """CPU time (user and system) of the processes ``wanted(parent pid, command line)`` picks,
    from /proc (Linux): on a machine shared with other work, CPU per request moves less from
    one run to the next than requests per second."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if wanted(int(fields[1]), command):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--returning", type=float, default=0.7, help="share of returning visitors")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        sys.exit("Set DATABASE_URL and REDIS_URL (or run through `make bench-idsync`).")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk).")

    database_url = scratch_database("idsync_bench")
    print(f"setting up: {RETURNING:,} returning visitors", flush=True)
    _seed(database_url)
    port = _free_port()
    secret_key = os.environ.get("SECRET_KEY", "bench-only-secret-key")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": secret_key,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "WEB_POOL": "idsync",  # the production ID-sync pool (portal/gunicorn_conf.py)
        "WEB_WORKERS": str(args.workers),
        "FORWARDED_ALLOW_IPS": "127.0.0.1",  # wrk is the proxy
        # One data source takes every new visitor of the run (hundreds a second): its
        # ceiling is raised so that the run measures writing, counted as always.
        "IDSYNC_NEW_PER_DPID": "1000000000/10m",
    }
    cookies = _cookie_file(secret_key)
    refused_before = _refused_today(os.environ["REDIS_URL"])
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            "python:portal.gunicorn_conf",
            "portal.wsgi:idsync_application",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=BASE_DIR,
        env=env,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ibs", timeout=1)
                break
            except urllib.error.HTTPError:  # answering (400: no ID given): it is up
                break
            except OSError:
                time.sleep(0.1)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(
                WRK_SCRIPT % {"returning": RETURNING, "share": args.returning, "cookies": cookies}
            )
        print(
            f"gunicorn: {args.workers} workers; wrk: {args.connections} connections,"
            f" {args.seconds} s, {args.returning:.0%} returning visitors",
            flush=True,
        )
        database = database_url.rsplit("/", 1)[1]

        def workers(parent: int, command: str) -> bool:
            return parent == server.pid

        def backends(parent: int, command: str) -> bool:  # a local PostgreSQL's, if any
            return command.startswith("postgres:") and f" {database} " in command

        cpu_before = (_cpu_seconds(workers), _cpu_seconds(backends))
        result = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "-s",
                script.name,
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out = result.stdout
        cpu = (_cpu_seconds(workers) - cpu_before[0], _cpu_seconds(backends) - cpu_before[1])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        os.unlink(cookies)
    refused = _refused_today(os.environ["REDIS_URL"]) - refused_before
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    print(f"requests/s: {rate:10,.0f}")
    done = rate * args.seconds
    print(
        f"CPU:        {cpu[0] / done * 1e6:.0f} us per request in gunicorn's workers, "
        f"{cpu[1] / done * 1e6:.0f} us in PostgreSQL (0: not on this machine)"
    )
    print(f"latency:    p50 {p50}, p99 {p99}")
    print(f"errors:     {int(bad.group(1)) if bad else 0} non-2xx/3xx answers")
    if socket_errors:
        print(f"            socket errors: {socket_errors.group(1)}")
    print(f"refused:    {refused} calls over the limits (0: every new visitor was written)")


if __name__ == "__main__":
    main()
