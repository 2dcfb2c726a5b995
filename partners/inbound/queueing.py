"""Queueing batches for the RQ workers: a complete batch once its registration commits, a
split batch once its parts are all here (or it waited long enough), and a big split batch as
one job per part ahead of the batch job. The jobs are enqueued by function, so the flow
reads from here to :mod:`partners.inbound.jobs`.

**Each partner's batches take turns.** Only the batches whose turn it is have their jobs
in RQ: at most ``INBOUND_BATCHES_PER_PARTNER`` of a partner at once, never two of one data
source (they apply one at a time, in the order they came); the others wait, *queued*, in
the database, and each batch that ends queues the next of its partner
(:func:`inbound_turn_dispatch`). So a partner's backlog of twenty files is one job in the
queue, not twenty, whatever data sources they are for: a worker never takes a batch only to
wait on the lock of the batch ahead of it, and another partner's file is taken by the next
free worker, whatever this one has sent. A data source shared by several partners takes
their batches in turn (:func:`inbound_turns_after`), so a guest partner's file never waits
for the owner's whole backlog.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

import django_rq
from django.conf import settings
from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from redis import Redis
from rq import Callback, Retry
from rq.exceptions import InvalidJobOperation
from rq.job import Dependency, Job, JobStatus
from rq.queue import Queue

from partners.inbound import jobs
from partners.inbound.errors import PROCESSING_FAILED
from partners.inbound.processing import inbound_batch_fail
from partners.inbound.registration import Registration
from partners.inbound.split_parts import split_batches_ready_mark
from partners.models import InboundBatch
from partners.rq_jobs import LIVE_JOB_STATUSES

logger = logging.getLogger(__name__)


def registration_enqueue(registration: Registration) -> None:
    """Once the current transaction commits: queue the registration's complete batches, and
    look at its waiting ones again when the wait for more parts may be over."""
    for batch in registration.batches:
        _batch_enqueue_on_commit(batch)
    for batch in registration.waiting:
        # enqueue_in ignores django-rq's commit mode: hold it until the commit ourselves.
        _release_check_on_commit(batch.pk)


def _release_check_on_commit(batch_id: int) -> None:
    def release_check() -> None:  # a function, not a partial: Django logs a failure by its name
        _release_check_schedule(batch_id)

    transaction.on_commit(release_check, robust=True)


def _batch_enqueue_on_commit(batch: InboundBatch) -> None:
    """Queue ``batch`` once the current transaction commits. Robust: with Redis unreachable
    the delivery is still received (committed, queued) and the sweep
    (:func:`partners.inbound.sweep.inbound_batches_sweep`) queues it once Redis is back."""
    inbound_batch_enqueue(batch=batch)


def inbound_release_check_job_id(batch_id: int) -> str:
    return f"inbound-release-check-{batch_id}"


def _release_check_schedule(batch_id: int) -> None:
    """One check per waiting batch, moved later by each part (the same job ID): 9,999 parts
    make one scheduled check, not 9,999 checks each reading every waiting batch. The sweep
    looks too, so a check lost with Redis only delays the batch."""
    django_rq.get_queue("inbound").enqueue_in(
        timedelta(seconds=settings.INBOUND_PARTS_SETTLE_SECONDS + 1),
        jobs.inbound_waiting_batches_release_job,
        job_id=inbound_release_check_job_id(batch_id),
        on_success=Callback(inbound_released_batches_dispatch),
        description="Queue the split batches whose parts are all here",
    )


def inbound_waiting_batches_release(*, now: datetime | None = None) -> list[InboundBatch]:
    """Queue the waiting batches of split parts that are ready
    (:func:`partners.inbound.split_parts.split_batches_ready_mark`), and return them. Safe to
    run from several places at once."""
    released = split_batches_ready_mark(now=now)
    for batch in released:
        _batch_enqueue_on_commit(batch)
    return released


def inbound_released_batches_dispatch(job: Job, connection: Redis, result: Any) -> None:
    """RQ's success callback of the release check: queue the batches it marked ready (the
    job returns their partners)."""
    for partner_id in result or []:
        inbound_turn_dispatch(partner_id=partner_id)


def inbound_batch_job_id(batch_id: int) -> str:
    return f"inbound-batch-{batch_id}"


def inbound_part_job_id(batch_id: int, file_id: int) -> str:
    return f"inbound-batch-{batch_id}-part-{file_id}"


def parts_in_parallel(batch: InboundBatch) -> bool:
    """Whether the batch's parts are parsed by jobs of their own: a trait batch of several
    parts, big enough (``INBOUND_PART_JOBS_MIN_BYTES``) for the extra jobs to pay."""
    if batch.kind == InboundBatch.Kind.ID_SYNC:
        return False
    sizes = list(batch.files.values_list("size", flat=True))
    return len(sizes) > 1 and sum(sizes) >= settings.INBOUND_PART_JOBS_MIN_BYTES


def inbound_batch_enqueue(*, batch: InboundBatch) -> None:
    """Put the batch in its partner's line once the current transaction commits: its jobs go
    to RQ then if it is its turn, else when a batch ahead of it ends. Robust: with Redis
    unreachable the batch stays queued in the database and the sweep
    (:func:`partners.inbound.sweep.inbound_batches_sweep`) queues it once Redis is back."""
    partner_id = batch.partner_id

    def dispatch() -> None:  # a function, not a partial: Django logs a failure by its name
        inbound_turn_dispatch(partner_id=partner_id)

    transaction.on_commit(dispatch, robust=True)


def inbound_turns(*, partner_id: int, connection: Redis) -> list[InboundBatch]:
    """The partner's batches whose turn it is: those being processed, then the oldest queued,
    at most ``INBOUND_BATCHES_PER_PARTNER``, never two of one data source (the one ahead of
    a data source's line holds it), and none for a data source another partner goes first
    with (:func:`_another_partner_first`)."""
    pending = (
        InboundBatch.objects.filter(
            partner_id=partner_id,
            status__in=[InboundBatch.Status.QUEUED, InboundBatch.Status.PROCESSING],
        )
        .order_by(
            Case(
                When(status=InboundBatch.Status.PROCESSING, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            ),
            "pk",
        )
        .select_related("partner")
    )
    turns: list[InboundBatch] = []
    targets: set[int] = set()
    for batch in pending.iterator(chunk_size=100):
        if batch.target_id in targets:
            continue  # the batch ahead of it in its data source's line goes first
        targets.add(batch.target_id)
        if batch.status == InboundBatch.Status.QUEUED and _another_partner_first(batch, connection):
            continue
        turns.append(batch)
        if len(turns) >= settings.INBOUND_BATCHES_PER_PARTNER:
            break
    return turns


def _another_partner_first(batch: InboundBatch, connection: Redis) -> bool:
    """Whether another partner's batch goes first on the data source of ``batch`` (queued):
    one being applied to it, or one already given its turn (a live job) while ``batch`` has
    none. A data source shared with other partners (``DataSource.shared_with``) thus
    alternates between its partners, one batch each, instead of taking every batch of its
    owner's backlog before a guest's file."""
    if _job_is_live(connection, inbound_batch_job_id(batch.pk)):
        return False  # already given its turn: it waits on the data source's lock
    others = InboundBatch.objects.filter(target_id=batch.target_id).exclude(
        partner_id=batch.partner_id
    )
    if others.filter(status=InboundBatch.Status.PROCESSING).exists():
        return True
    queued = others.filter(status=InboundBatch.Status.QUEUED).order_by("pk")
    ids = [inbound_batch_job_id(pk) for pk in queued.values_list("pk", flat=True)[:100]]
    return any(
        job is not None and job.get_status(refresh=False) in LIVE_JOB_STATUSES
        for job in Job.fetch_many(ids, connection=connection)
    )


def _job_is_live(connection: Redis, job_id: str) -> bool:
    job = Job.fetch_many([job_id], connection=connection)[0]
    return job is not None and job.get_status(refresh=False) in LIVE_JOB_STATUSES


def inbound_turn_dispatch(*, partner_id: int) -> list[InboundBatch]:
    """See that each of the partner's batches whose turn it is has its jobs in RQ (queued,
    running or scheduled for a retry), queueing them if not; return those this call queued.
    A job waiting to be tried again because its data source was busy is queued at once.

    Called when a batch is queued, when one ends (for the next one) and by the sweep; safe
    from any number of places at once (a short Redis lock per partner). A job RQ gave up on
    (failed) is left to the sweep, which ends its batch with a receipt."""
    # Sent at once, not at the end of a transaction (the turns were read from committed
    # rows): the lock must cover the sending.
    queue = django_rq.get_queue("inbound", commit_mode="auto")
    queued = []
    with queue.connection.lock(f"s2s:inbound-turn:{partner_id}", timeout=60, blocking_timeout=30):
        turns = inbound_turns(partner_id=partner_id, connection=queue.connection)
        found = Job.fetch_many(
            [inbound_batch_job_id(b.pk) for b in turns], connection=queue.connection
        )
        for batch, job in zip(turns, found, strict=True):
            status = job.get_status(refresh=False) if job is not None else None
            if (
                status == JobStatus.SCHEDULED
                and job is not None
                and job.meta.get(jobs.WAITS_FOR_ITS_TURN)
            ):
                _waiting_job_requeue(queue, job)
                continue
            if status in LIVE_JOB_STATUSES or status == JobStatus.FAILED:
                continue
            if job is not None:  # finished, stopped or canceled, yet the batch is not over
                job.delete()
            _batch_jobs_enqueue(queue, batch)
            queued.append(batch)
    return queued


def _waiting_job_requeue(queue: Queue, job: Job) -> None:
    """Queue now a job that waits for its data source's turn: the batch ahead ended."""
    with contextlib.suppress(InvalidJobOperation):  # RQ's scheduler queued it meanwhile
        queue.scheduled_job_registry.requeue(job)


def inbound_turns_after(*, batch_id: int) -> None:
    """Once a batch has ended: the next batches of its data source's line go, another
    partner's first (a data source shared by several partners takes their batches in turn),
    then its own partner's next. The other partners go round in the order of their IDs,
    starting after the partner whose batch ended: with three or more, each waits one batch
    of each other partner (had the one with the oldest queued batch always gone next, two
    partners would alternate and a third wait for both backlogs)."""
    batch = InboundBatch.objects.filter(pk=batch_id).values("partner_id", "target_id").first()
    if batch is None:
        return
    ended_for = batch["partner_id"]
    others = (
        InboundBatch.objects.filter(target_id=batch["target_id"], status=InboundBatch.Status.QUEUED)
        .exclude(partner_id=ended_for)
        .values_list("partner_id", flat=True)
        .distinct()
    )
    for partner_id in sorted(set(others), key=lambda pk: (pk < ended_for, pk)):
        inbound_turn_dispatch(partner_id=partner_id)
    inbound_turn_dispatch(partner_id=batch["partner_id"])


def _batch_jobs_enqueue(queue: Queue, batch: InboundBatch) -> None:
    """Queue the batch's job (and its part jobs) for RQ workers, now.

    One job per batch (the job ID is the batch's), on the ``inbound`` queue, with RQ's own
    retries: a worker that dies mid-batch leaves no trace in the database, and the retry
    (found by a live worker's maintenance pass) processes the batch from the start.

    The parts of a big split batch (:func:`parts_in_parallel`) first get a job each, which
    any worker takes (:func:`inbound_part_stage`); the batch job depends on them (RQ's own
    dependencies) and applies the whole batch, atomically, once they are done. A part job
    that failed for good does not hold the batch: the batch job parses that part itself.
    """
    retry = Retry(max=settings.INBOUND_RETRY_MAX, interval=settings.INBOUND_RETRY_INTERVALS)
    depends_on = None
    if parts_in_parallel(batch):
        part_jobs = []
        for file_id, name in batch.files.order_by("split", "name").values_list("pk", "name"):
            part_jobs.append(inbound_part_job_id(batch.pk, file_id))
            queue.enqueue(
                jobs.inbound_part_stage_job,
                file_id,
                job_id=part_jobs[-1],
                job_timeout=settings.INBOUND_JOB_TIMEOUT,
                retry=retry,
                description=f"Parse part {name} of inbound batch #{batch.pk}",
            )
        depends_on = Dependency(jobs=part_jobs, allow_failure=True)
    queue.enqueue(
        jobs.inbound_batch_process_job,
        batch.pk,
        job_id=inbound_batch_job_id(batch.pk),
        job_timeout=settings.INBOUND_JOB_TIMEOUT,
        retry=retry,
        # Once RQ gives up (no retry left, or abandoned for good), the batch fails with a
        # receipt instead of staying "processing".
        on_success=Callback(inbound_batch_job_ended),
        on_failure=Callback(inbound_batch_job_failed),
        depends_on=depends_on,
        description=f"Process inbound batch {batch.key} (#{batch.pk})",
    )


def inbound_batch_job_ended(job: Job, connection: Redis, result: Any) -> None:
    """RQ's success callback of a batch job (processed, rejected, or gone; not a job that
    waits for its turn, which returns a retry): the next batches go."""
    inbound_turns_after(batch_id=int(job.args[0]))


def inbound_batch_job_failed(job: Job, connection: Redis, *exc_info: Any) -> None:
    """RQ's failure callback of a batch job (raised, or abandoned by a dead worker): once no
    retry is left, the batch ends failed with a receipt rather than staying processing, and
    the next batches go."""
    if job.retries_left:
        return  # RQ queues it again
    logger.error(
        "inbound batch job %s failed for good: %s", job.id, exc_info[1] if exc_info else ""
    )
    batch_id = int(job.args[0])
    inbound_batch_fail(batch_id=batch_id, reason=PROCESSING_FAILED)
    inbound_turns_after(batch_id=batch_id)
