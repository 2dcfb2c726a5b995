"""A Redis outage while a worker processes a batch: the worker rides it out and the batch
ends processed. (A real Redis of the test's own, stopped and started; a real forking
worker; the portal's worker class.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from partners.inbound.queueing import inbound_batch_enqueue
from partners.inbound.registration import inbound_files_register
from partners.models import InboundBatch, Receipt
from portal.rq_worker import OutageTolerantWorker
from tests.conftest import PrivateRedis
from tests.factories import DataSourceFactory, TraitFactory
from tests.partners.inbound.test_jobs import start_worker, worker_environment


class QuickHeartbeatWorker(OutageTolerantWorker):
    """The portal's worker, with a heartbeat every second (30 s in production), so that a
    few seconds of outage in a test meet one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["job_monitoring_interval"] = 1
        super().__init__(*args, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_a_worker_rides_out_a_redis_outage_mid_batch_and_the_batch_ends_processed(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    source = DataSourceFactory.create(dpid=31, inbound_id_type="uuid")
    TraitFactory.create(sid=40, data_source=source)
    lines = 400_000
    path = tmp_path / "ftp_dpm_31_1700000000.sync"
    with path.open("w") as out:
        for i in range(lines):
            out.write(f"{10**37 + i}\td_sid=40\n")
    batch = inbound_files_register(paths=[path]).batches[0]
    inbound_batch_enqueue(batch=batch)
    worker = start_worker(
        env={**worker_environment(), "REDIS_URL": private_redis.url},
        options=("--worker-class", f"{__name__}.QuickHeartbeatWorker"),
    )
    deadline = time.monotonic() + 120
    while InboundBatch.objects.get(pk=batch.pk).status != InboundBatch.Status.PROCESSING:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        assert time.monotonic() < deadline, "the worker never started the batch"
        time.sleep(0.05)

    private_redis.stop()
    time.sleep(4)  # four missed heartbeats
    assert worker.poll() is None, "the worker ended with Redis"
    assert InboundBatch.objects.get(pk=batch.pk).status == InboundBatch.Status.PROCESSING, (
        "the batch ended before Redis came back: make it longer"
    )
    private_redis.start()  # empty again: it kept nothing

    assert worker.wait(timeout=300) == 0, worker.stderr.read() if worker.stderr else ""
    assert InboundBatch.objects.get(pk=batch.pk).status == InboundBatch.Status.PROCESSED
    assert Receipt.objects.get(batch=batch).stored_records == lines
