"""RQ jobs of the drop zones: thin."""

from __future__ import annotations

# The module, not its names: services enqueues this job by reference and imports this module.
from partners.dropzones import services


def inbound_channel_poll_job(channel_id: int) -> str:
    """Poll one channel (one job per channel: a slow one holds no other); its result is
    recorded on the channel."""
    result = services.inbound_channel_poll(channel_id=channel_id)
    return result.summary() if result is not None else "no such channel"
