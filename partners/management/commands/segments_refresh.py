"""The old name of ``segments_rebuild``, kept so that existing crontabs go on working."""

from __future__ import annotations

from partners.management.commands.segments_rebuild import Command as SegmentsRebuild


class Command(SegmentsRebuild):
    help = "Old name of segments_rebuild (kept for existing crontabs): " + SegmentsRebuild.help
