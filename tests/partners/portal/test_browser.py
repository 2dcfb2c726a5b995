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


def _inner_scrollers(page: Any) -> list[str]:
    """Boxes inside the page that scroll sideways (a table to swipe across, on a phone)."""
    return list(
        page.evaluate(
            """Array.from(document.querySelectorAll("body *")).filter(function (e) {
                 const x = getComputedStyle(e).overflowX;
                 return (x === "auto" || x === "scroll") && e.scrollWidth > e.clientWidth + 1;
               }).map(function (e) {
                 const inner = e.firstElementChild && e.firstElementChild.id;
                 return e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
                   + (inner ? " > #" + inner : "");
               })"""
        )
    )


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


# Every portal page a partner reads, by the name its screenshots get.
PAGES = {
    "files": "/portal/files/",
    "upload": "/portal/upload/",
    "receipts": "/portal/receipts/",
    "receipt": "/portal/receipts/{receipt}/",
    "api-token": "/portal/api-token/",
    "api-help": "/portal/api/",
    "report": "/portal/reports/onboarding/",
    "outbound": "/portal/outbound/",
    "outbound-run": "/portal/outbound/{run}/",
}
WIDTHS = ((1366, 900), (390, 844))


def _partner_with_data(world: World, tmp_path: Path) -> dict[str, int]:
    """What a partner a few days in has: a processed file with rejected lines (a tab in
    their starts), a failed one, a drop-zone file seen but not yet registered, and an export
    of its destination."""
    from datetime import date

    from partners.dropzones.services import inbound_poll
    from partners.inbound.errors import InboundRejected
    from partners.inbound.processing import inbound_batch_process
    from partners.inbound.registration import inbound_files_register
    from partners.models import Destination, DestinationSegment, InboundChannel
    from partners.outbound.runs import outbound_run
    from tests.factories import SegmentFactory

    zone = tmp_path / "zone"
    channel = InboundChannel.objects.create(
        partner=world.partner, name="Acme drop zone", kind="local", prefix=str(zone)
    )
    destination = Destination.objects.create(
        partner=world.partner, name="Acme daily segments", channel=channel
    )
    segment = SegmentFactory.create(sid=500, data_source=world.source, rule="10T")
    DestinationSegment.objects.create(
        destination=destination, segment=segment, value="tens", start_date=date(2026, 1, 1)
    )
    processed = tmp_path / "ftp_dpm_21_1700000000.sync"
    processed.write_text(
        "u1\td_sid=10,d_sid=11\nu2\td_sid=10\nu9\t" + "d_sid=10," * 20 + "d_sid=11\nu2 d_sid=10\n"
    )
    failed = tmp_path / "ftp_dpm_22_1700000001.sync.gz"
    failed.write_bytes(b"this is not gzip")
    receipt = inbound_batch_process(
        batch_id=inbound_files_register(paths=[processed]).batches[0].pk
    )
    with pytest.raises(InboundRejected):
        inbound_batch_process(batch_id=inbound_files_register(paths=[failed]).batches[0].pk)
    run = outbound_run(destination=destination)
    folder = zone / "acme" / "date=2026-12-01"
    folder.mkdir(parents=True)
    (folder / "ftp_dpm_21_1700000200.sync").write_text("u1\td_sid=11\n")
    inbound_poll(channel=channel)  # seen once: registered only once its size holds
    return {"receipt": receipt.pk, "run": run.pk}


def test_every_portal_page_reads_on_a_desktop_and_on_a_phone(
    world: World, page: Any, browser: Any, live_server: Any, tmp_path: Path, settings: Any
) -> None:
    """Each page a partner opens, at 1366 and 390 px: a screenshot of each, and none scrolls
    sideways on a phone. Every problem is collected, so one run names them all."""
    import django_rq

    django_rq.get_queue("inbound").empty()
    settings.MEDIA_ROOT = tmp_path / "media"
    ids = _partner_with_data(world, tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    def look(name: str) -> None:
        for width, height in WIDTHS:
            page.set_viewport_size({"width": width, "height": height})
            # Let what follows the window's size (the report's chart) lay itself out again.
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 100)))")
            page.screenshot(path=str(ARTIFACTS / f"portal-{name}-{width}.png"), full_page=True)
            if width < 600 and _scrolls_sideways(page):
                problems.append(f"{name}: scrolls sideways at {width} px")
            if width < 600 and _inner_scrollers(page):
                problems.append(f"{name}: {_inner_scrollers(page)} scroll sideways at {width} px")
        page.set_viewport_size({"width": 1366, "height": 900})

    anonymous = browser.new_page()
    for name, path in (("login", "/portal/login/"), ("password-reset", "/portal/password-reset/")):
        page_before, page = page, anonymous
        page.goto(f"{live_server.url}{path}")
        look(name)
        page = page_before
    anonymous.close()

    _user(world.partner, "acme")
    _log_in(page, live_server.url, "acme")
    for name, path in PAGES.items():
        response = page.goto(live_server.url + path.format(**ids))
        if response.status != 200:
            problems.append(f"{name}: answered {response.status}")
            continue
        look(name)
        if name == "files":
            if page.locator("#files progress:visible").count():
                problems.append("files: a progress bar under a file that is not processing")
            failed_row = page.inner_text("tr:has-text('ftp_dpm_22_1700000001.sync.gz')")
            if failed_row.count("ftp_dpm_22_1700000001.sync.gz") != 1:
                problems.append(f"files: the failed file is named more than once: {failed_row!r}")
            if "waiting for its size to hold" not in page.inner_text("#files"):
                problems.append("files: the drop-zone file seen, not yet registered, is missing")
        starts = (  # the text as sent: a browser shows a tab as a mere space
            page.locator("#errors code").evaluate_all("codes => codes.map(c => c.textContent)")
            if name == "receipt"
            else []
        )
        if any("\t" in start for start in starts):
            problems.append("receipt: a raw tab in the start of a line")

    # The check page (a POST's answer), and how a refused button looks.
    page.goto(f"{live_server.url}/portal/upload/")
    enabled = page.eval_on_selector("#upload-submit", "b => getComputedStyle(b).backgroundColor")
    wrong = tmp_path / "acme_traits.tsv"
    wrong.write_text("u1\td_sid=10\n")
    page.set_input_files("#id_file", str(wrong))
    page.wait_for_selector("#file-errors li")
    disabled = page.eval_on_selector("#upload-submit", "b => getComputedStyle(b).backgroundColor")
    if disabled == enabled:
        problems.append("upload: a disabled button looks like an enabled one")
    checked = tmp_path / "ftp_dpm_21_1700000300.sync"
    checked.write_text("u1\td_sid=10\nu9\td_sid=10\n")
    page.set_input_files("#id_file", str(checked))
    page.wait_for_function("!document.getElementById('check-submit').disabled")
    page.click("#check-submit")
    page.wait_for_selector("#dry-run")
    look("check")
    if page.request.get(f"{live_server.url}/favicon.ico").status != 200:
        problems.append("/favicon.ico: not found")

    # Staff viewing the portal as the partner: the banner, and the way back to the admin.
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("boss", "boss@example.com", "a-long-pass-123")
    staff = browser.new_page()
    staff.goto(f"{live_server.url}/admin/login/")
    staff.fill("#id_username", "boss")
    staff.fill("#id_password", "a-long-pass-123")
    staff.click("input[type=submit]")
    staff.wait_for_selector("#user-tools")
    page_before, page = page, staff
    page.goto(f"{live_server.url}/portal/view-as/{world.partner.pk}/")
    look("view-as")
    if not page.locator("#view-as a").count():
        problems.append("view-as: no banner saying so, no way back to the admin")
    else:
        page.click("#view-as a")
        if not page.url.endswith(f"/admin/partners/partner/{world.partner.pk}/change/"):
            problems.append(f"view-as: the banner's link went to {page.url}")
    page = page_before
    staff.close()
    assert problems == [], "\n".join(problems)


def test_a_file_of_many_parts_reads_on_a_desktop_and_on_a_phone(
    world: World, page: Any, live_server: Any, tmp_path: Path, settings: Any
) -> None:
    """Issue 22: a split file of hundreds of parts, some missing, and a lone ``.9999`` that
    went without the others: My files pages its rows (the pager, at 1366 and 390 px), every
    waiting part says the same short words, the receipt names the missing parts in a few."""
    from datetime import timedelta

    from partners.inbound.processing import inbound_batch_process
    from partners.inbound.queueing import inbound_waiting_batches_release
    from partners.inbound.registration import inbound_files_register
    from partners.models import InboundBatch

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.INBOUND_PARTS_MAX_WAIT_SECONDS = 3600
    lone = tmp_path / "ftp_dpm_21_1700000001.sync.9999"
    lone.write_text("u1\td_sid=10\n")
    [batch] = inbound_files_register(paths=[lone], partner=world.partner, complete=False).waiting
    created = InboundBatch.objects.get(pk=batch.pk).created_at
    inbound_waiting_batches_release(now=created + timedelta(hours=2))
    receipt = inbound_batch_process(batch_id=batch.pk)
    for number in [n for n in range(1, 261) if n not in (17, 42, 199)]:
        part = tmp_path / f"ftp_dpm_21_1700000000.sync.{number}"
        part.write_text(f"u{number}\td_sid=10\n")
        inbound_files_register(paths=[part], partner=world.partner, complete=False)
    _user(world.partner, "acme")
    _log_in(page, live_server.url, "acme")
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    said = "parts 1-260 here, missing 17, 42, 199"
    for number in (1, 3):
        page.goto(f"{live_server.url}/portal/files/?page={number}")
        details = set(page.locator("#files td.status .detail").all_inner_texts())
        if number == 1 and details != {said}:
            problems.append(f"files page 1: the waiting parts say {details}")
        pager = page.locator("nav.pager").first.inner_text()
        if f"Page {number} of 3" not in pager:
            problems.append(f"files page {number}: the pager says {pager!r}")
        for width, height in WIDTHS:
            page.set_viewport_size({"width": width, "height": height})
            page.screenshot(
                path=str(ARTIFACTS / f"portal-files-parts-page{number}-{width}.png"),
                full_page=True,
            )
            if width < 600 and (_scrolls_sideways(page) or _inner_scrollers(page)):
                problems.append(f"files page {number}: scrolls sideways at {width} px")
            page.screenshot(
                path=str(ARTIFACTS / f"portal-files-parts-page{number}-{width}-top.png")
            )
            page.locator("nav.pager").last.scroll_into_view_if_needed()
            page.screenshot(
                path=str(ARTIFACTS / f"portal-files-parts-page{number}-{width}-end.png")
            )
            page.evaluate("window.scrollTo(0, 0)")
            box = page.locator("nav.pager").first.bounding_box()
            if box is None or box["width"] > width:
                problems.append(f"files page {number}: the pager is wider than {width} px")
        page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{live_server.url}/portal/files/")
    page.locator("nav.pager").first.locator("a[rel=next]").click()
    page.locator("nav.pager").first.locator("a[rel=prev]").click()
    if not page.url.endswith("?page=1"):
        problems.append(f"files: Older then Newer went to {page.url}")

    page.goto(f"{live_server.url}/portal/receipts/{receipt.pk}/")
    missing = page.inner_text("#missing-parts")
    if missing != "Missing parts (not received in time; processed without them): 1-9998":
        problems.append(f"receipt: {missing!r}")
    for width, height in WIDTHS:
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(
            path=str(ARTIFACTS / f"portal-receipt-lone-part-{width}.png"), full_page=True
        )
        if width < 600 and _scrolls_sideways(page):
            problems.append(f"receipt: scrolls sideways at {width} px")
    assert problems == [], "\n".join(problems)
