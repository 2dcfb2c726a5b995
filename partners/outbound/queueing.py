"""Queueing outbound runs for the RQ ``outbound`` workers: the layer above the runs' service
and jobs (it imports the jobs it enqueues, by function; the service never imports it)."""

from __future__ import annotations

import django_rq

from partners.outbound import jobs
from partners.outbound.runs import OUTBOUND_JOB_TIMEOUT


def outbound_runs_request(*, destination_ids: list[int]) -> None:
    """Queue a run of each destination now, in the outbound workers (admin *Run now*)."""
    queue = django_rq.get_queue("outbound")
    for pk in destination_ids:
        queue.enqueue(jobs.outbound_run_job, pk, job_timeout=OUTBOUND_JOB_TIMEOUT)


def outbound_resends_request(*, run_ids: list[int]) -> None:
    """Queue each past run to be sent again, the same mode and window (admin *Send again*)."""
    queue = django_rq.get_queue("outbound")
    for pk in run_ids:
        queue.enqueue(jobs.outbound_run_resend_job, pk, job_timeout=OUTBOUND_JOB_TIMEOUT)
