"""RQ jobs of the schedules: thin (run one schedule by name)."""

from __future__ import annotations

from partners.schedules import schedule_run


def schedule_job(name: str) -> str:
    """Run the named schedule (from RQ's cron scheduler, or *Run now* in the admin)."""
    return schedule_run(name=name).result
