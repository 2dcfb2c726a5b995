from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def queue_wipe(queue: Any) -> Any:
    """Empty ``queue`` and drop every job it left started, failed or scheduled: job IDs are
    database IDs, which each new test database gives out again, so no job of an earlier test
    (or run) may pass for a live one. Returns the queue."""
    from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    queue.empty()
    for registry in (
        StartedJobRegistry(queue=queue),
        FailedJobRegistry(queue=queue),
        ScheduledJobRegistry(queue=queue),
    ):
        for job_id in registry.get_job_ids():
            if (job := queue.fetch_job(job_id)) is not None:
                try:
                    job.delete()
                except ValueError:  # RQ lists an execution whose record expired already
                    queue.connection.delete(job.key, job.execution_registry.key)
        queue.connection.delete(registry.key)
    return queue


def port_wait(process: Any, port: int, what: str, seconds: float = 30) -> None:
    """Wait until ``process`` (a Popen with its stderr piped) listens on loopback ``port``;
    fail with its stderr if it ends first, or with ``what`` did not start."""
    import socket
    import time

    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.1)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright (Debian's chromium: `.ci/run` installs it)."""
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own database calls
    # are still synchronous, which Django would otherwise refuse.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A browser page; the test fails if the Content-Security-Policy refused anything on
    it (every page sends one: an inline script without its nonce would be blocked)."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert refused == [], "the Content-Security-Policy refused something"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API over HTTP: moto in server mode, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


def _boto3_session() -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of the test server (the partner's side, or the test's eyes)."""
    return _boto3_session().client("s3", endpoint_url=endpoint)


def s3_resource(endpoint: str) -> Any:
    return _boto3_session().resource("s3", endpoint_url=endpoint)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the S3 server."""
    import uuid

    name = f"s2s-test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_default_storage(settings: Any, s3_endpoint: str, s3_bucket: str) -> str:
    """The default storage (where uploads are kept) is S3, as in production (FILE_STORAGE=s3
    builds the same OPTIONS from the environment). Returns the bucket's name."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                **S3_CREDENTIALS,
                "bucket_name": s3_bucket,
                "endpoint_url": s3_endpoint,
                "file_overwrite": False,
            },
        },
    }
    return s3_bucket


class PrivateRedis:
    """A Redis server of the test's own, on a free loopback port, that the test may stop and
    start again (the shared one must never go down under the other tests). It keeps nothing
    on disk: stopped, it loses everything, like a Redis restarted without persistence."""

    def __init__(self, folder: Path) -> None:
        import socket
        import sys

        self.folder = folder
        self.binary = shutil.which("redis-server") or str(
            Path(sys.executable).parent / "redis-server"
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Any = None

    def start(self) -> None:
        import subprocess
        import time

        import redis

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the private Redis did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(settings: Any, tmp_path: Path) -> Iterator[PrivateRedis]:
    """Every RQ queue on a Redis of the test's own (see :class:`PrivateRedis`)."""
    server = PrivateRedis(tmp_path)
    server.start()
    settings.REDIS_URL = server.url
    settings.RQ_QUEUES = {
        name: {**config, "URL": server.url} for name, config in settings.RQ_QUEUES.items()
    }
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _rate_limits_cleared() -> Iterator[None]:
    """Each test starts with no rate-limit counts (they live in the shared Redis, under the
    cache's key prefix; the login attempts of django-axes are rows, rolled back per test)."""
    yield
    from django.core.cache import cache

    client = cache._cache.get_client()  # type: ignore[attr-defined]
    for key in client.scan_iter(match=f"{cache.key_prefix}:*"):
        client.delete(key)
