from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from portal.demo import demo_seed


class Command(BaseCommand):
    help = "Load the demo taxonomy and the demo staff and partner users (safe to run again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="print what was seeded as JSON (for the banner)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        seeded = demo_seed()
        if options["json"]:
            data = {
                "summary": seeded.summary,
                "users": [vars(user) for user in seeded.users],
                "dropzone_today": str(seeded.dropzone_today),
                "exports": str(seeded.exports),
            }
            self.stdout.write(json.dumps(data))
            return
        self.stdout.write(self.style.SUCCESS(f"Demo taxonomy loaded: {seeded.summary}"))
        for user in seeded.users:
            self.stdout.write(f"  {user.role:8} login: {user.username} / password: {user.password}")
        self.stdout.write(f"  drop files into: {seeded.dropzone_today}/")
        self.stdout.write(f"  exports arrive in: {seeded.exports}/")
