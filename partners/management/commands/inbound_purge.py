"""Delete delivered files past INBOUND_RETENTION_DAYS (30) from the drop zones and the upload
storage; their records stay (run daily)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from partners.schedules import schedule_run


class Command(BaseCommand):
    help = "Delete delivered files older than the retention period; keep their records."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(schedule_run(name="inbound_purge").result)
