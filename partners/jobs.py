"""RQ jobs of the schedules: thin (run one schedule by name)."""

from __future__ import annotations

# The module, not its names: schedules enqueues this job by reference and imports this module.
from partners import schedules


def schedule_job(name: str) -> str:
    """Run the named schedule (from RQ's cron scheduler, or *Run now* in the admin)."""
    return schedules.schedule_run(name=name).result
