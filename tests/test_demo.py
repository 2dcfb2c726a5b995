"""The demo works with its own data: the README's walkthrough files, processed after the
demo's seed, store records, realize traits and fill the demo segments."""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from partners.dropzones.services import inbound_poll
from partners.inbound.processing import inbound_batch_process
from partners.models import Destination, IDMapping, InboundChannel, InboundFile, Receipt
from partners.outbound.runs import outbound_run
from portal.demo import demo_seed
from portal.demo_files import (
    DAY1_FILE,
    DAY2_FILE,
    IDSYNC_FILE,
    MISTAKES_FILE,
    demo_files,
)
from segments.models import SegmentMembership

DEMO_DIR = Path(settings.BASE_DIR) / "demo"


def _members() -> dict[int, int]:
    return {
        sid: SegmentMembership.objects.filter(segment_id=sid).count() for sid in (500, 501, 502)
    }


def test_the_files_in_the_repository_are_the_demo_s(tmp_path: Path) -> None:
    assert {path.name: path.read_bytes() for path in DEMO_DIR.iterdir()} == demo_files()


@pytest.mark.django_db
def test_the_readme_walkthrough(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's "Five minutes with the demo", step by step, as the partner and staff do
    it: the receipts store records and realize traits, the demo segments gain members, a
    file dropped in the drop zone is processed, and the export writes the members."""
    settings.PARTNER_SOLUTIONS_EMAILS = []
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setenv("DEMO_DROPZONE", str(tmp_path / "dropzone"))
    monkeypatch.setenv("DEMO_PARTNER_PASSWORD", "partner-walkthrough-pass")
    seeded = demo_seed()
    demo_seed()  # safe to run again
    assert IDMapping.objects.filter(data_source_id=21).count() == 400
    assert _members() == {500: 0, 501: 0, 502: 0}

    # 1. Log in as the partner.
    partner = Client()
    assert partner.login(username="acme", password="partner-walkthrough-pass")

    # 2. Sync IDs first.
    synced = _upload(partner, IDSYNC_FILE)
    assert (synced.records_received, synced.mappings_created, synced.rejected) == (100, 100, 0)

    # 3. Check only, then Process this file.
    with (DEMO_DIR / DAY1_FILE).open("rb") as sample:
        page = partner.post("/portal/upload/", {"file": sample, "check": "1"})
    text = html.unescape(page.content.decode())
    assert "The whole file was read: 500 records. Nothing was applied." in text
    assert (
        "Traits realized: 12 Age 30 to 49 (251), 11 Sports fans (250), 10 Auto intenders (166),"
        " 13 Premium customers (50)" in text
    )
    token = text.split('name="token" value="')[1].split('"')[0]
    done = partner.post("/portal/upload/process/", {"token": token, "name": DAY1_FILE})
    assert done["Location"] == "/portal/files/"
    day1 = _processed(DAY1_FILE)
    assert (day1.records_received, day1.format_errors, day1.no_matching_ids) == (500, 0, 0)
    assert day1.stored_records == 500 - day1.no_trait_realized > 400  # the ID sync came first
    assert day1.total_realized_traits > 500
    checked = {
        row.split("</th>")[0].split(">")[-1]: row.split('class="num">')[1].split("<")[0]
        for row in text.split('<table id="counters">')[1].split("</table>")[0].split("<tr>")[1:]
    }
    assert checked["Stored records"] == str(day1.stored_records)  # the check said so

    # 4. The receipt, and the file of typical mistakes.
    receipt_page = partner.get(f"/portal/receipts/{day1.pk}/")
    assert receipt_page.status_code == 200
    mistakes = _upload(partner, MISTAKES_FILE)
    assert (mistakes.records_received, mistakes.stored_records) == (8, 2)
    assert (mistakes.format_errors, mistakes.invalid_ids, mistakes.no_matching_ids) == (2, 1, 1)
    assert (mistakes.no_trait_realized, mistakes.total_traits_failed_validation) == (2, 1)
    workbook = partner.get(f"/portal/receipts/{mistakes.pk}/workbook/")
    assert workbook.status_code == 200

    # 5. The segments have members.
    after_day1 = _members()
    assert all(after_day1.values()), after_day1

    # 6. Drop a file into today's drop-zone folder: taken after two polls (its size held).
    shutil.copy(DEMO_DIR / DAY2_FILE, seeded.dropzone_today / DAY2_FILE)
    channel = InboundChannel.objects.get(partner__pid=1001)
    assert inbound_poll(channel=channel).registered == []
    assert len(inbound_poll(channel=channel).registered) == 1
    day2 = _processed(DAY2_FILE)
    assert (day2.records_received, day2.format_errors, day2.no_matching_ids) == (250, 0, 0)
    assert day2.total_removed_traits > 0
    assert _members() != after_day1

    # 7. Run the destination: the members arrive in the exports folder, with the .info.
    run = outbound_run(destination=Destination.objects.get(name="Acme daily segments"))
    assert run.status == "succeeded"
    exported = {path.name: path.read_bytes() for path in seeded.exports.iterdir()}
    assert [name for name in exported if name.endswith(".info")], exported
    data = [content for name, content in exported.items() if not name.endswith(".info")]
    assert sum(content.count(b"\n") for content in data) == run.lines > 0


def _upload(client: Client, name: str) -> Receipt:
    with (DEMO_DIR / name).open("rb") as sample:
        page = client.post("/portal/upload/", {"file": sample})
    assert page.status_code == 302, page.content.decode()[:2000]
    return _processed(name)


def _processed(name: str) -> Receipt:
    """The batch of ``name``, processed as a worker would (the job runs this service)."""
    batch = InboundFile.objects.get(name=name).batch
    assert batch is not None
    return inbound_batch_process(batch_id=batch.pk)
