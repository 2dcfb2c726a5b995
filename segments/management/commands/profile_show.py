from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from segments.selectors import ProfileNotFound, profile_summary, profiles_lookup


class Command(BaseCommand):
    help = "Show a profile's ID mappings, live traits and segments."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference", help="a platform UUID, or DPID:DPUUID")
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args: Any, reference: str, as_json: bool, **options: Any) -> None:
        try:
            profiles = profiles_lookup(reference)
        except ProfileNotFound as exc:
            raise CommandError(str(exc)) from exc
        for profile in profiles:
            summary = profile_summary(profile)
            if as_json:
                self.stdout.write(json.dumps(summary))
                continue
            self.stdout.write(f"Profile {summary['uuid']}")
            self.stdout.write("  ID mappings:")
            for m in summary["mappings"]:  # type: ignore[attr-defined]
                self.stdout.write(
                    f"    DPID {m['dpid']}: {m['dpuuid']} (last seen {m['last_seen']})"
                )
            self.stdout.write("  Live traits:")
            for t in summary["traits"]:  # type: ignore[attr-defined]
                expires = t["expires"] or "never"
                self.stdout.write(
                    f"    {t['sid']}T {t['name']} (DPID {t['dpid']}): realized {t['realized']},"
                    f" expires {expires}"
                )
            self.stdout.write("  Segments:")
            for s in summary["segments"]:  # type: ignore[attr-defined]
                self.stdout.write(f"    {s['sid']} {s['name']} (since {s['since']})")
