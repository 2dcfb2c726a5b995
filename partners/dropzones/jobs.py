"""RQ jobs of the drop zones: thin."""

from __future__ import annotations

from partners.schedules import inbound_poll_run, schedule_run


def inbound_poll_job(channel_id: int) -> str:
    """Poll one channel now (the admin's *Poll now*), recorded like a scheduled poll."""
    return schedule_run(
        name="inbound_poll", run=lambda: inbound_poll_run(channel_id=channel_id)
    ).result
