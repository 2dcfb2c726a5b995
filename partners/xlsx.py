"""Writing partner data into XLSX workbooks safely: a value is never a formula.

openpyxl stores a string that starts with ``=`` as a formula, so a partner's rejected line
``=HYPERLINK(…)`` would become a live link in the error workbook that staff and partners open.
Every workbook the portal writes passes its rows through :func:`text_row`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openpyxl.cell import WriteOnlyCell


def text_cell(sheet: Any, value: str) -> Any:
    """``value`` as a text cell, whatever it starts with."""
    cell = WriteOnlyCell(sheet, value=value)
    cell.data_type = "s"
    return cell


def text_row(sheet: Any, values: Iterable[Any]) -> list[Any]:
    """``values`` for ``sheet.append``: strings that openpyxl would read as a formula become
    text cells; the rest (numbers, dates, other strings) are kept as they are, which keeps
    large sheets fast."""
    return [
        text_cell(sheet, value) if isinstance(value, str) and value.startswith("=") else value
        for value in values
    ]
