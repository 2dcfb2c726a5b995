"""The taxonomy workbook: the whole partner/data-source/trait/segment setup as one XLSX.

Export writes every sheet with every column. Import is an upsert keyed by the IDs: it reads
every row, validates every cell (and the references between sheets and to what is already
stored), and either applies everything in one transaction or changes nothing and reports every
bad cell as ``Sheet!CellRef: message``. Rows that are not in the workbook are left alone, and a
column left out of a sheet keeps its stored value (new rows get the default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.core.management.color import no_style
from django.db import connection, models, transaction
from django.utils import timezone
from openpyxl import Workbook, load_workbook
from openpyxl.utils import get_column_letter
from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

from partners.models import (
    DataSource,
    Destination,
    DestinationSegment,
    InboundChannel,
    Partner,
    ReceiptRecipient,
)
from partners.xlsx import text_row
from segments.models import Segment, Trait, unknown_traits_message
from segments.rules import RuleError, parse_segment_rule, segment_rule_sids
from segments.services import segments_rebuild_request


class CellError(ValueError):
    """A cell value that cannot be read; the message is shown to staff as it is."""


# --------------------------------------------------------------------------- cell readers


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _whole_number(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise CellError(f"'{value}' is not a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise CellError(f"'{value}' is not a whole number")
    if number < 0:
        raise CellError(f"'{value}' must not be negative")
    return number


def _positive_id(value: object) -> int | None:
    number = _whole_number(value)
    if number == 0:
        raise CellError("an ID must be a positive whole number")
    return number


_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}


def _boolean(value: object) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CellError(f"'{value}' is not TRUE or FALSE")


def _choice(choices: type[models.TextChoices]) -> Callable[[object], str | None]:
    allowed = [str(c) for c in choices.values if c]

    def read(value: object) -> str | None:
        text = _text(value)
        if not text:
            return None
        if text.lower() not in allowed:
            raise CellError(f"'{text}' is not one of {', '.join(allowed)}")
        return text.lower()

    return read


def _verbatim(value: object) -> str:
    """Text kept as typed (a template's leading or trailing space is part of it)."""
    return value if isinstance(value, str) else _text(value)


def _positive_number(value: object) -> int | None:
    number = _whole_number(value)
    if number == 0:
        raise CellError("must be a positive whole number")
    return number


def _time_of_day(value: object) -> time | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.time()
    if isinstance(value, time):
        return value
    if isinstance(value, float) and 0 <= value < 1:  # a spreadsheet time: a share of a day
        return (datetime.min + timedelta(days=value)).time().replace(microsecond=0)
    text = _text(value)
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise CellError(f"'{text}' is not a time of day (HH:MM)") from None


def _date(value: object) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _text(value)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CellError(f"'{text}' is not a date (YYYY-MM-DD)") from None


def _host_list(value: object) -> list[str]:
    return [host.strip() for host in _text(value).split(",") if host.strip()]


# --------------------------------------------------------------------------- sheet layout


@dataclass(frozen=True)
class Column:
    name: str
    field: str  # model attribute set from this column
    read: Callable[[object], Any] = _text
    required: bool = False
    write: Callable[[Any], object] = lambda value: value


@dataclass(frozen=True)
class Sheet:
    name: str
    model: type[models.Model]
    columns: tuple[Column, ...]
    # Rows with no ID of their own are matched on these model fields; else on the first column.
    natural_key: tuple[str, ...] = ()

    @property
    def key(self) -> Column:
        return self.columns[0]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


PARTNERS = Sheet(
    "Partners",
    Partner,
    (
        Column("pid", "pid", _positive_id, required=True),
        Column("slug", "slug", required=True),
        Column("name", "name", required=True),
        Column("contact_email", "contact_email"),
        Column("receipts_enabled", "receipts_enabled", _boolean),
        Column("active", "active", _boolean),
    ),
)
DATA_SOURCES = Sheet(
    "DataSources",
    DataSource,
    (
        Column("dpid", "dpid", _positive_id, required=True),
        Column("partner_pid", "partner_id", _positive_id, required=True),
        Column("name", "name", required=True),
        Column("id_type", "id_type", _choice(DataSource.IDType), required=True),
        Column(
            "inbound_id_type", "inbound_id_type", _choice(DataSource.InboundIDType), required=True
        ),
        Column("integration_code", "integration_code"),
        Column("redirect_hosts", "redirect_hosts", _host_list, write=",".join),
        Column("device_id_format", "device_id_format", _choice(DataSource.DeviceIDFormat)),
        Column("idsync_url_template", "idsync_url_template"),
        Column("active", "active", _boolean),
    ),
)
RECEIPT_RECIPIENTS = Sheet(
    "ReceiptRecipients",
    ReceiptRecipient,
    (
        Column("partner_pid", "partner_id", _positive_id, required=True),
        Column("email", "email", required=True),
        Column("dpid", "data_source_id", _positive_id),
        Column("enabled", "enabled", _boolean),
    ),
    natural_key=("partner", "email", "data_source"),
)
TRAITS = Sheet(
    "Traits",
    Trait,
    (
        Column("sid", "sid", _positive_id, required=True),
        Column("dpid", "data_source_id", _positive_id, required=True),
        Column("name", "name", required=True),
        Column("kind", "kind", _choice(Trait.Kind), required=True),
        Column("rule", "rule"),
        Column("ttl_days", "ttl_days", _whole_number),
        Column("integration_code", "integration_code"),
    ),
)
SEGMENTS = Sheet(
    "Segments",
    Segment,
    (
        Column("sid", "sid", _positive_id, required=True),
        Column("dpid", "data_source_id", _positive_id, required=True),
        Column("name", "name", required=True),
        Column("rule", "rule", required=True),
        Column("status", "status", _choice(Segment.Status)),
    ),
)
DESTINATIONS = Sheet(
    "Destinations",
    Destination,
    (
        Column("id", "id", _positive_id, required=True),
        Column("partner_pid", "partner_id", _positive_id, required=True),
        Column("name", "name", required=True),
        Column("channel_id", "channel_id", _positive_id, required=True),
        Column("folder", "folder"),
        Column("sync_type", "sync_type", _choice(Destination.SyncType)),
        Column("mode", "mode", _choice(Destination.Mode)),
        Column("id_column", "id_column", _choice(Destination.IDColumn)),
        Column("id_dpid", "id_data_source_id", _positive_id),
        Column("pid_alias", "pid_alias"),
        Column("file_name_template", "file_name_template", _verbatim),
        Column("row_template", "row_template", _verbatim),
        Column("header_template", "header_template", _verbatim),
        Column("gzip", "gzip", _boolean),
        Column("max_part_bytes", "max_part_bytes", _positive_number),
        Column("daily_at_utc", "daily_at", _time_of_day, write=lambda t: t.strftime("%H:%M")),
        Column("active", "active", _boolean),
    ),
)
DESTINATION_SEGMENTS = Sheet(
    "DestinationSegments",
    DestinationSegment,
    (
        Column("destination_id", "destination_id", _positive_id, required=True),
        Column("sid", "segment_id", _positive_id, required=True),
        Column("value", "value", required=True),
        Column("start_date", "start_date", _date, required=True, write=date.isoformat),
        Column("end_date", "end_date", _date, write=date.isoformat),
    ),
    natural_key=("destination", "segment"),
)
SHEETS: tuple[Sheet, ...] = (
    PARTNERS,
    DATA_SOURCES,
    RECEIPT_RECIPIENTS,
    TRAITS,
    SEGMENTS,
    DESTINATIONS,
    DESTINATION_SEGMENTS,
)


# --------------------------------------------------------------------------- export


def _export_rows(sheet: Sheet) -> Iterable[models.Model]:
    if sheet is DATA_SOURCES:
        return DataSource.objects.filter(partner__isnull=False).order_by("dpid")
    if sheet.natural_key:
        return sheet.model._default_manager.order_by(*_natural_key_columns(sheet), "pk")
    return sheet.model._default_manager.order_by("pk")


def _natural_key_columns(sheet: Sheet) -> list[str]:
    fields = (sheet.model._meta.get_field(name) for name in sheet.natural_key)
    return [field.attname for field in fields if isinstance(field, models.Field)]


def _may(user: Any, sheet: Sheet, *actions: str) -> bool:
    """Whether ``user`` holds the admin's permission for one of ``actions`` on the sheet's
    model (no user: a management command, run by whoever runs the server)."""
    if user is None:
        return True
    opts = sheet.model._meta
    return any(user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}") for action in actions)


def sheets_viewable(user: Any) -> list[Sheet]:
    """The sheets ``user`` may export: those whose rows the admin shows them (the change
    permission includes viewing, as in the admin)."""
    return [sheet for sheet in SHEETS if _may(user, sheet, "view", "change")]


def sheets_importable(user: Any) -> list[Sheet]:
    """The sheets ``user`` may import: an import adds and changes rows, so both are needed."""
    return [sheet for sheet in SHEETS if _may(user, sheet, "add") and _may(user, sheet, "change")]


def taxonomy_export(*, output: IO[bytes], user: Any = None) -> None:
    """Write the taxonomy (global device data sources excepted) to ``output``: every sheet
    ``user`` may view."""
    workbook = Workbook(write_only=True)
    for sheet in sheets_viewable(user):
        worksheet = workbook.create_sheet(sheet.name)
        worksheet.append([column.name for column in sheet.columns])
        for obj in _export_rows(sheet):
            row = []
            for column in sheet.columns:
                value = getattr(obj, column.field)
                row.append(None if value is None else column.write(value))
            worksheet.append(text_row(worksheet, row))
    workbook.save(output)


# --------------------------------------------------------------------------- import


@dataclass
class Row:
    number: int  # the spreadsheet row number
    values: dict[str, Any] = field(default_factory=dict)  # column name -> read value
    cells: dict[str, str] = field(default_factory=dict)  # column name -> "Sheet!B7"
    unreadable: set[str] = field(default_factory=set)  # columns whose cell was reported
    obj: Any = None


@dataclass
class SheetRows:
    sheet: Sheet
    present: list[Column]
    header_cells: dict[str, str]
    rows: list[Row]

    def has(self, column: str) -> bool:
        return any(c.name == column for c in self.present)


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
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Errors:
    """Problems found so far, reported in reading order: sheet, then row, then column."""

    def __init__(self) -> None:
        self._found: list[tuple[tuple[int, int, int], str]] = []

    def add(self, cell: str, message: str) -> None:
        sheet, _, coordinate = cell.partition("!")
        letters, row = coordinate_from_string(coordinate)
        rank = next((i for i, s in enumerate(SHEETS) if s.name == sheet), len(SHEETS))
        self._found.append(((rank, row, column_index_from_string(letters)), f"{cell}: {message}"))

    @property
    def lines(self) -> list[str]:
        return [line for _, line in sorted(self._found, key=lambda found: found[0])]


def _read_sheet(worksheet: Any, sheet: Sheet, errors: _Errors) -> SheetRows | None:
    rows_iter = worksheet.iter_rows(values_only=True)
    header = next(rows_iter, None) or ()
    known = {column.name: column for column in sheet.columns}
    present: list[Column | None] = []
    header_cells: dict[str, str] = {}
    for index, raw in enumerate(header, start=1):
        cell = f"{sheet.name}!{get_column_letter(index)}1"
        name = _text(raw)
        if not name:
            present.append(None)
            continue
        if name not in known:
            errors.add(cell, f"unknown column '{name}' (expected {', '.join(known)})")
            present.append(None)
        elif name in header_cells:
            errors.add(cell, f"column '{name}' appears twice")
            present.append(None)
        else:
            header_cells[name] = cell
            present.append(known[name])
    for column in sheet.columns:
        if column.required and column.name not in header_cells:
            errors.add(f"{sheet.name}!A1", f"missing required column '{column.name}'")
    if any(column.required and column.name not in header_cells for column in sheet.columns):
        return None

    rows: list[Row] = []
    for number, values in enumerate(rows_iter, start=2):
        if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            continue
        row = Row(number)
        for index, maybe_column in enumerate(present):
            if maybe_column is None:
                continue
            column = maybe_column
            cell = f"{sheet.name}!{get_column_letter(index + 1)}{number}"
            row.cells[column.name] = cell
            raw = values[index] if index < len(values) else None
            try:
                row.values[column.name] = column.read(raw)
            except CellError as exc:
                errors.add(cell, str(exc))
                row.values[column.name] = None
                row.unreadable.add(column.name)
                continue
            if column.required and row.values[column.name] in (None, ""):
                errors.add(cell, f"'{column.name}' is required")
        rows.append(row)
    return SheetRows(sheet, [c for c in present if c is not None], header_cells, rows)


def _check_duplicates(data: SheetRows, key: Callable[[Row], object], errors: _Errors) -> None:
    first_seen: dict[object, int] = {}
    name = data.sheet.key.name
    for row in data.rows:
        value = key(row)
        if value is None or (isinstance(value, tuple) and None in value):
            continue
        if value in first_seen:
            errors.add(row.cells[name], f"this row repeats row {first_seen[value]}")
        else:
            first_seen[value] = row.number


def _build_objects(data: SheetRows, existing: dict[Any, models.Model], errors: _Errors) -> None:
    """Make a model instance per row (stored values + the row's cells) and validate fields."""
    sheet = data.sheet
    by_field = {column.field: column for column in data.present}
    for row in data.rows:
        key = row.values.get(sheet.key.name)
        stored = existing.get(key) if key is not None else None
        obj = stored if stored is not None else sheet.model()
        for column in data.present:
            value = row.values.get(column.name)
            if value in (None, "") and not column.required:  # an empty cell: the default
                model_field = sheet.model._meta.get_field(column.field.removesuffix("_id"))
                assert isinstance(model_field, models.Field)
                value = model_field.get_default()
            setattr(obj, column.field, value)
        row.obj = obj
        # Relations are checked below against the workbook *and* the database; everything
        # else goes through the model's own field validation (lengths, choices, validators).
        exclude = [
            f.name
            for f in sheet.model._meta.concrete_fields
            if f.is_relation or f.attname not in by_field
        ]
        try:
            obj.clean_fields(exclude=exclude)
        except ValidationError as exc:
            for field_name, messages in exc.message_dict.items():
                failed = by_field.get(field_name) or by_field.get(f"{field_name}_id")
                if failed and failed.name in row.unreadable:
                    continue  # already reported when the cell was read
                cell = row.cells[failed.name] if failed else row.cells[sheet.key.name]
                for message in messages:
                    errors.add(cell, message)


def _validate(sheets: dict[str, SheetRows], errors: _Errors) -> None:
    partners = sheets.get(PARTNERS.name)
    sources = sheets.get(DATA_SOURCES.name)
    recipients = sheets.get(RECEIPT_RECIPIENTS.name)
    traits = sheets.get(TRAITS.name)
    segments = sheets.get(SEGMENTS.name)
    destinations = sheets.get(DESTINATIONS.name)
    mappings = sheets.get(DESTINATION_SEGMENTS.name)

    # Partners: unique PID and slug, across the workbook and what is stored.
    partner_pids = set(Partner.objects.values_list("pid", flat=True))
    if partners:
        _check_duplicates(partners, lambda r: r.values.get("pid"), errors)
        sheet_pids = {row.values.get("pid") for row in partners.rows}
        # Slugs of stored partners that the workbook does not rewrite.
        slugs = {
            slug: pid
            for slug, pid in Partner.objects.values_list("slug", "pid")
            if pid not in sheet_pids
        }
        sheet_slugs: dict[str, int] = {}
        for row in partners.rows:
            slug = row.values.get("slug")
            if not slug:
                continue
            if slug in slugs or slug in sheet_slugs:
                errors.add(row.cells["slug"], f"slug '{slug}' is already used by another partner")
            sheet_slugs[slug] = row.number
            partner_pids.add(row.values["pid"])

    # Data sources: owner exists; global device sources are the platform's own.
    owners: dict[int, int | None] = dict(DataSource.objects.values_list("dpid", "partner_id"))
    global_dpids = {dpid for dpid, owner in owners.items() if owner is None}
    if sources:
        _check_duplicates(sources, lambda r: r.values.get("dpid"), errors)
        for row in sources.rows:
            dpid, pid = row.values.get("dpid"), row.values.get("partner_pid")
            if dpid in global_dpids:
                errors.add(
                    row.cells["dpid"],
                    f"DPID {dpid} is a global device data source; it cannot be changed here",
                )
            if pid is not None and pid not in partner_pids:
                errors.add(row.cells["partner_pid"], f"unknown partner PID {pid}")
            inbound = row.values.get("inbound_id_type")
            device_format = getattr(row.obj, "device_id_format", "")
            where = row.cells.get("device_id_format", row.cells["inbound_id_type"])
            if inbound == "device" and not device_format:
                errors.add(where, "a global device ID source needs a device_id_format")
            if inbound and inbound != "device" and device_format:
                errors.add(where, "device_id_format is only for the 'device' inbound ID type")
            if dpid is not None:
                owners[dpid] = pid

    # Receipt recipients: the partner exists, a narrowing data source is the partner's own.
    if recipients:
        _check_duplicates(
            recipients,
            lambda r: (
                r.values.get("partner_pid"),
                (r.values.get("email") or "").lower(),
                r.values.get("dpid"),
            ),
            errors,
        )
        for row in recipients.rows:
            pid, dpid = row.values.get("partner_pid"), row.values.get("dpid")
            if pid is not None and pid not in partner_pids:
                errors.add(row.cells["partner_pid"], f"unknown partner PID {pid}")
            if dpid is not None:
                if dpid not in owners:
                    errors.add(row.cells["dpid"], f"unknown data source DPID {dpid}")
                elif owners[dpid] != pid:
                    errors.add(row.cells["dpid"], f"DPID {dpid} belongs to another partner")

    # Traits: a partner's data source; a rule-based trait has a rule.
    trait_sids = set(Trait.objects.values_list("sid", flat=True))
    if traits:
        _check_duplicates(traits, lambda r: r.values.get("sid"), errors)
        for row in traits.rows:
            dpid = row.values.get("dpid")
            if dpid is not None and dpid not in owners:
                errors.add(row.cells["dpid"], f"unknown data source DPID {dpid}")
            elif dpid is not None and owners[dpid] is None:
                errors.add(row.cells["dpid"], f"DPID {dpid} is a global device data source")
            if row.values.get("kind") == Trait.Kind.RULE_BASED and not getattr(row.obj, "rule", ""):
                errors.add(
                    row.cells.get("rule", row.cells["kind"]), "a rule-based trait needs a rule"
                )
            if row.values.get("sid") is not None:
                trait_sids.add(row.values["sid"])

    # Segments: a known data source; every trait in the rule exists (stored or in Traits).
    if segments:
        _check_duplicates(segments, lambda r: r.values.get("sid"), errors)
        for row in segments.rows:
            dpid = row.values.get("dpid")
            if dpid is not None and dpid not in owners:
                errors.add(row.cells["dpid"], f"unknown data source DPID {dpid}")
            try:
                sids = segment_rule_sids(parse_segment_rule(row.values.get("rule") or ""))
            except RuleError:
                continue  # reported by the field validator
            missing = sids - trait_sids
            if missing:
                errors.add(row.cells["rule"], unknown_traits_message(missing))

    # Destinations: the partner's own channel and data source; DPUUIDs need their source.
    destination_ids = set(Destination.objects.values_list("id", flat=True))
    if destinations:
        _check_duplicates(destinations, lambda r: r.values.get("id"), errors)
        channels = dict(InboundChannel.objects.values_list("id", "partner_id"))
        for row in destinations.rows:
            pid, channel = row.values.get("partner_pid"), row.values.get("channel_id")
            if pid is not None and pid not in partner_pids:
                errors.add(row.cells["partner_pid"], f"unknown partner PID {pid}")
            if channel is not None and channel not in channels:
                errors.add(row.cells["channel_id"], f"unknown channel {channel}")
            elif channel is not None and pid is not None and channels[channel] != pid:
                errors.add(row.cells["channel_id"], f"channel {channel} belongs to another partner")
            dpid = row.values.get("id_dpid")
            if dpid is not None and dpid not in owners:
                errors.add(row.cells["id_dpid"], f"unknown data source DPID {dpid}")
            elif dpid is not None and pid is not None and owners[dpid] != pid:
                errors.add(row.cells["id_dpid"], f"DPID {dpid} is not a data source of PID {pid}")
            if row.obj.id_column == Destination.IDColumn.DPUUID and not row.obj.id_data_source_id:
                where = row.cells.get("id_dpid", row.cells.get("id_column", row.cells["id"]))
                errors.add(where, "writing DPUUIDs needs the id_dpid of their data source")
            if row.values.get("id") is not None:
                destination_ids.add(row.values["id"])

    # Destination segments: a known destination and segment, the end not before the start.
    if mappings:
        _check_duplicates(
            mappings, lambda r: (r.values.get("destination_id"), r.values.get("sid")), errors
        )
        segment_sids = set(Segment.objects.values_list("sid", flat=True))
        segment_sids |= {row.values["sid"] for row in (segments.rows if segments else [])}
        for row in mappings.rows:
            destination, sid = row.values.get("destination_id"), row.values.get("sid")
            if destination is not None and destination not in destination_ids:
                errors.add(row.cells["destination_id"], f"unknown destination {destination}")
            if sid is not None and sid not in segment_sids:
                errors.add(row.cells["sid"], f"unknown segment SID {sid}")
            start, end = row.values.get("start_date"), row.values.get("end_date")
            if start and end and end < start:
                errors.add(row.cells["end_date"], "the end date is before the start date")


def _existing(data: SheetRows) -> dict[Any, models.Model]:
    sheet = data.sheet
    if sheet.natural_key:
        return {}  # no ID of their own: matched on the natural key when written
    keys = [row.values[sheet.key.name] for row in data.rows if row.values.get(sheet.key.name)]
    return sheet.model._default_manager.in_bulk(keys)


def _write(data: SheetRows, result: TaxonomyImportResult) -> None:
    """Upsert the sheet's rows in one statement (INSERT … ON CONFLICT DO UPDATE)."""
    sheet = data.sheet
    objects = [row.obj for row in data.rows]
    manager = sheet.model._default_manager
    if sheet.natural_key:
        unique_fields = list(sheet.natural_key)
        attnames = _natural_key_columns(sheet)
        keys: list[Any] = [tuple(getattr(o, name) for name in attnames) for o in objects]
        stored = set(manager.values_list(*attnames))
    else:
        unique_fields = [sheet.key.field]
        keys = [o.pk for o in objects]
        stored = set(manager.filter(pk__in=keys).values_list("pk", flat=True))
    update_fields = [
        name
        for name in (c.field.removesuffix("_id") for c in data.present)
        if name not in unique_fields
    ]
    # bulk_create skips auto_now / auto_now_add: stamp the times save() would.
    now = timezone.now()
    if hasattr(sheet.model, "updated_at"):
        update_fields.append("updated_at")
        for obj in objects:
            obj.updated_at = now
            obj.created_at = obj.created_at or now
    if objects and update_fields:
        manager.bulk_create(
            objects, update_conflicts=True, unique_fields=unique_fields, update_fields=update_fields
        )
    elif objects:
        manager.bulk_create(objects, ignore_conflicts=True)
    if objects and not sheet.natural_key and isinstance(sheet.model._meta.pk, models.AutoField):
        # Rows inserted with their own IDs: move the ID sequence past them, or the next one
        # made in the admin would collide.
        with connection.cursor() as cursor:
            for statement in connection.ops.sequence_reset_sql(no_style(), [sheet.model]):
                cursor.execute(statement)
    created = sum(1 for key in keys if key not in stored)
    result.created[sheet.name] = created
    result.updated[sheet.name] = len(objects) - created


def taxonomy_import(*, workbook: IO[bytes], user: Any = None) -> TaxonomyImportResult:
    """Apply a taxonomy workbook, all or nothing. Raises :class:`TaxonomyImportError`,
    also when it holds a sheet that ``user`` may not add to and change."""
    errors = _Errors()
    try:
        book = load_workbook(workbook, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a file that is not XLSX
        raise TaxonomyImportError([f"the file is not an XLSX workbook ({exc})"]) from exc

    known = {sheet.name: sheet for sheet in SHEETS}
    permitted = sheets_importable(user)
    sheets: dict[str, SheetRows] = {}
    try:
        for worksheet in book.worksheets:
            sheet = known.get(worksheet.title)
            if sheet is None:
                errors.add(
                    f"{worksheet.title}!A1",
                    f"unknown sheet '{worksheet.title}' (expected {', '.join(known)})",
                )
                continue
            if sheet not in permitted:
                plural = sheet.model._meta.verbose_name_plural
                errors.add(
                    f"{worksheet.title}!A1",
                    f"you may not add or change {plural}: remove this sheet, or ask for "
                    "the add and change permissions",
                )
                continue
            data = _read_sheet(worksheet, sheet, errors)
            if data is not None:
                sheets[sheet.name] = data
    finally:
        book.close()

    for data in sheets.values():
        _build_objects(data, _existing(data), errors)
    _validate(sheets, errors)
    if errors.lines:
        raise TaxonomyImportError(errors.lines)

    result = TaxonomyImportResult()
    with transaction.atomic():
        for sheet in SHEETS:  # in dependency order
            if sheet.name in sheets:
                _write(sheets[sheet.name], result)
        if SEGMENTS.name in sheets:  # rules or statuses may have changed
            segments_rebuild_request(
                sids=[row.obj.pk for row in sheets[SEGMENTS.name].rows if row.obj is not None]
            )
    return result
