"""The taxonomy workbook: the whole partner/data-source/trait/segment setup as one XLSX.

Export writes every sheet with every column. Import is an upsert keyed by the IDs: it reads
every row, validates every cell (and the references between sheets and to what is already
stored), and either applies everything in one transaction or changes nothing and reports every
bad cell as ``Sheet!CellRef: message``. Rows that are not in the workbook are left alone, and a
column left out of a sheet keeps its stored value (new rows get the default).

This module holds what is between the sheets: their order (that of their references, in which
they are written), the references themselves, the permissions and the all-or-nothing import.
Each sheet is a resource (sheets.py); the rules its rows obey are its models'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.db import models, transaction
from openpyxl import Workbook, load_workbook

from partners.models import DataSource, Destination, InboundChannel, Partner
from partners.taxonomy.limits import RowBudget, WorkbookTooBig, memory_release, workbook_size_check
from partners.taxonomy.resource import Errors, Resource, SheetRows
from partners.taxonomy.sheets import (
    DataSources,
    Destinations,
    DestinationSegments,
    Partners,
    ReceiptRecipients,
    Segments,
    Traits,
)
from segments.models import Segment
from segments.queueing import segment_memberships_rebuild_enqueue

# In the order of their references: a sheet refers only to those before it.
SHEETS: tuple[Resource, ...] = (
    Partners(),
    DataSources(),
    ReceiptRecipients(),
    Traits(),
    Segments(),
    Destinations(),
    DestinationSegments(),
)

# What a reference column names, as in "unknown partner PID 8".
REFERENCED: dict[type[models.Model], str] = {
    Partner: "partner PID",
    DataSource: "data source DPID",
    InboundChannel: "channel",  # not in the workbook: made in the admin
    Destination: "destination",
    Segment: "segment SID",
}


class References:
    """The rows a workbook row may refer to: the workbook's own rows (as they will be stored)
    over the stored ones."""

    def __init__(self, sheets: Iterable[SheetRows]) -> None:
        self._own: dict[type[models.Model], dict[Any, models.Model]] = {
            data.resource.model: {row.obj.pk: row.obj for row in data.rows if row.obj.pk}
            for data in sheets
            if not data.resource.natural_key
        }

    def rows(self, model: type[models.Model], keys: Iterable[Any]) -> dict[Any, models.Model]:
        """Those of ``keys`` that name a row of ``model``, with their rows (one query)."""
        own = self._own.get(model, {})
        wanted = {key for key in keys if key is not None}
        found = {key: own[key] for key in wanted if key in own}
        if wanted - found.keys():
            found |= model._default_manager.in_bulk(wanted - found.keys())
        return found

    def resolve(self, data: SheetRows) -> None:
        """Point every reference cell's relation at the row it names (which is what the models'
        clean() compares: a channel of another partner…); a row named nowhere is no row."""
        for column in data.present:
            relation = data.resource.model_field(column)
            if not relation.is_relation:
                continue
            assert isinstance(relation.related_model, type)
            keys = (row.values.get(column.name) for row in data.rows)
            found = self.rows(relation.related_model, keys)
            for row in data.rows:
                key = row.values.get(column.name)
                if key is None:
                    continue
                row.refers_to[column.name] = target = found.get(key)
                if target is None:
                    # The model sees no such row (its clean() skips what it would compare);
                    # the ID stays, for the message: "unknown channel 999".
                    relation.set_cached_value(row.obj, None)  # type: ignore[attr-defined]
                else:
                    setattr(row.obj, relation.name, target)

    @staticmethod
    def report_unknown(data: SheetRows, errors: Errors) -> None:
        """Every reference cell naming a row that is in neither the workbook nor the database."""
        for column in data.present:
            relation = data.resource.model_field(column)
            for row in data.rows:
                if column.name in row.refers_to and row.refers_to[column.name] is None:
                    what = REFERENCED[relation.related_model]  # type: ignore[index]
                    errors.add(row.cells[column.name], f"unknown {what} {row.values[column.name]}")


def _may(user: Any, resource: Resource, *actions: str) -> bool:
    """Whether ``user`` holds the admin's permission for one of ``actions`` on the sheet's
    model (no user: a management command, run by whoever runs the server)."""
    if user is None:
        return True
    opts = resource.model._meta
    return any(user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}") for action in actions)


def sheets_viewable(user: Any) -> list[Resource]:
    """The sheets ``user`` may export: those whose rows the admin shows them (the change
    permission includes viewing, as in the admin)."""
    return [sheet for sheet in SHEETS if _may(user, sheet, "view", "change")]


def sheets_importable(user: Any) -> list[Resource]:
    """The sheets ``user`` may import: an import adds and changes rows, so both are needed."""
    return [sheet for sheet in SHEETS if _may(user, sheet, "add") and _may(user, sheet, "change")]


def taxonomy_export(*, output: IO[bytes], user: Any = None) -> None:
    """Write the taxonomy (global device data sources excepted) to ``output``: every sheet
    ``user`` may view."""
    workbook = Workbook(write_only=True)
    for sheet in sheets_viewable(user):
        sheet.export(workbook)
    workbook.save(output)


@dataclass
class TaxonomyImportResult:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [
            f"{name}: {self.created.get(name, 0)} created, {self.updated.get(name, 0)} updated"
            for name in self.created
        ]
        return "; ".join(parts) if parts else "the workbook holds no taxonomy sheets"


class TaxonomyImportError(Exception):
    """Why nothing was imported: ``errors``, the first problems (at most
    ``TAXONOMY_ERRORS_SHOWN``), and ``count``, how many there were in all."""

    def __init__(self, errors: list[str], *, count: int | None = None) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        self.count = len(errors) if count is None else count

    @property
    def more(self) -> int:
        """The problems found but not listed."""
        return self.count - len(self.errors)

    @property
    def lines(self) -> list[str]:
        """The problems as listed everywhere: the first ones, then how many more."""
        return self.errors + ([f"… and {self.more:,} more"] if self.more else [])


def _read(workbook: IO[bytes], user: Any, errors: Errors) -> dict[str, SheetRows]:
    """Every sheet ``user`` may import, as read from its cells, by name (openpyxl's
    read-only mode: rows are streamed, and counted against TAXONOMY_MAX_ROWS)."""
    try:
        book = load_workbook(workbook, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a file that is not XLSX
        raise TaxonomyImportError([f"the file is not an XLSX workbook ({exc})"]) from exc
    known = {sheet.name: sheet for sheet in SHEETS}
    permitted = sheets_importable(user)
    sheets: dict[str, SheetRows] = {}
    budget = RowBudget()
    try:
        for worksheet in book.worksheets:
            sheet = known.get(worksheet.title)
            if sheet is None:
                errors.add(
                    f"{worksheet.title}!A1",
                    f"unknown sheet '{worksheet.title}' (expected {', '.join(known)})",
                )
            elif sheet not in permitted:
                plural = sheet.model._meta.verbose_name_plural
                errors.add(
                    f"{worksheet.title}!A1",
                    f"you may not add or change {plural}: remove this sheet, or ask for "
                    "the add and change permissions",
                )
            elif (data := sheet.read(worksheet, errors, budget)) is not None:
                sheets[sheet.name] = data
    finally:
        book.close()
    return sheets


def _validate(sheets: dict[str, SheetRows], errors: Errors) -> None:
    for data in sheets.values():
        data.resource.build(data)
    references = References(sheets.values())
    for data in sheets.values():
        references.resolve(data)
    for sheet in SHEETS:
        if (rows := sheets.get(sheet.name)) is None:
            continue
        for row in rows.rows:
            sheet.clean(rows, row, errors)
        sheet.check_duplicates(rows, errors)
        references.report_unknown(rows, errors)
        sheet.check(rows, references, errors)


def taxonomy_import(*, workbook: IO[bytes], user: Any = None) -> TaxonomyImportResult:
    """Apply a taxonomy workbook, all or nothing. Raises :class:`TaxonomyImportError`,
    also when it holds a sheet that ``user`` may not add to and change, and at once when it
    is past a limit (:mod:`partners.taxonomy.limits`); the first
    ``TAXONOMY_ERRORS_SHOWN`` problems are listed, the others counted. However it ends, the
    memory it used goes back to the system."""
    try:
        outcome = _import(workbook, user)
    except WorkbookTooBig as exc:
        outcome = TaxonomyImportError([str(exc)])
    # The import's rows and model instances are gone by now (the outcome is returned, not
    # raised from inside, so no traceback keeps their frames alive).
    memory_release()
    if isinstance(outcome, TaxonomyImportError):
        raise outcome
    return outcome


def _import(workbook: IO[bytes], user: Any) -> TaxonomyImportResult | TaxonomyImportError:
    workbook_size_check(workbook)
    errors = Errors([sheet.name for sheet in SHEETS], shown=settings.TAXONOMY_ERRORS_SHOWN)
    try:
        sheets = _read(workbook, user, errors)
    except TaxonomyImportError as exc:
        return exc.with_traceback(None)
    _validate(sheets, errors)
    if errors.count:
        return TaxonomyImportError(errors.lines, count=errors.count)

    result = TaxonomyImportResult()
    with transaction.atomic():
        for sheet in SHEETS:  # each after those it refers to
            if sheet.name in sheets:
                created, updated = sheet.write(sheets[sheet.name])
                result.created[sheet.name], result.updated[sheet.name] = created, updated
        if Segments.name in sheets:  # rules or statuses may have changed
            rows = sheets[Segments.name].rows
            segment_memberships_rebuild_enqueue(
                sids=[row.obj.pk for row in rows if row.obj is not None]
            )
    return result
