"""Inbound batches on real RQ workers, including one killed (SIGKILL) in the middle of a batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import django_rq
import pytest
from django.conf import settings
from django.db import connection, transaction
from rq import SimpleWorker
from rq.registry import StartedJobRegistry

from partners.inbound.queueing import inbound_batch_enqueue
from partners.inbound.registration import inbound_files_register
from partners.models import InboundBatch, LineError, Receipt
from segments.models import Profile, ProfileTraits
from tests.conftest import queue_wipe
from tests.factories import DataSourceFactory, TraitFactory
from tests.partners.inbound.conftest import World, counters, expect

BASE_DIR = Path(__file__).resolve().parents[3]


@pytest.fixture
def inbound_queue() -> Any:
    """The inbound queue, empty, with no job left started or failed by an earlier test (or
    an earlier run: job IDs are batch IDs, which a new test database gives out again)."""
    return queue_wipe(django_rq.get_queue("inbound"))


def worker_environment() -> dict[str, str]:
    """What a worker process needs to reach the test database, the test Redis and the
    test's storage."""
    db = connection.settings_dict
    host = quote(db["HOST"] or "localhost", safe="")
    port = f":{db['PORT']}" if db["PORT"] else ""
    url = f"postgres://{db['USER'] or 'postgres'}@{host}{port}/{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "SECRET_KEY": "worker-test",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }


def start_worker(
    env: dict[str, str] | None = None, options: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """A real forking RQ worker (`manage.py rqworker`) in its own process group."""
    return subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "rqworker", "inbound", "--burst", *options],
        env=env or worker_environment(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.django_db(transaction=True)
def test_an_enqueued_batch_is_sent_on_commit_and_processed(
    world: World, tmp_path: Path, inbound_queue: Any
) -> None:
    path = tmp_path / "ftp_dpm_21_1700000000.sync"
    path.write_text("u1\td_sid=10\n")
    with transaction.atomic():
        batch = inbound_files_register(paths=[path]).batches[0]
        inbound_batch_enqueue(batch=batch)
        assert inbound_queue.count == 0  # not before the batch is committed
    assert inbound_queue.job_ids == [f"inbound-batch-{batch.pk}"]
    SimpleWorker([inbound_queue], connection=inbound_queue.connection).work(burst=True)
    batch.refresh_from_db()
    assert batch.status == InboundBatch.Status.PROCESSED
    assert world.held(world.u1) == {10}


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_leaves_the_old_state_and_the_retry_completes(
    tmp_path: Path, inbound_queue: Any, settings: Any
) -> None:
    settings.INBOUND_RETRY_INTERVALS = [0]  # retry at once rather than in 10 s
    source = DataSourceFactory.create(dpid=31, inbound_id_type="uuid")
    TraitFactory.create(sid=40, data_source=source)
    lines = 150_000
    path = tmp_path / "ftp_dpm_31_1700000000.sync"
    with path.open("w") as out:
        for i in range(lines):
            out.write(f"{10**37 + i}\td_sid=40,color=red\n")
    batch = inbound_files_register(paths=[path]).batches[0]
    inbound_batch_enqueue(batch=batch)

    worker = start_worker()
    deadline = time.monotonic() + 120
    while InboundBatch.objects.get(pk=batch.pk).status != InboundBatch.Status.PROCESSING:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        assert time.monotonic() < deadline, "the worker never started the batch"
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the batch: it takes several seconds
    assert worker.poll() is None, "the batch finished before it could be interrupted"
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its work horse
    worker.wait(timeout=30)

    # The old state: nothing of the batch is stored.
    assert not Receipt.objects.exists()
    assert not Profile.objects.exists()
    assert not ProfileTraits.objects.exists()
    assert not LineError.objects.exists()
    assert InboundBatch.objects.get(pk=batch.pk).status == InboundBatch.Status.PROCESSING

    # RQ's maintenance finds the abandoned job (here without waiting for its timeout) and,
    # with retries left, queues it again; a new worker completes it.
    StartedJobRegistry(queue=inbound_queue).cleanup(timestamp=time.time() + 10**6)
    assert inbound_queue.job_ids == [f"inbound-batch-{batch.pk}"]
    # The killed horse's database session may still be finishing its statement, holding the
    # data source's batch lock: the retry then waits its turn (RQ's Retry, every 5 s in
    # production; at once here, where a burst worker has no scheduler).
    retry = start_worker(env={**worker_environment(), "INBOUND_TURN_RETRY_INTERVALS": "0"})
    assert retry.wait(timeout=300) == 0

    receipt = Receipt.objects.get(batch=batch)
    assert counters(receipt) == expect(
        records_received=lines,
        records_processed=lines,
        stored_records=lines,
        total_devices=lines,
        total_signals=2 * lines,
        total_unused_signals=lines,
        total_realized_traits=lines,
    )
    assert ProfileTraits.objects.count() == lines
    assert Profile.objects.count() == lines


@pytest.mark.django_db(transaction=True)
def test_the_parse_processes_die_with_their_work_horse(tmp_path: Path, inbound_queue: Any) -> None:
    """The OOM killer (or anything) may kill the work horse alone: the processes parsing its
    batch must not stay behind, each holding memory and a share of the pool's queue."""
    import psutil

    source = DataSourceFactory.create(dpid=31, inbound_id_type="uuid")
    TraitFactory.create(sid=40, data_source=source)
    path = tmp_path / "ftp_dpm_31_1700000000.sync"
    with path.open("w") as out:
        for i in range(300_000):
            out.write(f"{10**37 + i}\td_sid=40,color=red\n")
    batch = inbound_files_register(paths=[path]).batches[0]
    inbound_batch_enqueue(batch=batch)
    worker = start_worker(env={**worker_environment(), "INBOUND_PARSE_PROCESSES": "2"})
    deadline = time.monotonic() + 120
    parsers: list[Any] = []
    while len(parsers) < 2:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        assert time.monotonic() < deadline, "the batch never started its parse processes"
        horses = psutil.Process(worker.pid).children()
        parsers = [
            p for h in horses for p in h.children() if "multiprocessing" in " ".join(p.cmdline())
        ]
        time.sleep(0.05)
    [horse] = psutil.Process(worker.pid).children()
    horse.kill()  # the horse alone, not its process group
    _, alive = psutil.wait_procs(parsers, timeout=10)
    assert alive == [], "parse processes outlived their work horse"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
