"""The taxonomy workbook's sheets, one resource each: columns, how rows are matched, the sheet's
words for its models' errors and the checks only the sheet makes. The rules themselves are the
models' (``clean()``, field validators); the references between sheets are the workbook's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from partners.models import DataSource, Destination, DestinationSegment, Partner, ReceiptRecipient
from partners.taxonomy.resource import Column, Errors, Resource, Row, SheetRows
from partners.taxonomy.widgets import (
    BOOLEAN,
    DATE,
    HOST_LIST,
    ID,
    POSITIVE_NUMBER,
    TIME_OF_DAY,
    VERBATIM,
    WHOLE_NUMBER,
    choice,
)
from segments.models import Segment, Trait, unknown_traits_message
from segments.rules import RuleError, parse_segment_rule, segment_rule_sids

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from partners.taxonomy.workbook import References


class Partners(Resource):
    name = "Partners"
    model = Partner
    columns = (
        Column("pid", "pid", ID, required=True),
        Column("slug", "slug", required=True),
        Column("name", "name", required=True),
        Column("contact_email", "contact_email"),
        Column("receipts_enabled", "receipts_enabled", BOOLEAN),
        Column("active", "active", BOOLEAN),
    )

    def check(self, data: SheetRows, references: References, errors: Errors) -> None:
        """A slug is one partner's, in the workbook and among the stored partners it leaves."""
        rewritten = {row.values.get("pid") for row in data.rows}
        stored = Partner.objects.values_list("slug", "pid")
        taken = {slug for slug, pid in stored if pid not in rewritten}
        for row in data.rows:
            slug = row.values.get("slug")
            if not slug:
                continue
            if slug in taken:
                errors.add(row.cells["slug"], f"slug '{slug}' is already used by another partner")
            taken.add(slug)


class DataSources(Resource):
    name = "DataSources"
    model = DataSource
    columns = (
        Column("dpid", "dpid", ID, required=True),
        Column("partner_pid", "partner_id", ID, required=True),
        Column("name", "name", required=True),
        Column("id_type", "id_type", choice(DataSource.IDType.values), required=True),
        Column(
            "inbound_id_type",
            "inbound_id_type",
            choice(DataSource.InboundIDType.values),
            required=True,
        ),
        Column("integration_code", "integration_code"),
        Column("redirect_hosts", "redirect_hosts", HOST_LIST),
        Column("device_id_format", "device_id_format", choice(DataSource.DeviceIDFormat.values)),
        Column("idsync_url_template", "idsync_url_template"),
        Column("active", "active", BOOLEAN),
    )
    messages = {
        ("device_id_format", "needed"): "a global device ID source needs a device_id_format",
        ("device_id_format", "only_device"): (
            "device_id_format is only for the 'device' inbound ID type"
        ),
    }
    fallback = {"device_id_format": "inbound_id_type"}

    def export_rows(self) -> QuerySet[DataSource]:
        return DataSource.objects.filter(partner__isnull=False).order_by("dpid")

    def check(self, data: SheetRows, references: References, errors: Errors) -> None:
        """The global device data sources are the platform's: not in the workbook."""
        dpids = {row.values.get("dpid") for row in data.rows} - {None}
        stored = DataSource.objects.filter(dpid__in=dpids, partner__isnull=True)
        platform = set(stored.values_list("dpid", flat=True))
        for row in data.rows:
            if (dpid := row.values.get("dpid")) in platform:
                errors.add(
                    row.cells["dpid"],
                    f"DPID {dpid} is a global device data source; it cannot be changed here",
                )


class ReceiptRecipients(Resource):
    name = "ReceiptRecipients"
    model = ReceiptRecipient
    columns = (
        Column("partner_pid", "partner_id", ID, required=True),
        Column("email", "email", required=True),
        Column("dpid", "data_source_id", ID),
        Column("enabled", "enabled", BOOLEAN),
    )
    natural_key = ("partner", "email", "data_source")
    messages = {("data_source", "other_partner"): "DPID {dpid} belongs to another partner"}

    def duplicate_key(self, row: Row) -> object:
        email = (row.values.get("email") or "").lower()
        return (row.values.get("partner_pid"), email, row.values.get("dpid"))


class Traits(Resource):
    name = "Traits"
    model = Trait
    columns = (
        Column("sid", "sid", ID, required=True),
        Column("dpid", "data_source_id", ID, required=True),
        Column("name", "name", required=True),
        Column("kind", "kind", choice(Trait.Kind.values), required=True),
        Column("rule", "rule"),
        Column("ttl_days", "ttl_days", WHOLE_NUMBER),
        Column("integration_code", "integration_code"),
    )
    messages = {("rule", "needed"): "a rule-based trait needs a rule"}
    fallback = {"rule": "kind"}

    def check(self, data: SheetRows, references: References, errors: Errors) -> None:
        """A trait is a partner's data source's, never a global device one's."""
        for row in data.rows:
            source = row.refers_to.get("dpid")
            if isinstance(source, DataSource) and source.partner_id is None:
                errors.add(row.cells["dpid"], f"DPID {source.pk} is a global device data source")


class Segments(Resource):
    name = "Segments"
    model = Segment
    columns = (
        Column("sid", "sid", ID, required=True),
        Column("dpid", "data_source_id", ID, required=True),
        Column("name", "name", required=True),
        Column("rule", "rule", required=True),
        Column("status", "status", choice(Segment.Status.values)),
    )
    # Segment.clean() looks for the rule's traits among the stored ones only.
    checked_here = frozenset({("rule", "unknown_traits")})

    def check(self, data: SheetRows, references: References, errors: Errors) -> None:
        """Every trait a rule names exists: stored, or in the Traits sheet."""
        named: list[tuple[Row, set[int]]] = []
        for row in data.rows:
            try:
                rule = row.values.get("rule") or ""
                named.append((row, segment_rule_sids(parse_segment_rule(rule))))
            except RuleError:
                continue  # the rule's own validator said why
        known = references.rows(Trait, set().union(*(sids for _, sids in named)))
        for row, sids in named:
            if missing := sids - known.keys():
                errors.add(row.cells["rule"], unknown_traits_message(missing))


class Destinations(Resource):
    name = "Destinations"
    model = Destination
    columns = (
        Column("id", "id", ID, required=True),
        Column("partner_pid", "partner_id", ID, required=True),
        Column("name", "name", required=True),
        Column("channel_id", "channel_id", ID, required=True),
        Column("folder", "folder"),
        Column("sync_type", "sync_type", choice(Destination.SyncType.values)),
        Column("mode", "mode", choice(Destination.Mode.values)),
        Column("id_column", "id_column", choice(Destination.IDColumn.values)),
        Column("id_dpid", "id_data_source_id", ID),
        Column("pid_alias", "pid_alias"),
        Column("file_name_template", "file_name_template", VERBATIM),
        Column("row_template", "row_template", VERBATIM),
        Column("header_template", "header_template", VERBATIM),
        Column("gzip", "gzip", BOOLEAN),
        Column("max_part_bytes", "max_part_bytes", POSITIVE_NUMBER),
        Column("daily_at_utc", "daily_at", TIME_OF_DAY),
        Column("active", "active", BOOLEAN),
    )
    messages = {
        ("channel", "other_partner"): "channel {channel_id} belongs to another partner",
        ("id_data_source", "needed"): "writing DPUUIDs needs the id_dpid of their data source",
        ("id_data_source", "other_partner"): (
            "DPID {id_dpid} is not a data source of PID {partner_pid}"
        ),
    }
    fallback = {"id_data_source": "id_column"}


class DestinationSegments(Resource):
    name = "DestinationSegments"
    model = DestinationSegment
    columns = (
        Column("destination_id", "destination_id", ID, required=True),
        Column("sid", "segment_id", ID, required=True),
        Column("value", "value", required=True),
        Column("start_date", "start_date", DATE, required=True),
        Column("end_date", "end_date", DATE),
    )
    natural_key = ("destination", "segment")
