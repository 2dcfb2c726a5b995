"""Segment membership upkeep beyond inbound batches: after a segment changes, and daily."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from segments import jobs
from segments.models import SegmentMembershipChange


def membership_changes_horizon(*, now: datetime | None = None) -> datetime:
    """The oldest moment the membership change log still tells everything after."""
    return (now or timezone.now()) - timedelta(days=settings.SEGMENT_CHANGES_RETENTION_DAYS)


def membership_changes_prune(*, now: datetime | None = None) -> int:
    """Delete the logged joins and leaves older than ``SEGMENT_CHANGES_RETENTION_DAYS`` (one
    DELETE); return how many."""
    old = SegmentMembershipChange.objects.filter(at__lt=membership_changes_horizon(now=now))
    deleted, _ = old.delete()
    return deleted


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
