"""Delete ID mappings unseen for IDSYNC_MAPPING_TTL_DAYS days (SPEC §2.1: 120). Run daily."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from partners.schedules import idsync_expire_run, schedule_run


class Command(BaseCommand):
    help = "Delete the ID mappings not seen for the configured number of days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.IDSYNC_MAPPING_TTL_DAYS)

    def handle(self, *args: Any, days: int, **options: Any) -> None:
        run = schedule_run(name="idsync_expire", run=lambda: idsync_expire_run(days=days))
        self.stdout.write(run.result)
