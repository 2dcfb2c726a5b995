"""No receipt e-mail waits for ever: the sweep queues again a delivery still pending after its
retry window with no live RQ job (a real worker then sends it), leaves alone one whose job is
queued or scheduled, and fails, with the reason, one whose job keeps getting lost or that is
too old to send. Real Redis, real (in-process) RQ workers."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import django_rq
import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.registry import FailedJobRegistry

from partners.models import Receipt, ReceiptDelivery, ScheduleRun
from partners.receipts.sweep import (
    ReceiptSweepResult,
    receipt_deliveries_sweep,
    receipt_delivery_job_id,
    receipt_retry_window,
)
from tests.conftest import queue_wipe
from tests.partners.inbound.conftest import Deliver, World

Sweep = Callable[..., ReceiptSweepResult]
LINES = {"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"}


@pytest.fixture
def notify(settings: Any) -> Iterator[Queue]:
    """The notify queue, empty, its registries too (other tests leave jobs behind)."""
    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    queue = django_rq.get_queue("notify")

    def wipe() -> None:
        queue_wipe(queue)
        # Delivery IDs start again with each test database: no job of an earlier run may
        # pass for a live one.
        pattern = f"{Job.redis_job_namespace_prefix}receipt-delivery-*"
        for key in queue.connection.scan_iter(pattern):
            queue.connection.delete(key)

    wipe()
    yield queue
    wipe()


@pytest.fixture
def sweep(django_capture_on_commit_callbacks: Any) -> Sweep:
    """The sweep as its schedule runs it: its jobs reach Redis as it commits (django-rq's
    on_db_commit mode; the test's own transaction never commits)."""

    def run(now: datetime | None = None) -> ReceiptSweepResult:
        with django_capture_on_commit_callbacks(execute=True):
            return receipt_deliveries_sweep(now=now)

    return run


def _past_the_window(later: timedelta = timedelta()) -> datetime:
    return timezone.now() + receipt_retry_window() + timedelta(seconds=1) + later


def _pending(receipt: Receipt) -> ReceiptDelivery:
    delivery = receipt.deliveries.get()
    assert delivery.status == ReceiptDelivery.Status.PENDING
    return delivery


def test_the_retry_window_is_every_retry_wait_plus_the_margin(settings: Any) -> None:
    settings.NOTIFY_RETRY_MAX, settings.NOTIFY_RETRY_INTERVALS = 5, [30, 120, 600, 1800, 3600]
    settings.NOTIFY_SWEEP_MARGIN_SECONDS = 900
    assert receipt_retry_window() == timedelta(seconds=6150 + 900)
    settings.NOTIFY_RETRY_MAX, settings.NOTIFY_RETRY_INTERVALS = 4, [60]  # RQ repeats the last
    assert receipt_retry_window() == timedelta(seconds=4 * 60 + 900)


def test_a_pending_delivery_without_a_job_is_queued_again_and_a_real_worker_sends_it(
    world: World, deliver: Deliver, notify: Queue, sweep: Sweep
) -> None:
    # The batch committed but its e-mail never reached Redis (here: on-commit callbacks do not
    # run in this test's transaction; in life, Redis down at that moment, or restarted empty).
    delivery = _pending(deliver(LINES))
    assert notify.fetch_job(receipt_delivery_job_id(delivery.pk)) is None

    assert sweep().requeued == []  # RQ's retries may not be over yet
    result = sweep(now=_past_the_window())
    assert (result.requeued, result.failed) == ([delivery.pk], [])
    assert notify.job_ids == [receipt_delivery_job_id(delivery.pk)]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.requeued) == (ReceiptDelivery.Status.PENDING, 1)

    mail.outbox.clear()
    SimpleWorker([notify], connection=notify.connection).work(burst=True)
    delivery.refresh_from_db()
    assert delivery.status == ReceiptDelivery.Status.SENT
    assert [message.to for message in mail.outbox] == [["solutions@platform.test"]]
    # Sent: the sweep leaves it alone from now on.
    assert sweep(now=_past_the_window(timedelta(days=1))).requeued == []


def test_a_delivery_whose_job_is_queued_or_scheduled_is_left_alone(
    world: World,
    deliver: Deliver,
    notify: Queue,
    sweep: Sweep,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):  # queued as the batch commits
        waiting = _pending(deliver(LINES))
    retrying = _pending(deliver({"ftp_dpm_21_1700000001.sync": "u2\td_sid=10\n"}))
    notify.enqueue_in(  # waiting for a retry: RQ's scheduled registry
        timedelta(hours=1),
        "partners.receipts.jobs.receipt_delivery_send_job",
        retrying.pk,
        job_id=receipt_delivery_job_id(retrying.pk),
    )
    jobs = {d.pk: notify.fetch_job(receipt_delivery_job_id(d.pk)) for d in (waiting, retrying)}
    assert {pk: job.get_status() for pk, job in jobs.items() if job} == {
        waiting.pk: JobStatus.QUEUED,
        retrying.pk: JobStatus.SCHEDULED,
    }

    result = sweep(now=_past_the_window(timedelta(days=30)))
    assert (result.requeued, result.failed) == ([], [])
    assert notify.job_ids == [receipt_delivery_job_id(waiting.pk)]  # once, not twice
    assert notify.scheduled_job_registry.get_job_ids() == [receipt_delivery_job_id(retrying.pk)]
    for delivery in (waiting, retrying):
        delivery.refresh_from_db()
        assert (delivery.status, delivery.requeued) == (ReceiptDelivery.Status.PENDING, 0)

    mail.outbox.clear()
    SimpleWorker([notify], connection=notify.connection).work(burst=True)
    assert len(mail.outbox) == 1  # the queued one, sent once


def test_a_delivery_whose_job_keeps_getting_lost_is_failed_with_the_reason(
    world: World, deliver: Deliver, notify: Queue, sweep: Sweep, settings: Any
) -> None:
    settings.NOTIFY_SWEEP_MAX_REQUEUES = 2
    delivery = _pending(deliver(LINES))
    now = timezone.now()
    for requeued in (1, 2):
        now += receipt_retry_window() + timedelta(seconds=1)
        assert sweep(now=now).requeued == [delivery.pk]
        delivery.refresh_from_db()
        assert delivery.requeued == requeued
        assert notify.job_ids == [receipt_delivery_job_id(delivery.pk)]
        notify.empty()  # lost again (a Redis restarted without its data)

    # Not yet: the last re-send gets its whole retry window.
    assert sweep(now=now + timedelta(minutes=1)).failed == []
    now += receipt_retry_window() + timedelta(seconds=1)
    result = sweep(now=now)
    assert (result.requeued, result.failed) == ([], [delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == ReceiptDelivery.Status.FAILED
    minutes = round(receipt_retry_window().total_seconds() / 60)
    assert delivery.error.startswith(f"Not sent: it was still waiting after 3 tries of {minutes}")
    assert "use Re-send on this receipt" in delivery.error
    assert notify.job_ids == []  # nothing more is tried by itself
    assert sweep(now=now + timedelta(days=1)).failed == []  # once


def test_a_delivery_pending_for_more_than_a_day_is_failed_not_sent_that_late(
    world: World, deliver: Deliver, notify: Queue, sweep: Sweep
) -> None:
    delivery = _pending(deliver(LINES))
    made = timezone.now() - timedelta(hours=30)  # say, while the sweep itself was not running
    ReceiptDelivery.objects.filter(pk=delivery.pk).update(created_at=made)
    result = sweep()
    assert (result.requeued, result.failed) == ([], [delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == ReceiptDelivery.Status.FAILED
    assert delivery.error.startswith(
        "Not sent: it was still waiting 30 hours after the receipt was made, too late to send"
    )
    assert notify.job_ids == []
    mail.outbox.clear()
    SimpleWorker([notify], connection=notify.connection).work(burst=True)
    assert mail.outbox == []


def test_a_failed_job_of_a_pending_delivery_is_replaced(
    world: World, deliver: Deliver, notify: Queue, sweep: Sweep
) -> None:
    """RQ ended the job (a worker killed at every try until no retry was left) but the
    delivery never got sent: one new job of that ID, not the dead one."""
    delivery = _pending(deliver(LINES))
    plain = Queue(notify.name, connection=notify.connection)  # at once, not on commit
    job = plain.enqueue(
        "partners.receipts.jobs.receipt_delivery_send_job",
        delivery.pk,
        job_id=receipt_delivery_job_id(delivery.pk),
    )
    notify.remove(job)
    with notify.connection.pipeline() as pipeline:  # what RQ's abandoned-job cleanup does
        record_job_failure(job, "AbandonedJobError: the worker died", pipeline)
        pipeline.execute()
    assert Job.fetch(job.id, connection=notify.connection).get_status() == JobStatus.FAILED
    assert job.id in FailedJobRegistry(queue=notify)

    assert sweep(now=_past_the_window()).requeued == [delivery.pk]
    assert notify.job_ids == [job.id]
    assert job.id not in FailedJobRegistry(queue=notify)
    mail.outbox.clear()
    SimpleWorker([notify], connection=notify.connection).work(burst=True)
    delivery.refresh_from_db()
    assert delivery.status == ReceiptDelivery.Status.SENT
    assert len(mail.outbox) == 1


def test_the_sweep_is_a_schedule_and_a_command(db: Any, notify: Queue) -> None:
    out = io.StringIO()
    call_command("receipts_sweep", stdout=out)
    assert out.getvalue().strip() == ("0 pending receipt e-mails queued again, 0 given up (failed)")
    run = ScheduleRun.objects.get(name="receipts_sweep")
    assert run.ok
