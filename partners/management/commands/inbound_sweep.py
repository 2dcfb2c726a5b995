"""Queue again the inbound batches whose job was lost; fail those RQ gave up on (every minute)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from partners.schedules import schedule_run


class Command(BaseCommand):
    help = (
        "Every batch ends: queue again a batch queued or processing without a live RQ job,"
        " and fail (with its receipt) one whose job failed for good."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(schedule_run(name="inbound_sweep").result)
