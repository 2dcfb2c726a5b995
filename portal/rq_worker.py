"""The RQ worker the portal runs (``RQ["WORKER_CLASS"]``): RQ's own forking worker, made to
ride out a Redis outage while a job runs.

An idle RQ worker already waits for Redis to come back. A busy one does not: every
``job_monitoring_interval`` it writes the job's heartbeat, and a Redis that is down makes
that raise, which ends the worker for good while its work horse goes on alone (seen here:
a 25 s outage, a worker gone). The work of an inbound batch is in PostgreSQL, not Redis, so
the right answer is to keep waiting for the horse and send the next heartbeat later.
"""

from __future__ import annotations

from typing import Any

import redis
from rq import Worker


class OutageTolerantWorker(Worker):
    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except redis.exceptions.ConnectionError as exc:
            # The horse keeps working; the next interval tries the heartbeat again. Should
            # the outage outlast the job's heartbeat (90 s), the sweep finds it abandoned
            # and RQ retries it, which a batch allows (it is one transaction).
            self.log.warning("Worker %s: Redis unreachable, heartbeat skipped: %s", self.name, exc)
