"""RQ jobs for inbound batches: thin (load by id, return if gone, call one service)."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from rq import Retry, get_current_job

from partners.inbound import processing, split_parts
from partners.inbound.errors import DataSourceBusy, InboundRejected
from partners.models import InboundBatch
from partners.outages import later, waits_out_database_outages

logger = logging.getLogger(__name__)

# Set on a batch's job that found its data source busy (another batch applying to it): RQ
# tries it again later, and the batch ending ahead of it queues it again at once instead.
WAITS_FOR_ITS_TURN = "waits_for_its_turn"


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
    batch has ended, its success callback (:mod:`partners.inbound.queueing`) queues the next
    batches."""
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
    return receipt_id  # the next batches go: queueing's success callback


def _waits_for_its_turn() -> None:
    """Flag the job as waiting for its data source: the batch ahead queues it when it ends,
    rather than it waiting out RQ's retry interval."""
    job = get_current_job()
    if job is not None:
        job.meta[WAITS_FOR_ITS_TURN] = True
        job.save_meta()


def inbound_waiting_batches_release_job() -> list[int]:
    """Mark queued the split batches whose parts are all here (or waited long enough);
    returns their partners, whose turns queueing's success callback dispatches."""
    return sorted({b.partner_id for b in split_parts.split_batches_ready_mark()})


@waits_out_database_outages
def inbound_part_stage_job(file_id: int) -> int | Retry | None:
    """Parse one part of a big batch ahead of it (any worker); returns its staged lines."""
    try:
        part = processing.inbound_part_stage(file_id=file_id)
    except InboundRejected as exc:
        logger.warning("part %s of an inbound batch rejected: %s", file_id, exc)
        return None
    return part.lines if part else None
