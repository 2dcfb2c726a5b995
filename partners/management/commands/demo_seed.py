from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from portal.demo import demo_seed


class Command(BaseCommand):
    help = "Load the demo taxonomy and the demo staff and partner users (safe to run again)."

    def handle(self, *args: Any, **options: Any) -> None:
        seeded = demo_seed()
        self.stdout.write(self.style.SUCCESS(f"Demo taxonomy loaded: {seeded.summary}"))
        for user in seeded.users:
            self.stdout.write(f"  {user.role:8} login: {user.username} / password: {user.password}")
