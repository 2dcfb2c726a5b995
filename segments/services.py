"""Segment membership upkeep beyond inbound batches: after a segment changes, and daily."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

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
