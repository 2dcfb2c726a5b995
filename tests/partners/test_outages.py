"""A database that goes away: what was waiting waits, and runs once it is back; a run whose
connection drops says so. The workers reach PostgreSQL through a TCP proxy of the test's own
(the test's own connection goes straight to the server, which stays up for the other tests):
stopping the proxy is an outage as the workers meet it, connections refused and cut."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_rq
import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from partners.inbound.processing import inbound_batch_process
from partners.inbound.queueing import inbound_batch_enqueue
from partners.inbound.registration import inbound_files_register
from partners.inbound.sweep import inbound_batches_sweep
from partners.models import InboundBatch, OutboundRun, ReceiptDelivery
from partners.outbound.queueing import outbound_runs_request
from tests.conftest import queue_wipe
from tests.factories import ReceiptRecipientFactory
from tests.partners.inbound.conftest import World
from tests.partners.inbound.test_jobs import BASE_DIR, worker_environment
from tests.partners.outbound.test_runs import _destination

pytestmark = pytest.mark.django_db(transaction=True)


class PostgresProxy:
    """Forwards a loopback port to the test database's server; ``down()`` refuses new
    connections and cuts the open ones, ``up()`` serves again on the same port."""

    def __init__(self) -> None:
        db = connection.settings_dict
        host, port = db["HOST"] or "/var/run/postgresql", int(db["PORT"] or 5432)
        self.target: Any = (host, port)
        self.family = socket.AF_INET
        if host.startswith("/"):  # the embedded server listens on a unix socket only
            self.target, self.family = f"{host}/.s.PGSQL.{port}", socket.AF_UNIX
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def url(self) -> str:
        db = connection.settings_dict
        return f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{self.port}/{db['NAME']}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            if self.listener is not None:
                # shutdown first: it wakes the thread blocked in accept(), which would
                # otherwise take one more connection
                with contextlib.suppress(OSError):
                    self.listener.shutdown(socket.SHUT_RDWR)
                self.listener.close()
                self.listener = None
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: down
            server = socket.socket(self.family)
            try:
                server.connect(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in selector.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def postgres_proxy() -> Iterator[PostgresProxy]:
    proxy = PostgresProxy()
    proxy.up()
    yield proxy
    proxy.down()


@pytest.fixture
def queues() -> list[Any]:
    return [queue_wipe(django_rq.get_queue(name)) for name in ("inbound", "notify", "outbound")]


def _worker(env: dict[str, str], *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(BASE_DIR / "manage.py"),
            "rqworker",
            "inbound",
            "notify",
            "outbound",
            *options,
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)


def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_batches_receipts_and_runs_wait_out_a_database_outage(
    world: World, tmp_path: Path, postgres_proxy: PostgresProxy, queues: list[Any], settings: Any
) -> None:
    """Work queued when the database goes away: RQ's retries for the work's own faults are
    short here (1 s, one retry), and the outage is longer; nothing is failed, everything
    runs once the database is back, and the sweep (run meanwhile from a host that reaches
    the database) fails nothing either."""
    # The jobs take their retries from where they are queued: here, and in the worker.
    settings.INBOUND_RETRY_MAX, settings.INBOUND_RETRY_INTERVALS = 1, [1]
    settings.NOTIFY_RETRY_MAX, settings.NOTIFY_RETRY_INTERVALS = 1, [1]
    ReceiptRecipientFactory.create(partner=world.partner, email="ops@acme.example")
    destination = _destination(world, tmp_path, mode="full")
    first = tmp_path / "ftp_dpm_21_1700000000.sync"
    first.write_text("u1\td_sid=10\n")
    inbound_batch_process(batch_id=inbound_files_register(paths=[first]).batches[0].pk)
    deliveries = list(ReceiptDelivery.objects.all())
    assert deliveries  # its e-mail is queued
    assert all(d.status == "pending" for d in deliveries)
    batches = []
    for dpid, stamp, line in ((21, 1700000100, "u2\td_sid=11"), (22, 1700000100, "u1\td_sid=90")):
        path = tmp_path / f"ftp_dpm_{dpid}_{stamp}.sync"
        path.write_text(line + "\n")
        batches.append(inbound_files_register(paths=[path]).batches[0])
        inbound_batch_enqueue(batch=batches[-1])
    outbound_runs_request(destination_ids=[destination.pk])

    postgres_proxy.down()
    env = {
        **worker_environment(),
        "DATABASE_URL": postgres_proxy.url(),
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "INBOUND_RETRY_MAX": "1",
        "INBOUND_RETRY_INTERVALS": "1",
        "NOTIFY_RETRY_MAX": "1",
        "NOTIFY_RETRY_INTERVALS": "1",
        "DATABASE_OUTAGE_RETRY_INTERVALS": "1,2",
    }
    worker = _worker(env, "--with-scheduler")
    try:
        time.sleep(10)  # an outage far longer than the retries RQ has for the work's faults
        inbound_batches_sweep(now=timezone.now() + timedelta(minutes=10))
        assert set(
            InboundBatch.objects.filter(pk__in=[b.pk for b in batches]).values_list(
                "status", flat=True
            )
        ) == {"queued"}, "a batch failed while the database was down"
        postgres_proxy.up()

        _until(
            lambda: all(InboundBatch.objects.get(pk=b.pk).status == "processed" for b in batches),
            90,
            "the batches did not run once the database was back",
        )
        _until(
            lambda: destination.runs.filter(status=OutboundRun.Status.SUCCEEDED).exists(),
            90,
            "the export did not run once the database was back",
        )
        _until(
            lambda: all(d.status == "sent" for d in ReceiptDelivery.objects.all()),
            90,
            "the receipt e-mails were not sent once the database was back",
        )
    finally:
        _stop(worker)
    assert not destination.runs.filter(status=OutboundRun.Status.FAILED).exists()
    for batch in batches:
        job = queues[0].fetch_job(f"inbound-batch-{batch.pk}")
        assert job is None or job.retries_left == 1  # the outage used none of its retries


def test_a_run_whose_database_connection_drops_is_marked_failed_with_that_reason(
    world: World, tmp_path: Path, queues: list[Any], postgres_proxy: PostgresProxy
) -> None:
    """The run's connection is cut mid-run (the network between the worker and the database
    drops while the run waits on a table): the run says failed, and why, over a new
    connection, rather than staying *running* until the next run calls it interrupted; the
    job runs the export again, which succeeds."""
    destination = _destination(world, tmp_path, mode="full")
    outbound_runs_request(destination_ids=[destination.pk])
    db = connection.settings_dict
    direct = {
        "host": db["HOST"] or None,
        "port": db["PORT"] or None,
        "user": db["USER"],
        "dbname": db["NAME"],
    }
    with psycopg.connect(**direct) as blocker:
        blocker.execute("LOCK TABLE segments_segmentmembership IN ACCESS EXCLUSIVE MODE")
        env = {
            **worker_environment(),
            "DATABASE_URL": postgres_proxy.url(),
            # PostgreSQL ends the dropped session within a second (it holds the run's
            # lock), and the job runs again after three.
            "DATABASE_CLIENT_CHECK_SECONDS": "1",
            "DATABASE_OUTAGE_RETRY_INTERVALS": "3",
        }
        worker = _worker(env, "--with-scheduler")
        try:
            with psycopg.connect(**direct, autocommit=True) as look:
                _until(
                    lambda: look.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                        " AND wait_event_type = 'Lock'",
                        [db["NAME"]],
                    ).fetchone()[0],  # type: ignore[index]
                    60,
                    "the run never reached the memberships",
                )
            postgres_proxy.down()  # the connection drops ...
            postgres_proxy.up()  # ... and the database can be reached again at once
            _until(
                lambda: destination.runs.exclude(status=OutboundRun.Status.RUNNING).exists(),
                60,
                "the run whose connection dropped stayed running",
            )
            blocker.rollback()
            _until(
                lambda: destination.runs.filter(status=OutboundRun.Status.SUCCEEDED).exists(),
                60,
                "the export did not run again",
            )
        finally:
            _stop(worker)
    runs = list(destination.runs.order_by("pk"))
    assert [run.status for run in runs] == ["failed", "succeeded"]
    assert runs[0].error.startswith("the database connection was lost: ")
    assert runs[0].finished_at is not None
