"""The onboarding status report adds up against the receipts of a seeded week."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import pytest
from django.test import Client
from django.utils import timezone
from openpyxl import load_workbook

from partners.models import InboundBatch, Receipt
from partners.reports import (
    onboarding_report_days,
    onboarding_report_rows,
    partner_onboarding_summary,
)
from tests.factories import DataSourceFactory, InboundBatchFactory, PartnerFactory, ReceiptFactory

pytestmark = pytest.mark.django_db
MONDAY = date(2026, 11, 16)


def seed_week() -> dict[str, Any]:
    """Two data sources over a week: a batch a day each (none on Wednesday for 31), two on
    Friday for 32, and one ID-sync batch, which the report leaves out."""
    partner = PartnerFactory.create(name="Acme Data")
    s31 = DataSourceFactory.create(dpid=31, partner=partner, name="Acme web")
    s32 = DataSourceFactory.create(dpid=32, partner=partner, name="Acme app")
    for day in range(7):
        at = datetime(2026, 11, 16 + day, 6, 0, tzinfo=UTC)
        if day != 2:
            batch = InboundBatchFactory.create(partner=partner, target=s31)
            ReceiptFactory.create(
                batch=batch,
                job_start=at,
                stored_records=1000 + day,
                format_errors=day,
                no_matching_ids=10,
                total_realized_traits=5 * day,
                total_unused_signals=3,
            )
        for hour in (8, 20) if day == 4 else (8,):
            batch = InboundBatchFactory.create(partner=partner, target=s32)
            ReceiptFactory.create(
                batch=batch,
                job_start=at.replace(hour=hour),
                stored_records=500,
                invalid_ids=day,
                no_trait_realized=1,
            )
    sync = InboundBatchFactory.create(partner=partner, target=s31, kind=InboundBatch.Kind.ID_SYNC)
    ReceiptFactory.create(
        batch=sync, job_start=datetime(2026, 11, 18, tzinfo=UTC), stored_records=7
    )
    return {"partner": partner, "s31": s31, "s32": s32}


def test_the_report_adds_up_against_the_receipts() -> None:
    seed_week()
    rows = onboarding_report_rows(start=MONDAY, end=MONDAY + timedelta(days=6))
    trait_receipts = Receipt.objects.exclude(batch__kind=InboundBatch.Kind.ID_SYNC)
    for field in (
        "records_received",
        "stored_records",
        "format_errors",
        "invalid_ids",
        "no_matching_ids",
        "no_trait_realized",
        "total_realized_traits",
        "total_unused_signals",
    ):
        assert sum(r.counts[field] for r in rows) == sum(
            getattr(receipt, field) for receipt in trait_receipts
        ), field
    assert [(r.day.day, r.dpid, r.batches) for r in rows[:6]] == [
        (16, 31, 1),
        (16, 32, 1),
        (17, 31, 1),
        (17, 32, 1),
        (18, 32, 1),
        (19, 31, 1),
    ]
    friday_32 = next(r for r in rows if r.day == date(2026, 11, 20) and r.dpid == 32)
    assert friday_32.batches == 2
    assert friday_32.counts["records_received"] == 2 * (500 + 4 + 1)
    assert friday_32.success_percent == round(100 * 1000 / 1010, 1)
    days = onboarding_report_days(rows, start=MONDAY, end=MONDAY + timedelta(days=7))
    assert len(days) == 8  # every day of the range, the empty Monday after too
    assert days[2] == {"day": "2026-11-18", "stored": 500, "failed": 2 + 1}
    assert days[7] == {"day": "2026-11-23", "stored": 0, "failed": 0}
    only_31 = onboarding_report_rows(start=MONDAY, end=MONDAY + timedelta(days=6), dpids=[31])
    assert {r.dpid for r in only_31} == {31}
    assert len(only_31) == 6


def test_the_report_page_and_its_xlsx_export(admin_client: Client) -> None:
    seed_week()
    query = "?start=2026-11-16&end=2026-11-22"
    page = admin_client.get(f"/admin/tools/onboarding-report/{query}")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="report-chart"' in text
    assert "partners/vendor/chart.umd.min.js" in text
    assert text.count('<tr data-day="') == 13  # 6 days of DPID 31, 7 of 32 (one row a day)
    export = admin_client.get(f"/admin/tools/onboarding-report/{query}&format=xlsx")
    book = load_workbook(io.BytesIO(export.content), read_only=True)
    rows = list(book["Onboarding status"].iter_rows(values_only=True))
    assert rows[0][:5] == ("Day", "DPID", "Data source", "Batches", "Records received")
    assert len(rows) == 1 + 13
    bad = admin_client.get("/admin/tools/onboarding-report/?start=2026-11-22&end=2026-11-16")
    assert "The first day is after the last day." in bad.content.decode()


def test_partner_summary_on_its_admin_page(admin_client: Client) -> None:
    world = seed_week()
    summary = partner_onboarding_summary(world["partner"], days=10_000)
    assert summary.received == summary.stored + sum(
        r.records_received - r.stored_records
        for r in Receipt.objects.exclude(batch__kind=InboundBatch.Kind.ID_SYNC)
    )
    page = admin_client.get(f"/admin/partners/partner/{world['partner'].pk}/change/")
    assert "Success, last 30 days" in page.content.decode()


def test_names_in_the_report_and_taxonomy_workbooks_are_text(admin_client: Client) -> None:
    """Every cell holding partner data is text: a data source named '=1+1' or a partner
    named '=HYPERLINK(…)' is not a formula in the report's or the taxonomy's XLSX."""
    world = seed_week()
    world["s31"].name = "=1+1"
    world["s31"].save()
    world["partner"].name = '=HYPERLINK("https://evil.example","x")'
    world["partner"].save()
    query = "?start=2026-11-16&end=2026-11-22"
    exports = [
        admin_client.get(f"/admin/tools/onboarding-report/{query}&format=xlsx").content,
        admin_client.get("/admin/tools/taxonomy/export/").content,
    ]
    for content in exports:
        book = load_workbook(io.BytesIO(content))
        cells = [c for sheet in book for row in sheet.iter_rows() for c in row]
        assert "=1+1" in {c.value for c in cells}
        assert [c.coordinate for c in cells if c.data_type == "f"] == []


class _Table(HTMLParser):
    """The report page's rows (``<tr data-day>``) as lists of cell texts, and its links."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: dict[str, str] = {}
        self._row: list[str] | None = None
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr" and dict(attrs).get("data-day"):
            self._row = []
        elif tag in ("td", "a"):
            self._text = ""
            self._href = dict(attrs).get("href") if tag == "a" else self._href

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None:
            self._row.append(self._text.strip())
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "a" and self._href is not None:
            self.links[self._text.strip()] = self._href
            self._href = None

    def handle_data(self, data: str) -> None:
        self._text += data


@pytest.mark.parametrize("chosen", ["first visit", "one data source chosen"])
def test_the_export_link_downloads_what_the_page_shows(admin_client: Client, chosen: str) -> None:
    """On a first visit (no query string) the page shows its default days, the last 7; its
    *Export to XLSX* link, followed as rendered, downloads those rows. The same once staff
    chose days and a data source."""
    partner = PartnerFactory.create(name="Acme Data")
    web = DataSourceFactory.create(dpid=31, partner=partner, name="Acme web")
    app = DataSourceFactory.create(dpid=32, partner=partner, name="Acme app")
    now = timezone.now()
    for days_ago, source, stored, errors in (
        (0, web, 900, 100),
        (0, app, 50, 0),
        (3, web, 10, 5),
        (6, app, 7, 1),
        (9, web, 1234, 1),  # before the default range: neither on the page nor exported
    ):
        ReceiptFactory.create(
            batch=InboundBatchFactory.create(partner=partner, target=source),
            job_start=now - timedelta(days=days_ago),
            stored_records=stored,
            format_errors=errors,
        )
    url = "/admin/tools/onboarding-report/"
    if chosen == "one data source chosen":
        url += f"?start={now - timedelta(days=9):%Y-%m-%d}&end={now:%Y-%m-%d}&data_sources=31"
    page = admin_client.get(url)
    assert page.status_code == 200
    table = _Table()
    table.feed(page.content.decode())
    if chosen == "first visit":
        assert len(table.rows) == 4
        assert "1234" not in {cell for row in table.rows for cell in row}
    else:
        assert [row[1] for row in table.rows] == ["31", "31", "31"]

    export = admin_client.get(urljoin(url, table.links["Export to XLSX"]))
    assert export.status_code == 200
    assert export["Content-Type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert export["Content-Disposition"].startswith('attachment; filename="onboarding-')
    book = load_workbook(io.BytesIO(export.content), read_only=True)
    header, *rows = book["Onboarding status"].iter_rows(values_only=True)
    assert header[0] == "Day"

    def shown(row: list[str]) -> list[Any]:  # "90.0 %" on the page is 90.0 in the workbook
        *cells, success = row
        return [*cells, None if success == "—" else float(success.removesuffix(" %"))]

    def exported(row: tuple[Any, ...]) -> list[Any]:
        day, *values, success = row
        return [f"{day:%Y-%m-%d}", *(str(value) for value in values), success]

    assert [exported(row) for row in rows] == [shown(row) for row in table.rows]
