from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from partners.inbound.errors import InboundRejected
from partners.inbound.processing import inbound_batch_process
from partners.inbound.registration import inbound_files_register
from partners.receipts.render import receipt_json, receipt_text


class Command(BaseCommand):
    help = (
        "Process inbound files in-process (parts of one logical file form one batch) and print "
        "each batch's receipt. A file that cannot be processed exits non-zero and changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="one JSON object per batch"
        )

    def handle(self, *args: Any, paths: list[Path], as_json: bool, **options: Any) -> None:
        try:
            registration = inbound_files_register(paths=paths)
        except InboundRejected as exc:
            raise CommandError(str(exc)) from exc
        for duplicate in registration.duplicates:
            self.stderr.write(f"{duplicate.name}: duplicate, already processed; not applied again")
        for batch in registration.batches:
            try:
                # Waits for a batch of the same data source a worker is applying.
                receipt = inbound_batch_process(batch_id=batch.pk, wait=True)
            except InboundRejected as exc:
                raise CommandError(str(exc)) from exc
            if as_json:
                self.stdout.write(json.dumps(receipt_json(receipt), ensure_ascii=False))
            else:
                self.stdout.write(receipt_text(receipt) + "\n")
