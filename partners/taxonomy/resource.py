"""One sheet of the taxonomy workbook as a resource (after django-import-export's Resource):
its columns and how their cells convert (widgets.py), how its rows are matched to stored ones,
the checks only it makes, and the machinery every sheet shares: read a worksheet, build a model
instance per row, validate it with the model's own ``full_clean()``, upsert, export.

A model's ValidationError is reported at the cell of the field's column, in the model's words
or in the sheet's (``messages``, by field and error code: the workbook names its columns and
values). The rows a row refers to (its relations) are not the model's to look up: the workbook
finds them among its own rows and the stored ones (workbook.py) before the model validates.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.management.color import no_style
from django.db import connection, models
from django.utils import timezone
from openpyxl.utils import get_column_letter
from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

from partners.taxonomy.limits import RowBudget
from partners.taxonomy.widgets import TEXT, CellError, Widget, text
from partners.xlsx import text_row

if TYPE_CHECKING:
    from partners.taxonomy.workbook import References


# Rows a statement writes (a statement of 100,000 rows is one huge string in memory).
WRITE_BATCH = 2000


@dataclass(frozen=True)
class Column:
    name: str
    field: str  # the model attribute set from this column (a relation's: partner_id)
    widget: Widget = TEXT
    required: bool = False


class CellRefs:
    """A row's cell references by column name (``"Traits!B7"``), made when asked: a sheet's
    column letters are shared by all its rows, so 100,000 rows hold no 700,000 strings."""

    __slots__ = ("_letters", "_number")

    def __init__(self, letters: Mapping[str, str], number: int) -> None:
        self._letters = letters  # column name -> "Traits!B"
        self._number = number

    def __getitem__(self, name: str) -> str:
        return f"{self._letters[name]}{self._number}"

    def __contains__(self, name: object) -> bool:
        return name in self._letters


@dataclass(slots=True)
class Row:
    number: int  # the spreadsheet row number
    cells: CellRefs  # column name -> "Sheet!B7"
    values: dict[str, Any] = field(default_factory=dict)  # column name -> read value
    unreadable: set[str] = field(default_factory=set)  # columns whose cell was reported
    obj: Any = None  # the stored row (or a new one) with this row's cells
    # Reference column -> the row it names (None: in neither the workbook nor the database).
    refers_to: dict[str, models.Model | None] = field(default_factory=dict)


@dataclass
class SheetRows:
    resource: Resource
    present: list[Column]  # the sheet's columns, as its header names them
    rows: list[Row]


class Errors:
    """Problems found so far, reported in reading order: sheet, then row, then column. Only
    the first ``shown`` are kept (a workbook of 100,000 bad rows holds no million lines);
    ``count`` says how many there were in all."""

    def __init__(self, sheet_order: Sequence[str], *, shown: int = 200) -> None:
        self._order = list(sheet_order)
        self._shown = shown
        # The first ``shown`` in reading order, as a heap whose top is the last of them.
        self._kept: list[tuple[tuple[int, ...], str]] = []
        self.count = 0

    def add(self, cell: str, message: str) -> None:
        sheet, _, coordinate = cell.partition("!")
        letters, row = coordinate_from_string(coordinate)
        rank = self._order.index(sheet) if sheet in self._order else len(self._order)
        where = (rank, row, column_index_from_string(letters), self.count)
        self.count += 1
        entry = (tuple(-n for n in where), f"{cell}: {message}")
        if len(self._kept) < self._shown:
            heapq.heappush(self._kept, entry)
        elif entry[0] > self._kept[0][0]:  # comes before the last one kept
            heapq.heapreplace(self._kept, entry)

    @property
    def lines(self) -> list[str]:
        return [line for _, line in sorted(self._kept, reverse=True)]


class Resource:
    """A sheet: subclasses give its name, model and columns (the first is the row's ID)."""

    name: ClassVar[str]
    model: ClassVar[type[models.Model]]
    columns: ClassVar[tuple[Column, ...]]
    # Rows with no ID of their own are matched on these model fields; else on the first column.
    natural_key: ClassVar[tuple[str, ...]] = ()
    # The sheet's words for a model's error, by (field, code); {column} is the row's value.
    messages: ClassVar[Mapping[tuple[str, str], str]] = {}
    # Where a field's error goes when the sheet leaves its column out (else the row's ID cell).
    fallback: ClassVar[Mapping[str, str]] = {}
    # Model checks that see only stored rows: check() makes them against the workbook too.
    checked_here: ClassVar[frozenset[tuple[str, str]]] = frozenset()

    @property
    def key(self) -> Column:
        return self.columns[0]

    @cached_property
    def _fields(self) -> dict[str, models.Field[Any, Any]]:
        return {f.attname: f for f in self.model._meta.concrete_fields}

    def model_field(self, column: Column) -> models.Field[Any, Any]:
        return self._fields[column.field]

    def _natural_key_columns(self) -> list[Column]:
        attnames = [self.model._meta.get_field(name).attname for name in self.natural_key]  # type: ignore[union-attr]
        return [next(c for c in self.columns if c.field == attname) for attname in attnames]

    # ----------------------------------------------------------------------------- export

    def export_rows(self) -> Iterable[models.Model]:
        manager = self.model._default_manager
        if self.natural_key:
            return manager.order_by(*(c.field for c in self._natural_key_columns()), "pk")
        return manager.order_by("pk")

    def export(self, workbook: Any) -> None:
        worksheet = workbook.create_sheet(self.name)
        worksheet.append([column.name for column in self.columns])
        for obj in self.export_rows():
            values = (getattr(obj, column.field) for column in self.columns)
            row = [
                None if value is None else column.widget.write(value)
                for column, value in zip(self.columns, values, strict=True)
            ]
            worksheet.append(text_row(worksheet, row))

    # ----------------------------------------------------------------------------- read

    def read(self, worksheet: Any, errors: Errors, budget: RowBudget) -> SheetRows | None:
        """The sheet's rows as read from their cells; None if a required column is missing.
        Each row read is taken from ``budget`` (which stops the import past the limit)."""
        budget.declared(worksheet)
        lines = worksheet.iter_rows(values_only=True)
        present = self._read_header(next(lines, ()), errors)
        if present is None:
            return None
        letters = {
            column.name: f"{self.name}!{get_column_letter(index + 1)}"
            for index, column in enumerate(present)
            if column is not None
        }
        rows = []
        for number, values in enumerate(lines, start=2):
            budget.take()
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue
            rows.append(
                self._read_row(Row(number, CellRefs(letters, number)), values, present, errors)
            )
        return SheetRows(self, [c for c in present if c is not None], rows)

    def _read_header(self, header: Sequence[object], errors: Errors) -> list[Column | None] | None:
        known = {column.name: column for column in self.columns}
        present: list[Column | None] = []
        for index, raw in enumerate(header, start=1):
            cell, name = f"{self.name}!{get_column_letter(index)}1", text(raw)
            if name and name not in known:
                errors.add(cell, f"unknown column '{name}' (expected {', '.join(known)})")
            elif name and known[name] in present:
                errors.add(cell, f"column '{name}' appears twice")
            present.append(known[name] if name in known and known[name] not in present else None)
        missing = [c for c in self.columns if c.required and c not in present]
        for column in missing:
            errors.add(f"{self.name}!A1", f"missing required column '{column.name}'")
        return None if missing else present

    def _read_row(
        self, row: Row, values: Sequence[object], present: list[Column | None], errors: Errors
    ) -> Row:
        for index, column in enumerate(present):
            if column is None:
                continue
            cell = row.cells[column.name]
            try:
                value = column.widget.read(values[index] if index < len(values) else None)
            except CellError as exc:
                errors.add(cell, str(exc))
                row.unreadable.add(column.name)
                value = None
            else:
                if column.required and value in (None, ""):
                    errors.add(cell, f"'{column.name}' is required")
            row.values[column.name] = value
        return row

    # ----------------------------------------------------------------------------- validate

    def build(self, data: SheetRows) -> None:
        """A model instance per row: the stored row it updates (or a new one) with its cells;
        an empty cell takes the field's default, a column left out keeps the stored value."""
        keys = [row.values[self.key.name] for row in data.rows if row.values.get(self.key.name)]
        # No ID of their own: matched on the natural key when written.
        stored = {} if self.natural_key else self.model._default_manager.in_bulk(keys)
        for row in data.rows:
            key = row.values.get(self.key.name)
            found = stored.get(key) if key is not None else None
            row.obj = found if found is not None else self.model()
            for column in data.present:
                value = row.values.get(column.name)
                if value in (None, "") and not column.required:
                    value = self.model_field(column).get_default()
                setattr(row.obj, column.field, value)

    def clean(self, data: SheetRows, row: Row, errors: Errors) -> None:
        """The model's own validation of the row, every error at its cell. Left to the
        workbook: the relations (their rows may be in it), uniqueness (across it and the
        database), and the fields of columns the sheet leaves out or that could not be read."""
        checked = {c.field for c in data.present if c.name not in row.unreadable}
        exclude = [
            f.name
            for f in self.model._meta.concrete_fields
            if f.is_relation or f.attname not in checked
        ]
        try:
            # The check constraints are the database's copy of rules clean() states.
            row.obj.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            for name, problems in exc.error_dict.items():
                for problem in problems:
                    self._report(row, name, problem, errors)

    def _report(self, row: Row, name: str, problem: ValidationError, errors: Errors) -> None:
        if (name, problem.code) in self.checked_here:
            return
        cell = self._cell(row, name)
        worded = self.messages.get((name, str(problem.code)))
        if worded is not None:
            values = {column.name: getattr(row.obj, column.field) for column in self.columns}
            errors.add(cell, worded.format_map(values))
            return
        for message in problem:  # the model's words, with their parameters
            errors.add(cell, str(message))

    def _cell(self, row: Row, name: str) -> str:
        """The cell of the field's column, or of its fallback, or else the row's ID cell (an
        error of no field: NON_FIELD_ERRORS)."""
        columns = {self.model_field(c).name: c.name for c in self.columns}
        for candidate in (columns.get(name), self.fallback.get(name)):
            if candidate is not None and candidate in row.cells:
                return row.cells[candidate]
        return row.cells[self.key.name]

    def duplicate_key(self, row: Row) -> object:
        """What no two rows may share (None in it: not compared)."""
        if self.natural_key:
            return tuple(row.values.get(column.name) for column in self._natural_key_columns())
        return row.values.get(self.key.name)

    def check_duplicates(self, data: SheetRows, errors: Errors) -> None:
        first_seen: dict[object, int] = {}
        for row in data.rows:
            value = self.duplicate_key(row)
            if value is None or (isinstance(value, tuple) and None in value):
                continue
            if value in first_seen:
                errors.add(row.cells[self.key.name], f"this row repeats row {first_seen[value]}")
            else:
                first_seen[value] = row.number

    def check(self, data: SheetRows, references: References, errors: Errors) -> None:
        """The sheet's own checks across rows and sheets (its relations are checked for it)."""

    # ----------------------------------------------------------------------------- write

    def write(self, data: SheetRows) -> tuple[int, int]:
        """Upsert the sheet's rows in one statement (INSERT … ON CONFLICT DO UPDATE) of the
        columns it holds. Returns how many rows were created and how many updated."""
        objects = [row.obj for row in data.rows]
        manager = self.model._default_manager
        if self.natural_key:
            unique_fields = list(self.natural_key)
            attnames = [column.field for column in self._natural_key_columns()]
            keys: list[Any] = [tuple(getattr(o, name) for name in attnames) for o in objects]
            stored = set(manager.values_list(*attnames))
        else:
            unique_fields = [self.model_field(self.key).name]
            keys = [o.pk for o in objects]
            stored = set(manager.filter(pk__in=keys).values_list("pk", flat=True))
        names = (self.model_field(column).name for column in data.present)
        update_fields = [name for name in names if name not in unique_fields]
        # bulk_create skips auto_now / auto_now_add: stamp the times save() would.
        now = timezone.now()
        if hasattr(self.model, "updated_at"):
            update_fields.append("updated_at")
            for obj in objects:
                obj.updated_at = now
                obj.created_at = obj.created_at or now
        if objects and update_fields:
            manager.bulk_create(
                objects,
                batch_size=WRITE_BATCH,
                update_conflicts=True,
                unique_fields=unique_fields,
                update_fields=update_fields,
            )
        elif objects:
            manager.bulk_create(objects, batch_size=WRITE_BATCH, ignore_conflicts=True)
        if objects and not self.natural_key and isinstance(self.model._meta.pk, models.AutoField):
            # Rows inserted with their own IDs: move the ID sequence past them, or the next one
            # made in the admin would collide.
            with connection.cursor() as cursor:
                for statement in connection.ops.sequence_reset_sql(no_style(), [self.model]):
                    cursor.execute(statement)
        created = sum(1 for key in keys if key not in stored)
        return created, len(objects) - created
