"""RQ jobs for inbound batches: thin (load by id, return if gone, call one service)."""

from __future__ import annotations

import logging

from rq import get_current_job

from partners.inbound.services import (
    InboundRejected,
    inbound_batch_process,
    inbound_part_stage,
    inbound_waiting_batches_release,
)
from partners.models import InboundBatch

logger = logging.getLogger(__name__)


def _job_progress(percent: int) -> None:
    """Keep the batch's progress on its RQ job, where the portal reads it while it runs."""
    job = get_current_job()
    if job is not None:
        job.meta["progress"] = percent
        job.save_meta()


def inbound_batch_process_job(batch_id: int) -> int | None:
    """Process one batch; returns its receipt id. Runs on the ``inbound`` queue."""
    if not InboundBatch.objects.filter(pk=batch_id).exists():
        return None
    try:
        return inbound_batch_process(batch_id=batch_id, progress=_job_progress).pk
    except InboundRejected as exc:
        # The batch is marked failed with the reason; retrying cannot help.
        logger.warning("inbound batch %s rejected: %s", batch_id, exc)
        return None


def inbound_waiting_batches_release_job() -> int:
    """Queue the split batches whose parts are all here (or waited long enough)."""
    return len(inbound_waiting_batches_release())


def inbound_part_stage_job(file_id: int) -> int | None:
    """Parse one part of a big batch ahead of it (any worker); returns its staged lines."""
    try:
        part = inbound_part_stage(file_id=file_id)
    except InboundRejected as exc:
        logger.warning("part %s of an inbound batch rejected: %s", file_id, exc)
        return None
    return part.lines if part else None
