"""Poll the drop zones once (RQ's cron does it every INBOUND_POLL_SECONDS; this is for system
cron or a manual run)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from partners.schedules import inbound_poll_run, schedule_run


class Command(BaseCommand):
    help = "Register new files of every active drop zone (or one) and queue complete batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--channel", type=int, help="only this channel (its ID)")

    def handle(self, *args: Any, channel: int | None, **options: Any) -> None:
        run = schedule_run(name="inbound_poll", run=lambda: inbound_poll_run(channel_id=channel))
        self.stdout.write(run.result)
