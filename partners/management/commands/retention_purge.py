"""Delete what is past its retention (run daily): delivered inbound files (drop zones and the
upload storage; their records stay), outbound files, old schedule-run records and the segment
membership change log."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from partners.schedules import schedule_run


class Command(BaseCommand):
    help = (
        "Delete what is past its retention: inbound and outbound files (their records stay),"
        " old schedule-run records, old membership changes."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(schedule_run(name="retention_purge").result)
