"""The partner's own reports in the portal: the onboarding status report (the admin's
numbers, for its data sources only) and the outbound history of its destinations."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from openpyxl import load_workbook

from partners.models import Destination, DestinationSegment, InboundChannel, OutboundRun
from partners.outbound.runs import outbound_run
from partners.reports import onboarding_report_rows
from tests.factories import (
    DataSourceFactory,
    InboundBatchFactory,
    PartnerFactory,
    ReceiptFactory,
    SegmentFactory,
)
from tests.partners.inbound.conftest import Deliver, World
from tests.partners.portal.test_pages import _login
from tests.partners.test_reports import MONDAY, seed_week

WEEK = "start=2026-11-16&end=2026-11-22"


def _xlsx_rows(content: bytes) -> list[tuple[Any, ...]]:
    book = load_workbook(io.BytesIO(content), read_only=True)
    return list(book["Onboarding status"].iter_rows(values_only=True))


@pytest.fixture
def week(db: Any) -> dict[str, Any]:
    """The admin report's seeded week (data sources 31 and 32 of Acme), and another
    partner's data source with a batch the same week."""
    seeded = seed_week()
    rival = DataSourceFactory.create(dpid=33, partner=PartnerFactory.create(name="Rival"))
    ReceiptFactory.create(
        batch=InboundBatchFactory.create(partner=rival.partner, target=rival),
        job_start=datetime(2026, 11, 17, 9, tzinfo=UTC),
        stored_records=777,
    )
    return seeded | {"rival": rival}


def test_the_partner_reads_the_admins_numbers_for_its_data_sources(
    week: dict[str, Any], admin_client: Client
) -> None:
    acme = _login(week["partner"], "acme")
    page = acme.get(f"/portal/reports/onboarding/?{WEEK}")
    assert page.status_code == 200
    assert page.context["rows"] == onboarding_report_rows(
        start=MONDAY, end=MONDAY + timedelta(days=6), dpids=[31, 32]
    )
    text = page.content.decode()
    assert text.count('<tr data-day="') == 13
    assert "partners/vendor/chart.umd.min.js" in text
    assert 'href="/portal/reports/onboarding/" class="active"' in text  # in the nav
    assert "777" not in text  # the rival's batch
    # The XLSX is the admin's export of the same days and data sources, cell for cell.
    mine = acme.get(f"/portal/reports/onboarding/?{page.context['xlsx_query']}")
    theirs = admin_client.get(
        f"/admin/tools/onboarding-report/?{WEEK}&data_sources=31&data_sources=32&format=xlsx"
    )
    assert mine["Content-Disposition"].startswith("attachment")
    assert _xlsx_rows(mine.content) == _xlsx_rows(theirs.content)
    assert len(_xlsx_rows(mine.content)) == 1 + 13


def test_another_partners_data_source_is_not_a_choice(week: dict[str, Any]) -> None:
    acme = _login(week["partner"], "acme")
    page = acme.get(f"/portal/reports/onboarding/?{WEEK}&data_sources=33")
    assert "rows" not in page.context
    assert "Select a valid choice" in page.content.decode()
    export = acme.get(f"/portal/reports/onboarding/?{WEEK}&data_sources=33&format=xlsx")
    assert export["Content-Type"].startswith("text/html")  # the form again, no workbook
    rival = _login(week["rival"].partner, "rival").get(f"/portal/reports/onboarding/?{WEEK}")
    assert [row.dpid for row in rival.context["rows"]] == [33]


def test_a_partner_without_data_sources_sees_nobody_elses(week: dict[str, Any]) -> None:
    """An empty choice is every data source to the admin's selector: a partner with none
    of its own must get nothing (before: My receipts summed every partner's last 30 days)."""
    for batch in week["partner"].inbound_batches.all():  # within My receipts' 30 days
        batch.receipt.job_end = datetime.now(UTC) - timedelta(days=1)
        batch.receipt.save()
    newcomer = _login(PartnerFactory.create(name="Newcomer"), "newcomer")
    assert newcomer.get("/portal/receipts/").context["summary"] == []
    page = newcomer.get("/portal/reports/onboarding/")
    assert page.context["rows"] == []
    assert "No trait file was processed in these days." in page.content.decode()


def _destination(world: World, folder: Path, name: str = "Acme daily") -> Destination:
    channel = InboundChannel.objects.create(
        partner=world.partner, name="zone", kind="local", prefix=str(folder)
    )
    destination = Destination.objects.create(partner=world.partner, name=name, channel=channel)
    segment = SegmentFactory.create(sid=500, data_source=world.source, rule="10T")
    DestinationSegment.objects.create(
        destination=destination, segment=segment, value="tens", start_date=date(2026, 1, 1)
    )
    return destination


def test_the_outbound_history_of_the_partners_destinations(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu2\td_sid=10\n"})
    run = outbound_run(destination=destination)
    old = OutboundRun.objects.create(
        destination=destination,
        mode="full",
        started_at=run.started_at - timedelta(days=40),
        status="failed",
        error="nothing was delivered: the folder cannot be written",
    )
    acme = _login(world.partner, "acme")
    page = acme.get("/portal/outbound/")
    assert list(page.context["runs"]) == [run]  # the default: the last 30 days
    text = page.content.decode()
    assert "Acme daily" in text
    assert f'href="/portal/outbound/{run.pk}/">1 file</a>' in text
    older = acme.get(
        "/portal/outbound/",
        {
            "start": f"{run.started_at - timedelta(days=60):%Y-%m-%d}",
            "end": f"{run.started_at:%Y-%m-%d}",
        },
    )
    assert list(older.context["runs"]) == [run, old]
    assert "the folder cannot be written" in older.content.decode()

    detail = acme.get(f"/portal/outbound/{run.pk}/")
    assert detail.status_code == 200
    [file] = run.files.all()
    body = detail.content.decode()
    assert file.name in body
    assert file.md5 in body
    assert run.info_name in body
    assert '<th>Written</th><td class="num">2</td>' in body


def test_another_partner_sees_none_of_it(world: World, deliver: Deliver, tmp_path: Path) -> None:
    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    run = outbound_run(destination=destination)
    other_partner = PartnerFactory.create(name="Other")
    other = _login(other_partner, "other")
    assert other.get(f"/portal/outbound/{run.pk}/").status_code == 404
    page = other.get("/portal/outbound/")
    assert page.context["runs"] is None  # no destination: nothing to list
    assert "You have no destination yet" in page.content.decode()
    # With a destination of its own, naming the first partner's is not a valid choice.
    channel = InboundChannel.objects.create(
        partner=other_partner, name="theirs", kind="local", prefix=str(tmp_path / "other")
    )
    Destination.objects.create(partner=other_partner, name="Other daily", channel=channel)
    week = {"start": "2026-01-01", "end": "2026-12-31"}
    assert list(other.get("/portal/outbound/", week).context["runs"]) == []
    chosen = other.get("/portal/outbound/", {**week, "destination": str(destination.pk)})
    assert chosen.context["runs"] is None
    assert "Select a valid choice" in chosen.content.decode()
