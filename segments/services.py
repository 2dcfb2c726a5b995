"""Segment membership upkeep beyond inbound batches: after a segment changes, and daily."""

from __future__ import annotations

import functools

import django_rq
from django.db import transaction
from django.utils import timezone

from segments.membership import segment_memberships_rebuild


def segments_membership_rebuild(*, segment_sids: list[int] | None = None) -> int:
    """Bring every profile's membership up to date (in the given segments, or all); return
    how many joins and leaves that made. One transaction."""
    with transaction.atomic():
        now = int(timezone.now().timestamp())
        return segment_memberships_rebuild(segment_sids=segment_sids, now=now)


def segments_rebuild_request(*, sids: list[int]) -> None:
    """Segments' rules or statuses changed (admin, taxonomy workbook): rebuild their
    membership over all profiles in the background, once the change is committed."""
    for sid in sids:
        transaction.on_commit(
            functools.partial(
                django_rq.get_queue("default").enqueue,
                "segments.jobs.segment_membership_rebuild_job",
                sid,
                job_timeout=3600,
                description=f"Rebuild the membership of segment {sid}",
            ),
            robust=True,  # Redis down must not undo the change; the daily refresh catches up
        )
