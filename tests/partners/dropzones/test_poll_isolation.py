"""A drop zone that hangs holds no other partner's deliveries: each channel is polled by an
RQ job of its own, every network wait is bounded, and RQ stops a poll that hangs anyway.

Real processes: the ``inbound_poll`` command (as system cron runs it, or RQ's cron through
the same schedule), real ``rqworker`` processes, a real SFTP server (paused in the middle of
the listing) or a loopback TCP server that accepts the connection and never says a word."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.db import connection
from rq import Worker

from partners.dropzones.services import inbound_channel_poll, inbound_poll
from partners.inbound.errors import InboundRejected
from partners.inbound.processing import inbound_batch_process
from partners.models import InboundBatch, InboundChannel, InboundFile
from tests.conftest import queue_wipe
from tests.factories import PartnerFactory, SftpChannelFactory
from tests.partners.dropzones.conftest import ChrootSFTP, sftp_serving
from tests.partners.inbound.conftest import World
from tests.partners.inbound.test_jobs import BASE_DIR, worker_environment

NAME = "acme/date=2026-11-28/ftp_dpm_21_1700000000.sync"


@dataclass(frozen=True)
class Case:
    stall: str  # "silent": accepts, never answers; "listing": SFTP paused at the listing
    workers: int
    env: dict[str, str]
    bound: float  # seconds after the command started by which the other file is registered
    reason: str | None  # how the stalled channel's poll ends (None: it is still stalled)


CASES = {
    # One worker: the stalled channel's poll fails on its own network timeout, then the
    # worker takes the next channel.
    "silent server, network timeouts": Case(
        "silent",
        1,
        {"DROPZONE_CONNECT_TIMEOUT": "2", "DROPZONE_READ_TIMEOUT": "2"},
        8,
        "failed: the server did not finish connecting within 2 s (DROPZONE_CONNECT_TIMEOUT)",
    ),
    "listing stalls, network timeouts": Case(
        "listing",
        1,
        {"DROPZONE_CONNECT_TIMEOUT": "2", "DROPZONE_READ_TIMEOUT": "2"},
        8,
        "failed: the server did not answer for 2 s (DROPZONE_READ_TIMEOUT); tried again at"
        " the next poll",
    ),
    # Network timeouts far away: RQ's job timeout stops the poll that hangs.
    "listing stalls, job timeout": Case(
        "listing",
        1,
        {"DROPZONE_READ_TIMEOUT": "600", "INBOUND_POLL_JOB_TIMEOUT": "3"},
        9,
        "failed: stopped after 3 s (INBOUND_POLL_JOB_TIMEOUT); tried again at the next poll",
    ),
    # Two workers: the other channel is polled while the stalled one still hangs.
    "listing stalls, two workers": Case("listing", 2, {"DROPZONE_READ_TIMEOUT": "600"}, 6, None),
}


@contextmanager
def _silent_server() -> Iterator[int]:
    """A loopback port whose connections the kernel accepts (the backlog) and nobody ever
    answers: an SSH server that hangs before its banner."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@contextmanager
def _stalled_sftp(root: Path, released: threading.Event) -> Iterator[int]:
    """A real SFTP server that lets the poller in and then never answers its first look at
    the partner's folder (until ``released``)."""

    class ListingHeld(ChrootSFTP):
        async def lstat(self, path: bytes) -> Any:
            while not released.is_set():
                await asyncio.sleep(0.05)
            return super().lstat(path)

    with sftp_serving(root, ListingHeld) as server:
        yield server.port


def _process(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=env,
        start_new_session=True,  # its own process group: it and its work horse are killed
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _workers_wait(names: list[str], processes: list[subprocess.Popen[bytes]]) -> None:
    connection = django_rq.get_connection("inbound")
    deadline = time.monotonic() + 60
    while not all(Worker.find_by_key(f"rq:worker:{name}", connection) for name in names):
        for process in processes:
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_stalled_drop_zone_does_not_delay_another_channels_delivery(
    case: Case, tmp_path: Path
) -> None:
    """Before: one process polled the channels one after another, so a server that stalled
    held every channel after it (for paramiko's 15 s banner wait when it said nothing, for
    good when it stalled after the login)."""
    queue = queue_wipe(django_rq.get_queue("inbound"))
    world = World()
    stalled_partner = PartnerFactory.create(name="Aardvark Data", slug="aardvark")
    released = threading.Event()
    served = tmp_path / "served"
    (served / "in" / "aardvark").mkdir(parents=True)
    server = _silent_server() if case.stall == "silent" else _stalled_sftp(served, released)
    processes: list[subprocess.Popen[bytes]] = []
    with server as port:
        stalled = SftpChannelFactory.create(
            partner=stalled_partner,
            name="Aardvark SFTP",
            port=port,
            credentials_ref="S2S_CREDENTIALS_STALLED_SFTP",
        )
        # The stalled channel comes first whichever way channels are taken (before: by
        # partner name; now: by ID, one job each), so one worker meets it first.
        folder = tmp_path / "acme-zone"
        (folder / NAME).parent.mkdir(parents=True)
        (folder / NAME).write_bytes(b"u1\td_sid=10\n")
        other = InboundChannel.objects.create(
            partner=world.partner, name="Acme folder", kind="local", prefix=str(folder)
        )
        inbound_poll(channel=other)  # seen: the next poll registers it
        env = {
            **worker_environment(),
            "S2S_CREDENTIALS_STALLED_SFTP": "secret",
            "SFTP_KNOWN_HOST_FILE": str(tmp_path / "known_hosts"),
            "INBOUND_PARSE_PROCESSES": "0",
            **case.env,
        }
        try:
            names = [f"poll-test-{uuid.uuid4().hex[:8]}" for _ in range(case.workers)]
            processes += [_process(["rqworker", "inbound", "--name", name], env) for name in names]
            _workers_wait(names, processes)
            started = time.monotonic()
            processes.append(_process(["inbound_poll"], env))
            registered = None
            while registered is None:
                if InboundFile.objects.filter(storage=f"channel:{other.pk}").exists():
                    registered = time.monotonic() - started
                elif time.monotonic() - started > max(case.bound, 30):
                    break
                time.sleep(0.05)
            stalled.refresh_from_db()
            print(
                f"\n{case.stall}, {case.workers} worker(s), {case.env}: the other channel's file"
                f" registered after {registered if registered is None else round(registered, 2)}"
                f" s; the stalled channel: {stalled.last_poll_result!r}"
            )
            assert registered is not None, "the other channel's file was never registered"
            assert registered < case.bound
            if case.reason is None:
                assert stalled.last_polled_at is None  # it still hangs, alone
            else:
                deadline = time.monotonic() + 10
                while not stalled.last_poll_result and time.monotonic() < deadline:
                    time.sleep(0.1)
                    stalled.refresh_from_db()
                assert stalled.last_poll_result.startswith(case.reason)
        finally:
            released.set()
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            queue_wipe(queue)
            _orphans_end()


def _orphans_end() -> None:
    """End the database sessions the killed workers left (one may be in the middle of the
    registered file's batch): the test database is flushed next, and a session that has not
    yet seen its client go would deadlock with the flush."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_an_s3_endpoint_that_never_answers_fails_the_poll_in_bounded_time(
    db: Any, settings: Any
) -> None:
    """Before: botocore's own 60 s read timeout, each of its attempts; now
    DROPZONE_READ_TIMEOUT, and the poll says why it failed."""
    settings.DROPZONE_CONNECT_TIMEOUT = settings.DROPZONE_READ_TIMEOUT = 1
    settings.S2S_CREDENTIALS_SILENT_S3 = "testing:testing"
    world = World()
    with _silent_server() as port:
        channel = InboundChannel.objects.create(
            partner=world.partner,
            name="Acme bucket",
            kind=InboundChannel.Kind.S3,
            bucket="silent",
            prefix="inbound",
            region="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port}",
            credentials_ref="S2S_CREDENTIALS_SILENT_S3",
        )
        started = time.monotonic()
        result = inbound_channel_poll(channel_id=channel.pk)
        took = time.monotonic() - started
    channel.refresh_from_db()
    print(f"\nsilent S3 endpoint: the poll failed after {took:.1f} s: {channel.last_poll_result}")
    assert result is not None
    assert result.unreadable
    assert channel.last_poll_result.startswith("failed: Read timeout on endpoint URL")
    assert took < 15  # botocore's retries (5 attempts at most, by default) included


def test_a_drop_zone_that_stalls_in_the_middle_of_a_file_fails_its_batch_with_the_reason(
    world: World, settings: Any, tmp_path: Path
) -> None:
    """Before: the worker waited for the SFTP server's answer for good (until the batch
    job's own 4-hour timeout). Now the read gives up after DROPZONE_READ_TIMEOUT and the
    batch ends failed, its receipt saying why (as when the connection drops)."""
    settings.DROPZONE_READ_TIMEOUT = 1
    settings.S2S_CREDENTIALS_STALLED_SFTP = "secret"
    settings.SFTP_KNOWN_HOST_FILE = str(tmp_path / "known_hosts")
    stalled, released = threading.Event(), threading.Event()

    class ReadsHeld(ChrootSFTP):
        async def read(self, file_obj: Any, offset: int, size: int) -> Any:
            while stalled.is_set() and not released.is_set():
                await asyncio.sleep(0.05)
            return super().read(file_obj, offset, size)

    served = tmp_path / "served"
    (served / "in" / NAME).parent.mkdir(parents=True)
    (served / "in" / NAME).write_bytes(b"u1\td_sid=10\n" * 1000)
    with sftp_serving(served, ReadsHeld) as server:
        channel = SftpChannelFactory.create(
            partner=world.partner,
            port=server.port,
            credentials_ref="S2S_CREDENTIALS_STALLED_SFTP",
        )
        inbound_poll(channel=channel)
        assert inbound_poll(channel=channel).registered == [NAME]  # read whole (its SHA-256)
        batch = InboundBatch.objects.get()
        stalled.set()  # the server stops answering reads
        try:
            started = time.monotonic()
            with pytest.raises(InboundRejected):
                inbound_batch_process(batch_id=batch.pk)
            took = time.monotonic() - started
        finally:
            released.set()
    batch.refresh_from_db()
    print(f"\na read stalled: the batch failed after {took:.1f} s: {batch.error}")
    assert (batch.status, batch.error) == (
        InboundBatch.Status.FAILED,
        "ftp_dpm_21_1700000000.sync: the file could not be read (the server stopped answering)",
    )
    assert took < 10
