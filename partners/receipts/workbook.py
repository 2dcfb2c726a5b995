"""The error workbook of a batch (XLSX): a summary sheet with the receipt's counters and
every kept rejected line. openpyxl's write-only mode streams rows, so a batch's 100,000
rejected lines never sit in memory as cells."""

from __future__ import annotations

import io
import re
from typing import IO, Any

from django.http import FileResponse
from openpyxl import Workbook
from openpyxl.styles import Font

from partners.models import Receipt
from partners.receipts.render import receipt_counters
from partners.xlsx import text_cell, text_row

ERRORS_SHEET = "Rejected lines"
ERRORS_HEADER = ("File", "Line", "Error", "Reason", "Start of the line")
# Column widths (in characters) of the rejected lines, the file's set from the batch's names.
ERRORS_WIDTHS = {"B": 9, "C": 20, "D": 60, "E": 60}
SUMMARY_WIDTHS = {"A": 46, "B": 18}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match[0])
    if code == 0x09:
        return "\u2192"  # →: where the tab between the user ID and its signals is
    return "\u2421" if code == 0x7F else chr(0x2400 + code)  # ␁, ␍, … ␡


def text_visible(text: str) -> str:
    """A partner's line (or a reason quoting it) as a reader can see it: a tab as →, any
    other control character as its symbol (U+0001 as ␁). Raw, a tab is invisible in a cell
    and on a page, and a control character cannot be written to a workbook at all."""
    return _CONTROL.sub(_shown, text)


def receipt_workbook_write(receipt: Receipt, stream: IO[bytes]) -> None:
    batch = receipt.batch
    book = Workbook(write_only=True)
    summary = book.create_sheet("Summary")
    names = list(batch.files.order_by("split", "name").values_list("name", flat=True))
    for column, width in SUMMARY_WIDTHS.items():
        summary.column_dimensions[column].width = width
    # A file name or the batch key in column B: wide enough for the longest.
    summary.column_dimensions["B"].width = max(
        SUMMARY_WIDTHS["B"], min(80, max(map(len, [*names, batch.key])) + 2)
    )

    def bold(sheet: Any, value: str) -> Any:
        cell = text_cell(sheet, value)
        cell.font = Font(bold=True)
        return cell

    summary.append([bold(summary, f"{batch.partner.name} (PID {batch.partner.pk})")])
    summary.append(["Data source (DPID)", batch.target.dpid])
    summary.append(text_row(summary, ["Batch", batch.key]))
    for name in names:
        summary.append(text_row(summary, ["File", name]))
    summary.append([])
    for field, label in receipt_counters(receipt):
        summary.append([label, getattr(receipt, field)])
    summary.append(["Job start time (UTC)", receipt.job_start.replace(tzinfo=None)])
    summary.append(["Job end time (UTC)", receipt.job_end.replace(tzinfo=None)])

    errors = book.create_sheet(ERRORS_SHEET)
    errors.column_dimensions["A"].width = min(80, max(map(len, names), default=20) + 2)
    for column, width in ERRORS_WIDTHS.items():
        errors.column_dimensions[column].width = width
    errors.freeze_panes = "A2"  # the titles stay in sight down 100,000 lines
    errors.append([bold(errors, title) for title in ERRORS_HEADER])
    rows = (
        batch.line_errors.order_by("file_name", "line_number", "kind")
        .values_list("file_name", "line_number", "kind", "reason", "line_start")
        .iterator(chunk_size=5000)
    )
    for file_name, line, kind, reason, start in rows:
        errors.append(
            text_row(
                errors,
                [
                    file_name,
                    line,
                    kind.replace("_", " "),
                    text_visible(reason),
                    text_visible(start),
                ],
            )
        )
    book.save(stream)


def receipt_workbook_name(receipt: Receipt) -> str:
    return f"errors-{receipt.batch.key}.xlsx".replace("/", "_")


def receipt_workbook_response(receipt: Receipt) -> FileResponse:
    """The workbook as a download (the admin's and the partner's)."""
    stream = io.BytesIO()
    receipt_workbook_write(receipt, stream)
    stream.seek(0)
    return FileResponse(stream, as_attachment=True, filename=receipt_workbook_name(receipt))
