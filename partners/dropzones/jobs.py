"""RQ jobs of the drop zones: thin."""

from __future__ import annotations

from partners import schedules  # the module: schedules imports the drop zones' services


def inbound_poll_job(channel_id: int) -> str:
    """Poll one channel now (the admin's *Poll now*), recorded like a scheduled poll."""
    return schedules.schedule_run(
        name="inbound_poll", run=lambda: schedules.inbound_poll_run(channel_id=channel_id)
    ).result
