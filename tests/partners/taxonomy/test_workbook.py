from __future__ import annotations

import io
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from openpyxl import load_workbook

from partners.models import (
    DataSource,
    Destination,
    DestinationSegment,
    InboundChannel,
    Partner,
    ReceiptRecipient,
)
from partners.outbound.templates import DEFAULT_ROW
from partners.taxonomy import TaxonomyImportError, taxonomy_export, taxonomy_import
from portal.demo import DEMO_TAXONOMY, demo_workbook, workbook_bytes
from segments.models import Segment, Trait

pytestmark = pytest.mark.django_db


def exported() -> dict[str, list[tuple[Any, ...]]]:
    buffer = io.BytesIO()
    taxonomy_export(output=buffer)
    buffer.seek(0)
    book = load_workbook(buffer, read_only=True)
    return {ws.title: list(ws.iter_rows(values_only=True)) for ws in book.worksheets}


def taxonomy_state() -> list[Any]:
    return [
        list(Partner.objects.order_by("pid").values()),
        list(DataSource.objects.order_by("dpid").values()),
        list(ReceiptRecipient.objects.order_by("id").values()),
        list(Trait.objects.order_by("sid").values()),
        list(Segment.objects.order_by("sid").values()),
        list(Destination.objects.order_by("id").values()),
        list(DestinationSegment.objects.order_by("id").values()),
    ]


def test_import_creates_the_whole_taxonomy() -> None:
    result = taxonomy_import(workbook=demo_workbook())
    assert result.created == {
        "Partners": 1,
        "DataSources": 2,
        "ReceiptRecipients": 2,
        "Traits": 5,
        "Segments": 3,
    }
    partner = Partner.objects.get(pid=1001)
    assert (partner.slug, partner.name, partner.receipts_enabled) == ("acme", "Acme Data", True)
    source = DataSource.objects.get(dpid=21)
    assert source.partner == partner
    assert source.redirect_hosts == ["acme.example", "*.acme.example"]
    assert source.inbound_id_type == "dpuuid"
    assert ReceiptRecipient.objects.get(email="crm-team@acme.example").data_source_id == 22
    assert Trait.objects.get(sid=12).ttl_days == 60
    assert Trait.objects.get(sid=10).rule == ""
    assert Segment.objects.get(sid=502).rule == "(11T OR 13T) AND NOT 90T"


def test_round_trip_export_import_into_an_empty_database_export() -> None:
    taxonomy_import(workbook=demo_workbook())
    first = exported()
    assert first["Partners"][0] == (
        "pid",
        "slug",
        "name",
        "contact_email",
        "receipts_enabled",
        "active",
    )
    assert len(first["Traits"]) == 1 + 5
    buffer = io.BytesIO()
    taxonomy_export(output=buffer)

    for model in (Segment, Trait, ReceiptRecipient):
        model.objects.all().delete()
    DataSource.objects.filter(partner__isnull=False).delete()
    Partner.objects.all().delete()
    assert exported()["Partners"] == [first["Partners"][0]]

    buffer.seek(0)
    taxonomy_import(workbook=buffer)
    assert exported() == first


def test_import_again_updates_and_changes_nothing_else() -> None:
    taxonomy_import(workbook=demo_workbook())
    before = exported()
    result = taxonomy_import(workbook=demo_workbook())
    assert result.created == dict.fromkeys(result.created, 0)
    assert result.updated["Traits"] == 5
    assert exported() == before


def test_three_bad_cells_are_all_reported_and_nothing_changes() -> None:
    taxonomy_import(workbook=demo_workbook())
    before = taxonomy_state()
    sheets = {
        "Traits": [
            ["sid", "dpid", "name", "kind", "rule", "ttl_days"],
            [10, 21, "Renamed", "onboarded", "", 30],  # valid, but must not be applied
            [20, 21, "Bad rule", "onboarded", "age =~ 5", 120],
            [21, 21, "Bad TTL", "onboarded", "", "soon"],
        ],
        "Segments": [
            ["sid", "dpid", "name", "rule", "status"],
            [600, 21, "Bad status", "10T", "archived"],
        ],
    }
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook_bytes(sheets))
    assert caught.value.errors == [
        "Traits!E3: unknown operator '=~' at column 5",
        "Traits!F4: 'soon' is not a whole number",
        "Segments!E2: 'archived' is not one of active, paused, deleted",
    ]
    assert taxonomy_state() == before


def test_references_are_checked_against_the_workbook_and_the_database() -> None:
    sheets = {
        "Partners": [["pid", "slug", "name"], [7, "seven", "Seven"]],
        "DataSources": [
            ["dpid", "partner_pid", "name", "id_type", "inbound_id_type"],
            [70, 7, "Seven web", "cookie", "dpuuid"],  # partner from this workbook: fine
            [71, 8, "Nobody's", "cookie", "dpuuid"],
            [20914, 7, "Hijack GAID", "device", "device"],
        ],
        "ReceiptRecipients": [
            ["partner_pid", "email", "dpid"],
            [7, "ops@seven.example", 70],
            [7, "ops@seven.example", 70],
            [7, "not-an-email", 99],
        ],
        "Traits": [
            ["sid", "dpid", "name", "kind", "rule"],
            [1, 70, "One", "onboarded", ""],
            [2, 72, "Two", "rule_based", ""],
            [1, 70, "One again", "onboarded", ""],
        ],
        "Segments": [["sid", "dpid", "name", "rule"], [5, 70, "Seg", "1T AND 3T AND 4T"]],
    }
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook_bytes(sheets))
    assert caught.value.errors == [
        "DataSources!B3: unknown partner PID 8",
        "DataSources!A4: DPID 20914 is a global device data source; it cannot be changed here",
        "ReceiptRecipients!A3: this row repeats row 2",
        "ReceiptRecipients!B4: Enter a valid email address.",
        "ReceiptRecipients!C4: unknown data source DPID 99",
        "Traits!B3: unknown data source DPID 72",
        "Traits!E3: a rule-based trait needs a rule",
        "Traits!A4: this row repeats row 2",
        "Segments!D2: unknown traits 3T, 4T",
    ]
    assert not Partner.objects.exists()


def test_unknown_sheets_and_columns_and_missing_required_columns() -> None:
    sheets = {
        "Partners": [["pid", "slug", "name", "colour"], [1, "a", "A", "red"]],
        "Traits": [["sid", "name", "kind"], [1, "x", "onboarded"]],
        "Notes": [["anything"]],
    }
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook_bytes(sheets))
    assert caught.value.errors == [
        "Partners!D1: unknown column 'colour' (expected pid, slug, name, contact_email, "
        "receipts_enabled, active)",
        "Traits!A1: missing required column 'dpid'",
        "Notes!A1: unknown sheet 'Notes' (expected Partners, DataSources, ReceiptRecipients, "
        "Traits, Segments, Destinations, DestinationSegments)",
    ]


def test_a_missing_optional_column_keeps_the_stored_value() -> None:
    taxonomy_import(workbook=demo_workbook())
    sheets = {
        "Traits": [
            ["sid", "dpid", "name", "kind"],
            [12, 21, "Age 30-49 (renamed)", "onboarded"],
            [14, 21, "New trait", "onboarded"],
        ]
    }
    result = taxonomy_import(workbook=workbook_bytes(sheets))
    assert (result.created["Traits"], result.updated["Traits"]) == (1, 1)
    renamed = Trait.objects.get(sid=12)
    assert renamed.name == "Age 30-49 (renamed)"
    assert (renamed.rule, renamed.ttl_days) == ("age >= 30 AND age < 50", 60)
    assert Trait.objects.get(sid=14).ttl_days == 120  # the default for a new row


def test_a_segment_may_use_traits_stored_before() -> None:
    taxonomy_import(workbook=demo_workbook())
    sheets = {"Segments": [["sid", "dpid", "name", "rule"], [700, 21, "Stored traits", "10T"]]}
    taxonomy_import(workbook=workbook_bytes(sheets))
    assert Segment.objects.get(sid=700).status == "active"


def test_a_file_that_is_not_a_workbook() -> None:
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=io.BytesIO(b"pid\tslug\n1\ta\n"))
    assert caught.value.errors[0].startswith("the file is not an XLSX workbook")


def test_slug_clash_with_a_stored_partner() -> None:
    taxonomy_import(workbook=demo_workbook())
    sheets = {"Partners": [["pid", "slug", "name"], [2002, "acme", "Copycat"]]}
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook_bytes(sheets))
    assert caught.value.errors == ["Partners!B2: slug 'acme' is already used by another partner"]


def test_commands_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.xlsx"
    path.write_bytes(demo_workbook().getvalue())
    out = io.StringIO()
    call_command("taxonomy_import", str(path), stdout=out)
    assert "Traits: 5 created, 0 updated" in out.getvalue()

    exported_path = tmp_path / "exported.xlsx"
    call_command("taxonomy_export", str(exported_path), stdout=io.StringIO())
    book = load_workbook(exported_path, read_only=True)
    assert [ws.title for ws in book.worksheets] == [
        *DEMO_TAXONOMY,
        "Destinations",  # the demo's destination is made with its channel (portal.demo)
        "DestinationSegments",
    ]
    assert [row[0] for row in book["Traits"].iter_rows(min_row=2, values_only=True)] == [
        10,
        11,
        12,
        13,
        90,
    ]


def test_import_command_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.xlsx"
    sheets = {"Partners": [["pid", "slug", "name"], ["x", "bad slug!", "A"]]}
    path.write_bytes(workbook_bytes(sheets).getvalue())
    err = io.StringIO()
    with pytest.raises(CommandError, match="2 problem"):
        call_command("taxonomy_import", str(path), stderr=err)
    assert err.getvalue().splitlines() == [
        "Partners!A2: 'x' is not a whole number",
        "Partners!B2: Enter a valid “slug” consisting of letters, numbers, underscores or hyphens.",
    ]


DESTINATION_COLUMNS = [
    "id",
    "partner_pid",
    "name",
    "channel_id",
    "folder",
    "sync_type",
    "mode",
    "id_column",
    "id_dpid",
    "pid_alias",
    "file_name_template",
    "row_template",
    "header_template",
    "gzip",
    "max_part_bytes",
    "daily_at_utc",
    "active",
]


def _channel(pid: int = 1001, name: str = "Acme bucket") -> InboundChannel:
    return InboundChannel.objects.create(
        partner_id=pid, name=name, kind="local", prefix="/srv/exchange"
    )


def test_destinations_and_their_segments_round_trip() -> None:
    taxonomy_import(workbook=demo_workbook())
    channel = _channel()
    sheets = {
        "Destinations": [
            DESTINATION_COLUMNS,
            [
                40,
                1001,
                "Acme daily",
                channel.pk,
                "to-acme",
                "ftp",
                "iter",
                "dpuuid",
                21,
                "acme",
                "<SYNC_TYPE>_<ORDER_ID>_<TIMESTAMP>SPLITNUM.sync",
                '<DP_UUID><TAB><SEGMENT_LIST:{s|<s.alias>}; separator=","> ',  # a trailing space
                "",
                True,
                50_000_000,
                "06:30",
                True,
            ],
            [41, 1001, "Acme weekly", channel.pk],  # every other column: the defaults
        ],
        "DestinationSegments": [
            ["destination_id", "sid", "value", "start_date", "end_date"],
            [40, 500, "sporty-auto", "2026-01-01", None],
            [40, 501, "recent-auto", date(2026, 2, 1), datetime(2026, 12, 31)],
            [41, 500, "sporty", "2026-03-01", ""],
        ],
    }
    result = taxonomy_import(workbook=workbook_bytes(sheets))
    assert (result.created["Destinations"], result.created["DestinationSegments"]) == (2, 3)
    daily = Destination.objects.get(pk=40)
    assert (daily.mode, daily.id_column, daily.id_data_source_id, daily.gzip) == (
        "iter",
        "dpuuid",
        21,
        True,
    )
    assert daily.row_template.endswith('separator=","> ')
    assert (daily.daily_at, daily.max_part_bytes, daily.folder) == (
        time(6, 30),
        50_000_000,
        "to-acme",
    )
    weekly = Destination.objects.get(pk=41)
    assert (weekly.mode, weekly.daily_at, weekly.row_template) == ("full", time(14, 0), DEFAULT_ROW)
    mapped = DestinationSegment.objects.get(destination_id=40, segment_id=501)
    assert (mapped.value, mapped.start_date, mapped.end_date) == (
        "recent-auto",
        date(2026, 2, 1),
        date(2026, 12, 31),
    )
    # The ID sequence moved past the workbook's IDs: the admin's next destination is 42.
    assert Destination.objects.create(partner_id=1001, name="Next", channel=channel).pk == 42

    first = exported()
    assert first["Destinations"][1][15] == "06:30"
    assert first["DestinationSegments"][2] == (40, 501, "recent-auto", "2026-02-01", "2026-12-31")
    before = taxonomy_state()[5:]  # the destinations and their segments
    buffer = io.BytesIO()
    taxonomy_export(output=buffer)
    buffer.seek(0)
    again = taxonomy_import(workbook=buffer)
    assert again.created["Destinations"] == again.created["DestinationSegments"] == 0
    assert taxonomy_state()[5:] == before


def test_bad_destinations_are_reported_by_cell_and_nothing_changes() -> None:
    taxonomy_import(workbook=demo_workbook())
    channel = _channel()
    Partner.objects.create(pid=2002, slug="other", name="Other")
    foreign = _channel(2002, "Other's bucket")
    before = taxonomy_state()
    sheets = {
        "Destinations": [
            ["id", "partner_pid", "name", "channel_id", "id_column", "id_dpid", "row_template"],
            [40, 1001, "Wrong channel", foreign.pk, "uuid", None, "<UUID>"],
            [41, 1001, "No channel", 999, "dpuuid", None, "<UUID> <SEGMENTS>"],
            [42, 1001, "Global IDs", channel.pk, "dpuuid", 20914, "<UUID>"],
            [43, 1001, "Good", channel.pk, "uuid", None, "<UUID>"],
        ],
        "DestinationSegments": [
            ["destination_id", "sid", "value", "start_date", "end_date"],
            [43, 500, "a", "2026-01-01", "2025-12-31"],
            [43, 500, "again", "2026-01-01", None],
            [44, 599, "b", "next week", None],
        ],
    }
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook_bytes(sheets))
    assert caught.value.errors == [
        f"Destinations!D2: channel {foreign.pk} belongs to another partner",
        "Destinations!D3: unknown channel 999",
        "Destinations!F3: writing DPUUIDs needs the id_dpid of their data source",
        "Destinations!G3: unknown macro 'SEGMENTS' (known: ASCII_SOH, CLOSE_CURLY_BRACKET, "
        "COMMA, DPID, DP_UUID, DP_UUID_LIST, OPEN_CURLY_BRACKET, ORDER_ID, OUTPUT_ATTRIBUTE_VALUE, "
        "PID, PIDALIAS, REMOVED_SEGMENT_LIST, SEGMENT_LIST, SET_ATTRIBUTES, TAB, TRAIT_LIST, "
        "UUID) (at column 9)",
        "Destinations!F4: DPID 20914 is not a data source of PID 1001",
        "DestinationSegments!E2: the end date is before the start date",
        "DestinationSegments!A3: this row repeats row 2",
        "DestinationSegments!A4: unknown destination 44",
        "DestinationSegments!B4: unknown segment SID 599",
        "DestinationSegments!D4: 'next week' is not a date (YYYY-MM-DD)",
    ]
    assert taxonomy_state() == before
