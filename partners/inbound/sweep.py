"""The inbound sweep: every batch ends, or is picked up again by itself.

RQ already retries a failed job and, at a live worker's maintenance (every 10 minutes),
a job whose worker died. What it cannot see is a batch whose job it never had or lost: an
upload committed while Redis was unreachable, a Redis restarted without its data, a failure
callback that could not run. The sweep (a schedule, every ``INBOUND_SWEEP_SECONDS``) looks
from the database's side: every batch *queued* or *processing* must have a live job, else it
is queued again, or failed with its receipt when RQ gave up on it. Each partner's
batches take turns (:mod:`partners.inbound.queueing`): only the batches whose turn it is
must have a job, so the sweep looks at those in each partner's line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import django_rq
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import ngettext
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from partners.inbound.errors import PROCESSING_FAILED
from partners.inbound.processing import inbound_batch_fail
from partners.inbound.queueing import (
    inbound_batch_job_id,
    inbound_turn_dispatch,
    inbound_turns,
    inbound_turns_after,
    inbound_waiting_batches_release,
)
from partners.models import InboundBatch
from partners.rq_jobs import LIVE_JOB_STATUSES

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.requeued)} {ngettext('batch', 'batches', len(self.requeued))} queued"
            f" again, {len(self.failed)} failed for good, {len(self.released)} split"
            f" {ngettext('batch', 'batches', len(self.released))} released"
        )


def _still_pending(batch: InboundBatch) -> bool:
    """Read again: the batch may have ended between the query and the look at its job."""
    return InboundBatch.objects.filter(
        pk=batch.pk, status__in=[InboundBatch.Status.QUEUED, InboundBatch.Status.PROCESSING]
    ).exists()


def inbound_batches_sweep(*, now: datetime | None = None) -> SweepResult:
    """Find what RQ lost or gave up on, and act (safe to run anywhere, any number of times:
    queuing a batch twice processes it once, and failing one that ended does nothing)."""
    now = now or timezone.now()
    queue = django_rq.get_queue("inbound")
    # A worker that died (killed, its host gone, Redis out under it) leaves its job
    # "started" until its heartbeat lapses (~90 s); a live worker would only look at its next
    # maintenance, ten minutes later. Looking now gets the retry going within minutes.
    StartedJobRegistry(queue=queue).cleanup(timestamp=now.timestamp())
    result = SweepResult()
    result.released = [b.pk for b in inbound_waiting_batches_release(now=now)]

    # A batch just committed may not have reached Redis yet (its job is sent on commit).
    # Only the batches whose turn it is in their partner's line have jobs; the others wait.
    grace = now - timedelta(seconds=settings.INBOUND_SWEEP_GRACE_SECONDS)
    partners = (
        InboundBatch.objects.filter(
            Q(status=InboundBatch.Status.QUEUED, created_at__lt=grace)
            | Q(status=InboundBatch.Status.PROCESSING, started_at__lt=grace)
        )
        .order_by("partner_id")
        .values_list("partner_id", flat=True)
        .distinct()
    )
    for partner_id in list(partners):
        _line_sweep(queue, partner_id, result)
    return result


def _line_sweep(queue: Queue, partner_id: int, result: SweepResult) -> None:
    """Each batch whose turn it is in the partner's line must have a live job: failed when
    RQ gave up on it (its failure callback did not end it), else queued again."""
    turns = inbound_turns(partner_id=partner_id, connection=queue.connection)
    jobs = Job.fetch_many([inbound_batch_job_id(b.pk) for b in turns], connection=queue.connection)
    lost = False
    ended: list[int] = []
    for batch, job in zip(turns, jobs, strict=True):
        status = job.get_status(refresh=False) if job is not None else None
        if status in LIVE_JOB_STATUSES or not _still_pending(batch):
            continue
        if status == JobStatus.FAILED:  # RQ gave up; its failure callback did not end it
            if inbound_batch_fail(batch_id=batch.pk, reason=PROCESSING_FAILED):
                result.failed.append(batch.pk)
                ended.append(batch.pk)
        else:
            logger.warning("inbound batch %s had no live job (%s): queued again", batch.pk, status)
        lost = True
    for batch_id in ended:  # other partners may wait for the same data source
        inbound_turns_after(batch_id=batch_id)
    if lost:  # queue them again, or the next ones after those that failed
        result.requeued += [b.pk for b in inbound_turn_dispatch(partner_id=partner_id)]
