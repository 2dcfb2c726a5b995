"""Taxonomy workbooks are bounded (issue 22): past a row limit, a size limit or what its zip
may unpack to, a workbook is refused at once with the reason; the problems of a refused one
are listed up to a number, then counted."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from openpyxl import Workbook

from partners.models import DataSource, Partner
from partners.taxonomy import TaxonomyImportError, taxonomy_import
from portal.demo import workbook_bytes
from segments.models import Trait

pytestmark = pytest.mark.django_db

HEADER = ["sid", "dpid", "name", "kind", "rule", "ttl_days"]


def traits_workbook(rows: int, *, bad: bool = False) -> io.BytesIO:
    """A partner, its data source and ``rows`` traits (written as a stream); ``bad``: each
    trait row has two bad cells (a kind and a TTL that are not)."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet("Partners")
    sheet.append(["pid", "slug", "name"])
    sheet.append([5001, "bigco", "Big Co"])
    sheet = book.create_sheet("DataSources")
    sheet.append(["dpid", "partner_pid", "name", "id_type", "inbound_id_type"])
    sheet.append([5001, 5001, "Big source", "cross_device", "dpuuid"])
    sheet = book.create_sheet("Traits")
    sheet.append(HEADER)
    for n in range(rows):
        kind, ttl = ("nonsense", "soon") if bad else ("onboarded", 120)
        sheet.append([100_000 + n, 5001, f"Trait {n}", kind, "", ttl])
    buffer = io.BytesIO()
    book.save(buffer)
    buffer.seek(0)
    return buffer


def _rewritten(workbook: io.BytesIO, change: Any) -> io.BytesIO:
    """The workbook with ``change(name, data) -> data`` applied to each member."""
    out = io.BytesIO()
    with zipfile.ZipFile(workbook) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in source.infolist():
            z.writestr(info.filename, change(info.filename, source.read(info)))
    out.seek(0)
    return out


def _refused(workbook: io.BytesIO) -> TaxonomyImportError:
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook)
    assert not Partner.objects.filter(pid=5001).exists()
    return caught.value


def test_a_workbook_at_the_row_limit_is_imported(settings: Any) -> None:
    settings.TAXONOMY_MAX_ROWS = 302  # the partner, its data source and 300 traits
    taxonomy_import(workbook=traits_workbook(300))
    assert Trait.objects.filter(data_source_id=5001).count() == 300


def test_a_workbook_past_the_row_limit_is_refused_at_once(settings: Any) -> None:
    settings.TAXONOMY_MAX_ROWS = 1000
    workbook = traits_workbook(60_000)
    started = time.perf_counter()
    refused = _refused(workbook)
    spent = time.perf_counter() - started
    print(f"\n60,000 rows past a limit of 1,000: refused in {spent:.2f} s")
    assert refused.errors == [
        "the workbook holds more than 1,000 rows, the most an import takes"
        " (TAXONOMY_MAX_ROWS); split it into several workbooks"
    ]
    assert spent < 10  # reading and checking the rows took about 30 s


def test_a_sheet_declaring_more_rows_than_the_limit_is_refused_unread(settings: Any) -> None:
    settings.TAXONOMY_MAX_ROWS = 1000
    buffer = workbook_bytes({"Traits": [HEADER]})  # a workbook that declares its size

    def declare(name: str, data: bytes) -> bytes:
        return re.sub(rb'<dimension ref="[^"]*"', b'<dimension ref="A1:F9000000"', data)

    refused = _refused(_rewritten(buffer, declare))
    assert "more than 1,000 rows" in refused.errors[0]


def test_rows_are_counted_as_read_whatever_the_scan_sees(settings: Any) -> None:
    """Row tags the byte scan does not know (an odd prefix) are still counted as openpyxl
    reads them."""
    settings.TAXONOMY_MAX_ROWS = 1000
    from partners.taxonomy import limits

    original = limits._ROW_TAG
    limits._ROW_TAG = re.compile(rb"<nothing-matches-this>")
    try:
        refused = _refused(traits_workbook(1500))
    finally:
        limits._ROW_TAG = original
    assert "more than 1,000 rows" in refused.errors[0]


def test_a_workbook_past_the_size_limit_is_refused(settings: Any, tmp_path: Path) -> None:
    workbook = traits_workbook(2000)
    settings.TAXONOMY_MAX_BYTES = 10_000
    refused = _refused(workbook)
    size = len(workbook.getvalue())
    assert refused.errors == [
        f"the workbook is {size:,} bytes: at most 10,000 bytes are taken (TAXONOMY_MAX_BYTES)"
    ]
    path = tmp_path / "big.xlsx"
    path.write_bytes(workbook.getvalue())
    errors = io.StringIO()
    with pytest.raises(CommandError, match="not imported, 1 problem"):
        call_command("taxonomy_import", str(path), stderr=errors)
    assert "TAXONOMY_MAX_BYTES" in errors.getvalue()


def test_the_admin_stops_an_oversized_upload_while_it_arrives(
    admin_client: Client, settings: Any
) -> None:
    settings.TAXONOMY_MAX_BYTES = 10_000
    upload = io.BytesIO(traits_workbook(2000).getvalue())
    upload.name = "taxonomy.xlsx"
    page = admin_client.post(reverse("admin:taxonomy"), {"workbook": upload}).content.decode()
    assert "1 problem. Nothing was changed." in page
    assert "the workbook is larger than 10,000 bytes (TAXONOMY_MAX_BYTES)" in page
    assert "This field is required." not in page  # before: beside the size, as if unsent
    assert page.count('class="errorlist') == 1
    assert not Partner.objects.filter(pid=5001).exists()


def test_a_zip_bomb_is_refused_unopened(settings: Any) -> None:
    """A member that inflates to far more than the workbook (5 MB of zeros in 5 KB)."""
    settings.TAXONOMY_MAX_UNCOMPRESSED_BYTES = 1_000_000
    workbook = traits_workbook(10)
    bomb = io.BytesIO(workbook.getvalue())
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/bomb.bin", b"\0" * 5_000_000)
    bomb.seek(0)
    assert len(bomb.getvalue()) < 50_000
    refused = _refused(bomb)
    assert refused.errors[0].startswith("the workbook unpacks to 5,0")
    assert "(TAXONOMY_MAX_UNCOMPRESSED_BYTES)" in refused.errors[0]


def test_a_member_lying_about_its_size_is_not_inflated_past_it(settings: Any) -> None:
    """A zip directory that declares a small sheet holding a big one: Python's zipfile stops
    at the declared size (and the CRC then fails): the file is not a workbook we read."""
    settings.TAXONOMY_MAX_UNCOMPRESSED_BYTES = 1_000_000
    workbook = bytearray(traits_workbook(30_000).getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(workbook))) as archive:
        sheet = next(i for i in archive.infolist() if i.filename == "xl/worksheets/sheet3.xml")
        assert sheet.file_size > 1_000_000
    # Its central directory entry: the signature, then the uncompressed size at offset 24.
    name = sheet.filename.encode()
    entry = workbook.find(b"PK\x01\x02")
    while entry >= 0:
        if workbook[entry + 46 : entry + 46 + len(name)] == name:
            break
        entry = workbook.find(b"PK\x01\x02", entry + 4)
    workbook[entry + 24 : entry + 28] = (1000).to_bytes(4, "little")
    started = time.perf_counter()
    refused = _refused(io.BytesIO(bytes(workbook)))
    print(
        f"\na sheet declared as 1,000 bytes holding {sheet.file_size:,}: refused in"
        f" {time.perf_counter() - started:.2f} s: {refused.errors[0][:90]}"
    )
    assert refused.errors[0].startswith("the file is not an XLSX workbook")


def test_problems_are_listed_up_to_a_number_then_counted(
    admin_client: Client, tmp_path: Path
) -> None:
    workbook = traits_workbook(1000, bad=True)
    refused = _refused(io.BytesIO(workbook.getvalue()))
    assert refused.count == 2000  # two bad cells a row
    assert len(refused.errors) == 200
    # The first ones in reading order: row 2's kind and TTL, then row 3's...
    assert refused.errors[0].startswith("Traits!D2: ")
    assert refused.errors[1].startswith("Traits!F2: ")
    assert refused.errors[199].startswith("Traits!F101: ")
    assert refused.lines[-1] == "… and 1,800 more"

    upload = io.BytesIO(workbook.getvalue())
    upload.name = "taxonomy.xlsx"
    page = admin_client.post(reverse("admin:taxonomy"), {"workbook": upload}).content.decode()
    assert "2,000 problems. Nothing was changed." in page
    assert page.count("<li>Traits!") == 200
    assert "<li>… and 1,800 more</li>" in page

    path = tmp_path / "bad.xlsx"
    path.write_bytes(workbook.getvalue())
    errors = io.StringIO()
    with pytest.raises(CommandError, match="not imported, 2,000 problem"):
        call_command("taxonomy_import", str(path), stderr=errors)
    assert errors.getvalue().count("\n") == 201
    assert "… and 1,800 more" in errors.getvalue()
    assert not DataSource.objects.filter(dpid=5001).exists()


def test_a_part_read_whole_is_held_to_a_quarter_of_the_unpacked_limit(settings: Any) -> None:
    """Shared strings (or styles) are read whole into memory by openpyxl: a workbook whose
    sharedStrings.xml alone unpacks past a quarter of the limit is refused unopened."""
    settings.TAXONOMY_MAX_UNCOMPRESSED_BYTES = 4_000_000
    workbook = io.BytesIO(traits_workbook(10).getvalue())
    with zipfile.ZipFile(workbook, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "xl/sharedStrings.xml", b"<sst>" + b"<si><t>x</t></si>" * 70_000 + b"</sst>"
        )
    workbook.seek(0)
    refused = _refused(workbook)
    assert refused.errors[0].startswith("the workbook's part xl/sharedStrings.xml unpacks to")
