from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from partners.taxonomy import TaxonomyImportError, taxonomy_import


class Command(BaseCommand):
    help = (
        "Upsert the taxonomy from an XLSX workbook, all or nothing. On any bad cell nothing "
        "changes and every problem is printed as Sheet!Cell: message."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="the .xlsx file to read")

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            with path.open("rb") as workbook:
                result = taxonomy_import(workbook=workbook)
        except TaxonomyImportError as exc:
            for line in exc.lines:  # the first problems, then how many more
                self.stderr.write(line)
            raise CommandError(
                f"{path}: not imported, {exc.count:,} problem(s); nothing was changed"
            ) from exc
        self.stdout.write(self.style.SUCCESS(f"Imported {path}. {result.summary()}."))
