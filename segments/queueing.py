"""Queueing segment work for the RQ workers: the layer above the segments' services and jobs
(it imports the job it enqueues, by function; the services never import it)."""

from __future__ import annotations

import functools

import django_rq
from django.db import transaction

from segments import jobs


def segment_memberships_rebuild_enqueue(*, sids: list[int]) -> None:
    """Segments' rules or statuses changed (admin, taxonomy workbook): rebuild their
    membership over all profiles in the background, once the change is committed."""
    for sid in sids:
        transaction.on_commit(
            functools.partial(
                django_rq.get_queue("default").enqueue,
                jobs.segment_memberships_rebuild_job,
                sid,
                job_timeout=3600,
                description=f"Rebuild the membership of segment {sid}",
            ),
            robust=True,  # Redis down must not undo the change; the daily refresh catches up
        )
