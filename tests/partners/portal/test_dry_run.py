"""'Check only': a known file's figures, nothing applied, then processed without re-upload."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from partners.inbound.dryrun import inbound_dry_run
from partners.models import InboundFile
from partners.portal.uploads import upload_store
from segments.models import ProfileTraits, Trait
from tests.partners.inbound.conftest import World, counters, expect
from tests.partners.portal.test_pages import _login

KNOWN = (
    "u1\td_sid=10,d_sid=11\n"  # known; realizes 10 and 11
    "u2\td_sid=90,zz=1\n"  # known; a trait of data source 22; an unused signal
    "u9\td_sid=10\n"  # not known
    "u1 d_sid=10\n"  # format error: no tab
    "u1\t10:0\n"  # removes 10
    "u3\td_sid=11\n"  # not known
)


@pytest.fixture
def acme(world: World, settings: Any, tmp_path: Any) -> Client:
    settings.MEDIA_ROOT = tmp_path / "media"
    return _login(world.partner, "acme")


def test_the_figures_of_a_known_file(world: World, settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    stored = upload_store(
        partner=world.partner,
        upload=SimpleUploadedFile("ftp_dpm_21_1700000000.sync", KNOWN.encode()),
    )
    report = inbound_dry_run(file=stored, partner=world.partner, sample_lines=10_000)
    assert (report.lines, report.complete) == (6, True)
    # u9 and u3 have no mapping: their lines realize nothing (before: counted as realized).
    assert counters(report.receipt) == expect(
        records_received=6,
        format_errors=1,
        no_matching_ids=2,
        no_trait_realized=1,
        records_processed=6,
        stored_records=2,
        total_devices=1,
        total_signals=7,
        total_unused_signals=1,
        total_realized_traits=2,
        total_removed_traits=1,
        total_traits_failed_validation=1,
        total_users_with_failed_traits=1,
    )
    assert (report.user_ids_valid, report.user_ids_matched, report.match_rate) == (4, 2, 50.0)
    names = Trait.objects.in_bulk([10, 11])
    assert report.realized_traits == [(10, names[10].name, 1), (11, names[11].name, 1)]
    assert report.removed == {10: 1}
    assert [(e["kind"], e["line"]) for e in report.errors] == [
        ("format_error", 4),
        ("no_matching_id", 3),
        ("no_matching_id", 6),
        ("no_trait_realized", 2),
        ("trait_failed_validation", 2),
    ]
    sample = inbound_dry_run(file=stored, partner=world.partner, sample_lines=2)
    assert (sample.lines, sample.complete, sample.stopped) == (2, False, "lines")


def test_check_only_applies_nothing_then_process_this_file(acme: Client, world: World) -> None:
    upload = SimpleUploadedFile("ftp_dpm_21_1700000000.sync", KNOWN.encode())
    page = acme.post("/portal/upload/", {"file": upload, "check": "1"})
    text = html.unescape(page.content.decode())
    assert "The whole file was read: 6 records. Nothing was applied." in text
    assert "2 of 4 (50.0 %)" in text
    names = Trait.objects.in_bulk([10, 11])
    assert f"Traits realized: 10 {names[10].name} (1), 11 {names[11].name} (1)" in text
    assert not InboundFile.objects.exists()
    assert not ProfileTraits.objects.exists()
    token = text.split('name="token" value="')[1].split('"')[0]
    done = acme.post(
        "/portal/upload/process/", {"token": token, "name": "ftp_dpm_21_1700000000.sync"}
    )
    assert done["Location"] == "/portal/files/"
    assert InboundFile.objects.get().name == "ftp_dpm_21_1700000000.sync"
    again = acme.post("/portal/upload/process/", {"token": "0" * 16, "name": "x.sync"})
    assert again["Location"] == "/portal/upload/"
