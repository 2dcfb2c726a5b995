"""What the sweeps ask of RQ about a job they did not see finish (shared by the inbound and
the receipt sweeps, which each find theirs by its job ID)."""

from __future__ import annotations

from rq.job import JobStatus

# RQ still has the job on its way: created, waiting in a queue, deferred behind the jobs it
# depends on, running, or scheduled for its next retry. Anything else (finished, failed,
# stopped, canceled, or no job at all) means nobody will do the work unless it is queued again.
LIVE_JOB_STATUSES = frozenset(
    {
        JobStatus.CREATED,
        JobStatus.QUEUED,
        JobStatus.DEFERRED,
        JobStatus.STARTED,
        JobStatus.SCHEDULED,
    }
)
