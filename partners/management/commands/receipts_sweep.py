"""Queue again the receipt e-mails whose job was lost; fail those that never go (every 10 min)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from partners.schedules import schedule_run


class Command(BaseCommand):
    help = (
        "No receipt e-mail stays pending: queue again a delivery still pending after RQ's"
        " retry window with no live RQ job, and fail one queued again too often, with the"
        " reason."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(schedule_run(name="receipts_sweep").result)
