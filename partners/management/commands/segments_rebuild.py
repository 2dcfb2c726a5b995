"""Bring segment membership of every profile up to date (RQ cron runs it daily; this is for
system cron or a manual run)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from partners.schedules import schedule_run


class Command(BaseCommand):
    help = "Recompute segment membership over all profiles (TTL expiry, recency windows)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(schedule_run(name="segments_rebuild").result)
