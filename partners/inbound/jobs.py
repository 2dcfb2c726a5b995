"""RQ jobs for inbound batches: thin (load by id, return if gone, call one service)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from rq import Retry, get_current_job
from rq.job import Job

# Modules, not names: queueing enqueues these jobs by reference and imports this module, so
# either may be imported first.
from partners.inbound import processing, queueing
from partners.inbound.errors import PROCESSING_FAILED, DataSourceBusy, InboundRejected
from partners.models import InboundBatch
from partners.outages import later, waits_out_database_outages

logger = logging.getLogger(__name__)


def _job_progress(percent: int) -> None:
    """Keep the batch's progress on its RQ job, where the portal reads it while it runs."""
    job = get_current_job()
    if job is not None:
        job.meta["progress"] = percent
        try:
            job.save_meta()
        except redis.exceptions.ConnectionError:
            # Only what the portal shows: Redis being down must not fail the batch itself.
            logger.warning("progress of %s not kept: Redis unreachable", job.id)


@waits_out_database_outages
def inbound_batch_process_job(batch_id: int) -> int | Retry | None:
    """Process one batch; returns its receipt id. Runs on the ``inbound`` queue. Once the
    batch has ended, the next batch of its partner is queued."""
    if not InboundBatch.objects.filter(pk=batch_id).exists():
        return None
    try:
        receipt_id = processing.inbound_batch_process(batch_id=batch_id, progress=_job_progress).pk
    except DataSourceBusy as exc:
        # Not its turn (a race with the sweep, or a job queued before batches took turns):
        # it waits, without holding the worker, and is tried again in a moment.
        logger.info("inbound batch %s: %s", batch_id, exc)
        _waits_for_its_turn()
        return later(settings.INBOUND_TURN_RETRY_INTERVALS)
    except InboundRejected as exc:
        # The batch is marked failed with the reason; retrying cannot help.
        logger.warning("inbound batch %s rejected: %s", batch_id, exc)
        receipt_id = None
    queueing.inbound_turns_after(batch_id=batch_id)  # the data source's and partner's next
    return receipt_id


def _waits_for_its_turn() -> None:
    """Flag the job as waiting for its data source: the batch ahead queues it when it ends,
    rather than it waiting out RQ's retry interval."""
    job = get_current_job()
    if job is not None:
        job.meta[queueing.WAITS_FOR_ITS_TURN] = True
        job.save_meta()


def inbound_batch_job_failed(job: Job, connection: Any, *exc_info: Any) -> None:
    """RQ's failure callback of a batch job (raised, or abandoned by a dead worker): once no
    retry is left, the batch ends failed with a receipt rather than staying processing, and
    the partner's next batch is queued."""
    if job.retries_left:
        return  # RQ queues it again
    logger.error(
        "inbound batch job %s failed for good: %s", job.id, exc_info[1] if exc_info else ""
    )
    batch_id = int(job.args[0])
    processing.inbound_batch_fail(batch_id=batch_id, reason=PROCESSING_FAILED)
    queueing.inbound_turns_after(batch_id=batch_id)


def inbound_waiting_batches_release_job() -> int:
    """Queue the split batches whose parts are all here (or waited long enough)."""
    return len(queueing.inbound_waiting_batches_release())


@waits_out_database_outages
def inbound_part_stage_job(file_id: int) -> int | Retry | None:
    """Parse one part of a big batch ahead of it (any worker); returns its staged lines."""
    try:
        part = processing.inbound_part_stage(file_id=file_id)
    except InboundRejected as exc:
        logger.warning("part %s of an inbound batch rejected: %s", file_id, exc)
        return None
    return part.lines if part else None
