"""RQ jobs of the schedules: thin (run one schedule by name), and their queueing."""

from __future__ import annotations

import django_rq

from partners import schedules


def schedule_job(name: str) -> str:
    """Run the named schedule (from RQ's cron scheduler, or *Run now* in the admin)."""
    return schedules.schedule_run(name=name).result


def schedule_run_request(*, schedule: schedules.Schedule) -> None:
    """Queue the schedule to run now, on its own queue (the admin's *Run now*)."""
    django_rq.get_queue(schedule.queue).enqueue(
        schedule_job, schedule.name, job_timeout=schedule.timeout
    )
