"""The web tier as production runs it: gunicorn started from portal/gunicorn_conf.py (the
README's commands), DEBUG off, against the test database and Redis."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from partners.models import InboundFile
from partners.portal.api import api_token_rotate
from tests.conftest import port_wait
from tests.partners.inbound.conftest import World
from tests.partners.inbound.test_jobs import worker_environment

BASE_DIR = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Gunicorn:
    """``gunicorn -c python:portal.gunicorn_conf <app>`` on a free loopback port."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-c",
                "python:portal.gunicorn_conf",
                "--bind",
                f"127.0.0.1:{self.port}",
                app,
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_wait(self.process, self.port, "gunicorn", 30)

    def get(self, path: str, timeout: float = 10) -> tuple[int, float]:
        """The status of ``GET path`` and how long it took."""
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status, time.monotonic() - started

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _environment(settings: Any, **extra: str) -> dict[str, str]:
    return {
        **worker_environment(),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SESSION_COOKIE_SECURE": "0",
        **extra,
    }


@pytest.fixture
def pools(settings: Any, tmp_path: Path) -> Iterator[Any]:
    """Start the README's two pools with ``extra`` environment: (portal, idsync)."""
    started: list[Gunicorn] = []

    def start(**extra: str) -> tuple[Gunicorn, Gunicorn]:
        env = _environment(settings, MEDIA_ROOT=str(tmp_path / "media"), **extra)
        portal = Gunicorn("portal.wsgi", env)
        started.append(portal)
        idsync = Gunicorn("portal.wsgi:idsync_application", {**env, "WEB_POOL": "idsync"})
        started.append(idsync)
        return portal, idsync

    yield start
    for server in started:
        server.stop()


def _multipart(name: str, content: bytes) -> tuple[bytes, str]:
    boundary = "s2s-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _post(
    port: int, path: str, token: str, body: bytes, content_type: str, *, pause: float = 0.0
) -> tuple[int, bytes]:
    """POST ``body``; with ``pause``, sent in 20 pieces with that pause between them (a slow
    link)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.putrequest("POST", path)
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    step = max(1, len(body) // 20 + 1)
    for start in range(0, len(body), step):
        conn.send(body[start : start + step])
        if pause:
            time.sleep(pause)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


@pytest.mark.django_db(transaction=True)
def test_an_upload_slower_than_the_worker_timeout_is_received(pools: Any) -> None:
    """The old command's sync workers were killed (with the upload) after --timeout seconds
    (30 by default) of one request; the portal pool's threads take the time the link needs."""
    world = World()
    token = api_token_rotate(partner=world.partner, by="test")
    portal, _ = pools(WEB_TIMEOUT="2", WEB_WORKERS="1")
    body, content_type = _multipart("ftp_dpm_21_1700000000.sync.gz", os.urandom(1024**2))
    started = time.monotonic()
    status, data = _post(portal.port, "/api/v1/files", token, body, content_type, pause=0.3)
    assert time.monotonic() - started > 5  # well past the 2 s timeout
    assert status == 201, data
    assert InboundFile.objects.get().name == "ftp_dpm_21_1700000000.sync.gz"


def _gzip_of_blank_lines(size: int) -> bytes:
    """A small gzip that inflates to ``size`` bytes of empty lines (no record at all)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\n" * (16 * 1024**2)
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join([*parts, packer.flush()])


@pytest.mark.django_db(transaction=True)
def test_checks_of_a_gzip_bomb_stay_bounded_and_the_other_pages_answer(pools: Any) -> None:
    world = World()
    token = api_token_rotate(partner=world.partner, by="test")
    portal, idsync = pools(WEB_WORKERS="1", WEB_THREADS="4")
    bomb = _gzip_of_blank_lines(1024**3)  # 1 GB of blank lines in about 1 MB
    assert len(bomb) < 2 * 1024**2
    body, content_type = _multipart("ftp_dpm_21_1700000000.sync.gz", bomb)
    answers: list[tuple[int, bytes, float]] = []

    def check() -> None:
        started = time.monotonic()
        status, data = _post(portal.port, "/api/v1/dry-run", token, body, content_type)
        answers.append((status, data, time.monotonic() - started))

    checks = [threading.Thread(target=check) for _ in range(3)]
    for thread in checks:
        thread.start()
    # Meanwhile the admin (its pool) and /ibs: (the other pool) answer at once.
    while any(thread.is_alive() for thread in checks):
        assert portal.get("/admin/login/", timeout=5)[0] == 200
        status, took = idsync.get("/ibs:dpid=21&dpuuid=u77", timeout=5)
        assert (status, took < 1.0) == (200, True)
        time.sleep(0.2)
    for thread in checks:
        thread.join()
    assert [status for status, _, _ in answers] == [200, 200, 200]
    for _, data, took in answers:
        # Stopped by its lines, bytes or time: a report (the file may be processed), not a
        # rejection.
        assert b'"extent": "No record in the first ' in data
        assert took < 30
    # The ID-sync pool serves nothing else.
    assert idsync.get("/admin/login/")[0] == 404


@pytest.mark.django_db(transaction=True)
def test_a_check_stops_at_its_time_bound_and_says_so(pools: Any) -> None:
    world = World()
    token = api_token_rotate(partner=world.partner, by="test")
    portal, _ = pools(
        PORTAL_DRY_RUN_LINES="100000000",
        PORTAL_DRY_RUN_SECONDS="1",
        PORTAL_DRY_RUN_MAX_BYTES=str(10 * 1024**3),
    )
    records = gzip.compress(b"u1\td_sid=10,color=red\n" * 3_000_000, compresslevel=1)
    body, content_type = _multipart("ftp_dpm_21_1700000000.sync.gz", records)
    started = time.monotonic()
    status, data = _post(portal.port, "/api/v1/dry-run", token, body, content_type)
    assert status == 200, data
    assert time.monotonic() - started < 20
    report = json.loads(data)
    assert (report["complete"], report["stopped"]) == (False, "time")
    assert 0 < report["lines"] < 3_000_000
    assert "then the check stopped: the check reads for at most 1 seconds" in report["extent"]


def _answer(server: Gunicorn, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


@pytest.mark.django_db(transaction=True)
def test_healthz_says_what_is_down_and_ibs_answers_503_code_0(pools: Any) -> None:
    """Before: with the database down /ibs: answered 500 (the data sources were read outside
    the guard) and /healthz said "ok" whatever the state."""
    portal, idsync = pools()
    for server in (portal, idsync):
        assert _answer(server, "/healthz") == (200, {"database": "ok", "redis": "ok"})
    portal.stop()
    idsync.stop()
    closed = f"postgres://postgres@127.0.0.1:{_free_port()}/nothing"
    portal, idsync = pools(DATABASE_URL=closed, REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    for server in (portal, idsync):
        status, body = _answer(server, "/healthz")
        assert status == 503
        assert body["database"].startswith("unreachable")
        assert body["redis"].startswith("unreachable")
    status, body = _answer(idsync, "/ibs:dpid=21&dpuuid=u1")
    assert (status, body) == (503, {"errors": [{"code": 0, "msg": "try again"}]})
    status, body = _answer(idsync, "/optout?d_cid=21%01u1")
    assert status == 503


def _terminate_pool_connections() -> int:
    """A database blip: PostgreSQL ends every other session of the test database (the
    pools' persistent connections), as a restart or a failover does."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (count,) = cursor.fetchone()
    return int(count)


def _request(server: Gunicorn, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


@pytest.mark.django_db(transaction=True)
def test_the_first_request_after_a_database_blip_is_answered(pools: Any) -> None:
    """Before: the pools kept their connections (CONN_MAX_AGE) without checking them, so the
    first request after PostgreSQL dropped them answered 500 (portal) or 503 "try again"
    (/ibs: and /optout, whose connection is used outside Django's request cycle). One worker
    and one thread per pool: the next request meets the very connection that was dropped.
    Each round, a different first request (and path in the endpoint) after the blip."""
    world = World()
    token = api_token_rotate(partner=world.partner, by="test")
    portal, idsync = pools(WEB_WORKERS="1", WEB_THREADS="1")
    cookie = {"Cookie": f"dd_uuid={world.u1.uuid}"}
    firsts = [
        # (pool, path, headers): data source 21 known to the worker (the prepared write)
        (idsync, "/ibs:dpid=21&dpuuid=after-0", {}),
        (idsync, "/ibs:dpid=22&dpuuid=after-1", {}),  # 22 read now (Django's cursor)
        (idsync, "/optout?d_cid=21%01u1", cookie),
        (idsync, "/healthz", {}),
        (portal, "/healthz", {}),
        (portal, "/api/v1/files", {"Authorization": f"Bearer {token}"}),
    ]
    for n, (pool, path, headers) in enumerate(firsts):
        assert _request(portal, "/api/v1/files", {"Authorization": f"Bearer {token}"})[0] == 200
        assert _request(idsync, f"/ibs:dpid=21&dpuuid=before-{n}", {})[0] == 200
        assert _terminate_pool_connections() >= 2
        status, data = _request(pool, path, headers)
        assert status in (200, 302), (path, status, data[:300])
        # ... and the other pool's first request too.
        other = idsync if pool is portal else portal
        other_path = "/ibs:dpid=21&dpuuid=other" if other is idsync else "/api/v1/files"
        status, data = _request(other, other_path, {"Authorization": f"Bearer {token}"})
        assert status == 200, (other_path, status, data[:300])
