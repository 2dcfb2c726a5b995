"""The old name of ``retention_purge`` (it always purged more than inbound files), kept so
that existing crontabs go on working."""

from __future__ import annotations

from partners.management.commands.retention_purge import Command as RetentionPurge


class Command(RetentionPurge):
    help = "Old name of retention_purge (kept for existing crontabs): " + RetentionPurge.help
