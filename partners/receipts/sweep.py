"""The receipt sweep: no receipt e-mail stays *pending* for ever.

A delivery is pending until its job sends it (sent) or fails (failed, retried by RQ). It stays
pending, unseen, when its job never reached Redis (Redis down as the batch committed), was
lost (Redis restarted empty), or ended without a word (its worker killed at every try until
RQ gave up). The sweep (a schedule, every ``NOTIFY_SWEEP_SECONDS``) looks from the database's
side once RQ's own retries would all be over: a delivery pending that long with no live job
is queued again, at most ``NOTIFY_SWEEP_MAX_REQUEUES`` times and while younger than
``NOTIFY_SWEEP_MAX_AGE_SECONDS``, then failed with the reason, on the receipt's page, where
staff can re-send it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import django_rq
from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import ngettext
from rq.job import Job
from rq.registry import StartedJobRegistry

from partners.models import ReceiptDelivery
from partners.receipts.queueing import receipt_delivery_enqueue, receipt_delivery_job_id
from partners.rq_jobs import LIVE_JOB_STATUSES

logger = logging.getLogger(__name__)


_WHAT_NOW = (
    " Nothing more will be tried by itself: check that the e-mail workers (the notify queue)"
    " are running, then use Re-send on this receipt."
)
TOO_MANY_TRIES = (
    "Not sent: it was still waiting after {tries} tries of {minutes} minutes each (its job was"
    " lost, or the worker sending it stopped, every time)." + _WHAT_NOW
)
TOO_OLD = (
    "Not sent: it was still waiting {hours} hours after the receipt was made, too late to send"
    " by itself (its job was lost, or the worker sending it stopped)." + _WHAT_NOW
)


def receipt_retry_window() -> timedelta:
    """How long RQ may still be busy with a delivery's job: the wait before each of its
    ``NOTIFY_RETRY_MAX`` retries (RQ repeats the last interval when there are fewer), plus
    ``NOTIFY_SWEEP_MARGIN_SECONDS`` for the sends themselves."""
    intervals = settings.NOTIFY_RETRY_INTERVALS or [0]
    waits = sum(intervals[min(n, len(intervals) - 1)] for n in range(settings.NOTIFY_RETRY_MAX))
    return timedelta(seconds=waits + settings.NOTIFY_SWEEP_MARGIN_SECONDS)


@dataclass
class ReceiptSweepResult:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.requeued)}"
            f" {ngettext('pending receipt e-mail', 'pending receipt e-mails', len(self.requeued))}"
            " queued again,"
            f" {len(self.failed)} given up (failed)"
        )


def receipt_deliveries_sweep(*, now: datetime | None = None) -> ReceiptSweepResult:
    """Queue again, or fail, the deliveries pending past their retry window with no live job.
    Safe to run anywhere, any number of times at once: each step is claimed by a conditional
    UPDATE, so one sweep acts on a delivery, and a live job is never doubled."""
    now = now or timezone.now()
    queue = django_rq.get_queue("notify")
    # A dead worker leaves its job "started" until its heartbeat lapses; without a live
    # notify worker nobody would ever notice, and the job would look alive for good. RQ's
    # own cleanup (at Redis's clock: ``now`` may be a test's) retries it or fails it.
    StartedJobRegistry(queue=queue).cleanup()
    window = receipt_retry_window()
    stale = list(
        ReceiptDelivery.objects.filter(status=ReceiptDelivery.Status.PENDING)
        .alias(waiting_since=Coalesce("requeued_at", "created_at"))
        .filter(waiting_since__lt=now - window)
        .order_by("pk")
    )
    jobs = Job.fetch_many(
        [receipt_delivery_job_id(d.pk) for d in stale], connection=queue.connection
    )
    result = ReceiptSweepResult()
    for delivery, job in zip(stale, jobs, strict=True):
        status = job.get_status(refresh=False) if job is not None else None
        if status in LIVE_JOB_STATUSES:
            continue  # RQ is still on it: never a second job
        claimed = ReceiptDelivery.objects.filter(
            pk=delivery.pk, status=ReceiptDelivery.Status.PENDING, requeued=delivery.requeued
        )
        reason = _give_up_reason(delivery, now=now, window=window)
        if reason:
            if claimed.update(status=ReceiptDelivery.Status.FAILED, error=reason):
                logger.warning("receipt delivery %s given up: %s", delivery.pk, status)
                result.failed.append(delivery.pk)
            continue
        if not claimed.update(requeued=F("requeued") + 1, requeued_at=now):
            continue  # sent meanwhile, or another sweep took it
        if job is not None:  # failed, finished, stopped or canceled: a new job of that ID
            job.delete()
        logger.warning("receipt delivery %s: no live job (%s), queued again", delivery.pk, status)
        receipt_delivery_enqueue(
            delivery.pk,
            description=f"Send receipt e-mail #{delivery.pk} (queued again by the sweep)",
        )
        result.requeued.append(delivery.pk)
    return result


def _give_up_reason(delivery: ReceiptDelivery, *, now: datetime, window: timedelta) -> str:
    """Why the sweep stops trying (empty: it tries again): queued again too many times, or
    so old that a receipt arriving now would say more about us than about the batch (say, a
    delivery left pending while the sweep itself did not run)."""
    if delivery.requeued >= settings.NOTIFY_SWEEP_MAX_REQUEUES:
        minutes = round(window.total_seconds() / 60)
        return TOO_MANY_TRIES.format(tries=delivery.requeued + 1, minutes=minutes)
    age = now - delivery.created_at
    if age > timedelta(seconds=settings.NOTIFY_SWEEP_MAX_AGE_SECONDS):
        return TOO_OLD.format(hours=int(age.total_seconds() // 3600))
    return ""
