"""RQ's cron configuration: ``python manage.py rqcron portal.cron`` (one process; several
are harmless, but one is enough). The schedules themselves live in partners.schedules."""

from __future__ import annotations

from rq import cron

from partners.jobs import schedule_job
from partners.schedules import schedules

for schedule in schedules():
    cron.register(
        schedule_job,
        schedule.queue,
        args=(schedule.name,),
        interval=schedule.interval,
        cron=schedule.cron,
        job_timeout=schedule.timeout,
        name=schedule.name,
    )
