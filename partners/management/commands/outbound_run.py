"""Export segment membership to partner destinations (SPEC §6). Without options: every active
destination whose daily time has passed and that has not run today (what RQ cron does every
few minutes)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from partners.models import Destination
from partners.outbound.runs import OutboundRunInProgress, outbound_run
from partners.schedules import outbound_run_due_run, schedule_run


class Command(BaseCommand):
    help = "Run outbound exports: one destination now, or every one that is due."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--destination", type=int, help="this destination (its ID), now")
        parser.add_argument("--mode", choices=["full", "iter"], help="instead of its own")

    def handle(self, *args: Any, destination: int | None, mode: str | None, **options: Any) -> None:
        if destination is None:
            self.stdout.write(schedule_run(name="outbound_run", run=outbound_run_due_run).result)
            return
        found = Destination.objects.filter(pk=destination).first()
        if found is None:
            raise CommandError(f"no destination {destination}")
        try:
            run = outbound_run(destination=found, mode=mode)
        except OutboundRunInProgress as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:
            raise CommandError(f"destination {destination}: the run failed: {exc}") from exc
        self.stdout.write(
            f"destination {destination}: {run.files.count()} file(s), {run.lines} line(s),"
            f" {run.bytes} byte(s)"
        )
