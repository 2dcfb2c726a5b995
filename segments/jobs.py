"""RQ jobs of segments: thin."""

from __future__ import annotations

from segments.membership import segment_memberships_rebuild
from segments.models import Segment


def segment_memberships_rebuild_job(sid: int) -> int | None:
    """Rebuild one segment's membership over all profiles (its rule or status changed)."""
    if not Segment.objects.filter(sid=sid).exists():
        return None
    return segment_memberships_rebuild(segment_sids=[sid])
