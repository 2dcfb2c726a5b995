"""Alert the partner-solutions list about data sources that sent nothing lately (run daily)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from partners.schedules import alerts_check_run, schedule_run


class Command(BaseCommand):
    help = "E-mail one alert listing the data sources silent for ALERT_SILENT_DAYS days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.ALERT_SILENT_DAYS)

    def handle(self, *args: Any, days: int, **options: Any) -> None:
        run = schedule_run(name="alerts_check", run=lambda: alerts_check_run(days=days))
        self.stdout.write(run.result)
