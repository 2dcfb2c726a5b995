"""Every batch ends: through Redis outages, lost jobs, jobs that fail for good and workers that
die, a batch is processed, failed with a reason and a receipt, or a duplicate; nothing stays
queued or processing without a job. Real RQ workers, a real Redis the tests stop and start."""

from __future__ import annotations

import gzip
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rq import SimpleWorker
from rq.job import JobStatus

from partners.inbound.errors import PROCESSING_FAILED
from partners.inbound.queueing import inbound_batch_enqueue
from partners.inbound.registration import inbound_files_register
from partners.inbound.sweep import inbound_batches_sweep
from partners.models import InboundBatch, InboundFile, Receipt, ReceiptDelivery
from tests.conftest import PrivateRedis
from tests.factories import DataSourceFactory, TraitFactory
from tests.partners.inbound.conftest import World
from tests.partners.inbound.test_jobs import start_worker, worker_environment
from tests.partners.portal.test_pages import _login

LATER = timedelta(minutes=5)  # past the sweep's grace and a dead worker's heartbeat


def _work(queue_name: str = "inbound") -> None:
    queue = django_rq.get_queue(queue_name)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


@pytest.mark.django_db(transaction=True)
def test_an_upload_while_redis_is_down_is_received_and_queued_once_redis_is_back(
    private_redis: PrivateRedis, settings: Any, tmp_path: Path
) -> None:
    world = World()
    settings.MEDIA_ROOT = tmp_path / "media"
    client = _login(world.partner, "acme")
    private_redis.stop()
    response = client.post(
        "/portal/upload/",
        {
            "file": SimpleUploadedFile(
                "ftp_dpm_21_1700000000.sync.gz", gzip.compress(b"u1\td_sid=10\n")
            )
        },
    )
    assert response.status_code == 302  # received; not a 500
    batch = InboundBatch.objects.get()
    assert batch.status == InboundBatch.Status.QUEUED

    private_redis.start()  # empty: it kept nothing
    result = inbound_batches_sweep(now=timezone.now() + LATER)
    assert result.requeued == [batch.pk]
    _work()
    batch.refresh_from_db()
    assert batch.status == InboundBatch.Status.PROCESSED
    assert world.held(world.u1) == {10}
    # Once done, the sweep leaves it alone.
    assert inbound_batches_sweep(now=timezone.now() + LATER).requeued == []


@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_job_fails_for_good_ends_failed_with_a_receipt(
    private_redis: PrivateRedis, settings: Any, tmp_path: Path
) -> None:
    settings.INBOUND_RETRY_MAX = 1
    settings.INBOUND_RETRY_INTERVALS = [0]  # retried at once, no scheduler needed
    world = World()
    path = tmp_path / "ftp_dpm_21_1700000000.sync"
    path.write_text("u1\td_sid=10\n")
    batch = inbound_files_register(paths=[path]).batches[0]
    # An error nobody foresaw, on every attempt: the channel the file was in is gone.
    InboundFile.objects.filter(batch=batch).update(storage="channel:999999")
    inbound_batch_enqueue(batch=batch)
    _work()  # the attempt, then its one retry

    batch.refresh_from_db()
    assert (batch.status, batch.error) == (InboundBatch.Status.FAILED, PROCESSING_FAILED)
    assert InboundFile.objects.get().status == InboundFile.Status.FAILED
    receipt = Receipt.objects.get(batch=batch)
    assert receipt.records_received == 0
    [delivery] = ReceiptDelivery.objects.filter(receipt=receipt)
    _work("notify")
    delivery.refresh_from_db()
    assert delivery.status == ReceiptDelivery.Status.SENT
    assert world.held(world.u1) == set()
    # The partner reads why, on the receipt.
    page = _login(world.partner, "acme").get(f"/portal/receipts/{receipt.pk}/").content.decode()
    assert "Not processed:" in page
    assert "the processing failed on our side" in page


@pytest.mark.django_db(transaction=True)
def test_a_job_that_failed_without_ending_its_batch_is_ended_by_the_sweep(
    private_redis: PrivateRedis, settings: Any, tmp_path: Path
) -> None:
    """The failure callback could not run (its worker died with it, Redis was down): the
    sweep sees the job failed in RQ and ends the batch the same way."""
    World()
    path = tmp_path / "ftp_dpm_21_1700000000.sync"
    path.write_text("u1\td_sid=10\n")
    batch = inbound_files_register(paths=[path]).batches[0]
    queue = django_rq.get_queue("inbound")
    job = queue.enqueue("builtins.len", job_id=f"inbound-batch-{batch.pk}")  # not ours
    job.set_status(JobStatus.FAILED)
    InboundBatch.objects.filter(pk=batch.pk).update(
        status=InboundBatch.Status.PROCESSING, started_at=timezone.now()
    )
    result = inbound_batches_sweep(now=timezone.now() + LATER)
    assert result.failed == [batch.pk]
    batch.refresh_from_db()
    assert batch.status == InboundBatch.Status.FAILED
    assert Receipt.objects.filter(batch=batch).exists()
    assert inbound_batches_sweep(now=timezone.now() + LATER).failed == []  # once


@pytest.mark.django_db(transaction=True)
def test_a_batch_left_by_a_killed_worker_is_retried_at_the_next_sweep(
    private_redis: PrivateRedis, settings: Any, tmp_path: Path
) -> None:
    """RQ itself would look for the dead worker's job at a live worker's maintenance, every
    ten minutes; the sweep looks every minute, once the job's heartbeat (90 s) has lapsed."""
    settings.INBOUND_RETRY_INTERVALS = [0]
    source = DataSourceFactory.create(dpid=31, inbound_id_type="uuid")
    TraitFactory.create(sid=40, data_source=source)
    path = tmp_path / "ftp_dpm_31_1700000000.sync"
    with path.open("w") as out:
        for i in range(150_000):
            out.write(f"{10**37 + i}\td_sid=40\n")
    batch = inbound_files_register(paths=[path]).batches[0]
    inbound_batch_enqueue(batch=batch)
    # A killed horse's database session may hold the batch lock a moment longer: the retry
    # then waits its turn (RQ's Retry, at once here, where a burst worker has no scheduler).
    env = {
        **worker_environment(),
        "REDIS_URL": private_redis.url,
        "INBOUND_TURN_RETRY_INTERVALS": "0",
    }
    worker = start_worker(env=env)
    deadline = time.monotonic() + 120
    while InboundBatch.objects.get(pk=batch.pk).status != InboundBatch.Status.PROCESSING:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    assert inbound_batches_sweep(now=timezone.now()).requeued == []  # its job is "started"
    inbound_batches_sweep(now=timezone.now() + LATER)  # the heartbeat has lapsed: retried
    assert django_rq.get_queue("inbound").job_ids == [f"inbound-batch-{batch.pk}"]
    assert start_worker(env=env).wait(timeout=300) == 0
    assert Receipt.objects.get(batch=batch).stored_records == 150_000
