"""RQ jobs of the segments app: thin."""

from __future__ import annotations

from segments.models import Segment
from segments.services import segments_membership_rebuild


def segment_membership_rebuild_job(sid: int) -> int | None:
    if not Segment.objects.filter(sid=sid).exists():
        return None
    return segments_membership_rebuild(segment_sids=[sid])
