"""RQ jobs for inbound batches: thin (load by id, return if gone, call one service)."""

from __future__ import annotations

import logging

from partners.inbound.services import InboundRejected, inbound_batch_process
from partners.models import InboundBatch

logger = logging.getLogger(__name__)


def inbound_batch_process_job(batch_id: int) -> int | None:
    """Process one batch; returns its receipt id. Runs on the ``inbound`` queue."""
    if not InboundBatch.objects.filter(pk=batch_id).exists():
        return None
    try:
        return inbound_batch_process(batch_id=batch_id).pk
    except InboundRejected as exc:
        # The batch is marked failed with the reason; retrying cannot help.
        logger.warning("inbound batch %s rejected: %s", batch_id, exc)
        return None
