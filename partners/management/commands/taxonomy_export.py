from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from partners.taxonomy import taxonomy_export


class Command(BaseCommand):
    help = (
        "Write the whole taxonomy (partners, data sources, recipients, traits, segments) to XLSX."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="the .xlsx file to write")

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        with path.open("wb") as output:
            taxonomy_export(output=output)
        self.stdout.write(self.style.SUCCESS(f"Taxonomy written to {path}"))
