"""The error workbook of a batch (XLSX): a summary sheet with the receipt's counters and
every kept rejected line. openpyxl's write-only mode streams rows, so a batch's 100,000
rejected lines never sit in memory as cells."""

from __future__ import annotations

import io
from typing import IO, Any

from django.http import FileResponse
from openpyxl import Workbook
from openpyxl.styles import Font

from partners.models import Receipt
from partners.receipts.render import receipt_counters
from partners.xlsx import text_cell, text_row

ERRORS_SHEET = "Rejected lines"
ERRORS_HEADER = ("File", "Line", "Error", "Reason", "Start of the line")


def receipt_workbook_write(receipt: Receipt, stream: IO[bytes]) -> None:
    batch = receipt.batch
    book = Workbook(write_only=True)
    summary = book.create_sheet("Summary")

    def bold(sheet: Any, value: str) -> Any:
        cell = text_cell(sheet, value)
        cell.font = Font(bold=True)
        return cell

    summary.append([bold(summary, f"{batch.partner.name} (PID {batch.partner.pk})")])
    summary.append(["Data source (DPID)", batch.target.dpid])
    summary.append(text_row(summary, ["Batch", batch.key]))
    for name in batch.files.order_by("split", "name").values_list("name", flat=True):
        summary.append(text_row(summary, ["File", name]))
    summary.append([])
    for field, label in receipt_counters(receipt):
        summary.append([label, getattr(receipt, field)])
    summary.append(["Job start time (UTC)", receipt.job_start.replace(tzinfo=None)])
    summary.append(["Job end time (UTC)", receipt.job_end.replace(tzinfo=None)])

    errors = book.create_sheet(ERRORS_SHEET)
    errors.append([bold(errors, title) for title in ERRORS_HEADER])
    rows = (
        batch.line_errors.order_by("file_name", "line_number", "kind")
        .values_list("file_name", "line_number", "kind", "reason", "line_start")
        .iterator(chunk_size=5000)
    )
    for file_name, line, kind, reason, start in rows:
        errors.append(text_row(errors, [file_name, line, kind.replace("_", " "), reason, start]))
    book.save(stream)


def receipt_workbook_name(receipt: Receipt) -> str:
    return f"errors-{receipt.batch.key}.xlsx".replace("/", "_")


def receipt_workbook_response(receipt: Receipt) -> FileResponse:
    """The workbook as a download (the admin's and the partner's)."""
    stream = io.BytesIO()
    receipt_workbook_write(receipt, stream)
    stream.seek(0)
    return FileResponse(stream, as_attachment=True, filename=receipt_workbook_name(receipt))
