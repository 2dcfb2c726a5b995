"""Alert the partner-solutions list about data sources that sent nothing lately (run daily)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from partners.receipts.alerts import silent_data_sources_alert


class Command(BaseCommand):
    help = "E-mail one alert listing the data sources silent for ALERT_SILENT_DAYS days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.ALERT_SILENT_DAYS)

    def handle(self, *args: Any, days: int, **options: Any) -> None:
        count = silent_data_sources_alert(days=days)
        self.stdout.write(
            f"{count} data source(s) silent for {days} days" + (": alert queued" if count else "")
        )
