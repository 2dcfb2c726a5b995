"""The partner portal in a real headless browser: log in, a bad name and another partner's DPID
refused before upload, a real gzip upload processed by a real RQ worker, its receipt and
workbook; another partner cannot reach it."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from partners.models import Receipt
from tests.factories import DataSourceFactory, PartnerFactory, PartnerUserFactory, UserFactory
from tests.partners.inbound.conftest import World
from tests.partners.inbound.test_jobs import start_worker

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"


def _user(partner: Any, username: str) -> None:
    user = UserFactory.create(username=username)
    user.set_password("a-long-partner-pass-1")
    user.save()
    PartnerUserFactory.create(user=user, partner=partner)


def _log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/portal/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "a-long-partner-pass-1")
    page.click("button[type=submit]")
    page.wait_for_selector("text=My files")


def test_upload_watch_it_process_read_the_receipt(
    world: World, page: Any, browser: Any, live_server: Any, tmp_path: Path, settings: Any
) -> None:
    import django_rq

    django_rq.get_queue("inbound").empty()
    settings.MEDIA_ROOT = tmp_path / "media"
    _user(world.partner, "acme")
    _log_in(page, live_server.url, "acme")
    ARTIFACTS.mkdir(exist_ok=True)

    page.click("text=Upload")
    wrong = tmp_path / "acme_traits_2026-11-28.tsv"
    wrong.write_text("u1\td_sid=10\n")
    page.set_input_files("#id_file", str(wrong))
    page.wait_for_selector("#file-errors li")
    assert "does not start with ftp_dpm_" in page.inner_text("#file-errors")
    assert page.is_disabled("#upload-submit")  # refused before a byte is sent
    page.screenshot(path=str(ARTIFACTS / "portal-upload.png"), full_page=True)

    DataSourceFactory.create(dpid=31, partner=PartnerFactory.create(name="Other data"))
    foreign = tmp_path / "ftp_dpm_31_1700000000.sync"  # a good name, another partner's DPID
    foreign.write_text("u1\td_sid=10\n")
    page.set_input_files("#id_file", str(foreign))
    page.wait_for_selector("#file-errors li:has-text('belongs to another partner')")
    assert page.inner_text("#file-errors") == (
        "ftp_dpm_31_1700000000.sync: data source 31 belongs to another partner"
    )
    assert page.is_disabled("#upload-submit")  # refused before a byte is sent, too

    good = tmp_path / "ftp_dpm_21_1700000000.sync.gz"
    good.write_bytes(gzip.compress(b"u1\td_sid=10,d_sid=11\nu9\td_sid=10\n"))
    page.set_input_files("#id_file", str(good))
    page.wait_for_function("!document.getElementById('upload-submit').disabled")
    page.click("#upload-submit")
    page.wait_for_selector("td.status:has-text('Queued')")

    worker = start_worker()  # a real RQ worker takes the batch; the page polls its status
    try:
        page.wait_for_selector("td.status:has-text('Processed')", timeout=60_000)
    finally:
        worker.wait(timeout=60)
    page.screenshot(path=str(ARTIFACTS / "portal-files.png"), full_page=True)

    page.click("#files a:text-is('Receipt')")
    page.wait_for_selector("#counters")
    assert "Stored records" in page.inner_text("#counters")
    page.screenshot(path=str(ARTIFACTS / "portal-receipt.png"), full_page=True)
    with page.expect_download() as download:
        page.click("text=Download every rejected line (XLSX)")
    book = load_workbook(io.BytesIO(Path(download.value.path()).read_bytes()), read_only=True)
    rows = list(book["Rejected lines"].iter_rows(values_only=True))
    assert rows[1][:3] == ("ftp_dpm_21_1700000000.sync.gz", 2, "no matching id")

    receipt = Receipt.objects.get()
    _user(PartnerFactory.create(name="Other"), "other")
    other = browser.new_page()
    _log_in(other, live_server.url, "other")
    response = other.goto(f"{live_server.url}/portal/receipts/{receipt.pk}/")
    assert response.status == 404
    other.close()


def _figures(page: Any) -> dict[str, str]:
    rows = page.locator("#counters tr").all()
    return {row.locator("th").inner_text(): row.locator("td").inner_text() for row in rows}


def _scrolls_sideways(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth > window.innerWidth"))


def test_check_only_shows_the_figures_the_receipt_then_shows(
    world: World, page: Any, live_server: Any, tmp_path: Path, settings: Any
) -> None:
    """The same file, checked then processed: the check page's counters are the receipt
    page's, as the partner reads them, on a desktop and on a phone."""
    import django_rq

    django_rq.get_queue("inbound").empty()
    settings.MEDIA_ROOT = tmp_path / "media"
    _user(world.partner, "acme")
    _log_in(page, live_server.url, "acme")
    ARTIFACTS.mkdir(exist_ok=True)

    checked = tmp_path / "ftp_dpm_21_1700000000.sync.gz"
    checked.write_bytes(
        gzip.compress(
            b"u1\td_sid=10,d_sid=11\nu9\td_sid=10,zz=1\nu2\td_sid=90\nu1 d_sid=10\n"
            b"u2\tx=1\n\xff\xfe\td_sid=10\nu1\t10:0\n"
        )
    )
    page.click("text=Upload")
    page.set_input_files("#id_file", str(checked))
    page.wait_for_function("!document.getElementById('check-submit').disabled")
    page.click("#check-submit")
    page.wait_for_selector("#dry-run")
    check = _figures(page)
    assert check["No matching ID"] == "1"
    assert "Traits realized: 10" in page.inner_text("#dry-run")
    for width, height in ((1366, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(ARTIFACTS / f"portal-check-{width}.png"), full_page=True)
        assert not _scrolls_sideways(page), width
    page.set_viewport_size({"width": 1366, "height": 900})

    page.click("#process-checked")
    page.wait_for_selector("td.status:has-text('Queued')")
    worker = start_worker()
    try:
        page.wait_for_selector("td.status:has-text('Processed')", timeout=60_000)
    finally:
        worker.wait(timeout=60)
    page.click("#files a:text-is('Receipt')")
    page.wait_for_selector("#counters")
    assert _figures(page) == check
    for width, height in ((1366, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(ARTIFACTS / f"portal-receipt-{width}.png"), full_page=True)
