"""*Check only* keeps its bounds (lines, bytes, seconds) for every kind of file: gzip of every
member shape, PGP (compressed or not, with a real key and a real ``gpg``) and plain files;
its answer is a report (how far it read), never a rejection for stopping early; and the
checked upload can then be processed (the worker holding its own limits)."""

from __future__ import annotations

import contextlib
import gzip
import random
import re
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from partners.inbound.errors import InboundRejected
from partners.inbound.processing import inbound_batch_process
from partners.models import InboundBatch, InboundFile
from partners.portal.api import api_token_rotate
from tests.partners.inbound.conftest import World, encrypt

NEEDS_GPG = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs GnuPG")
SLACK = 4.0  # seconds past a bound allowed for a loaded machine


def _lines(count: int, *, start: int = 0) -> bytes:
    """Records of random user IDs the world does not know (nothing over the cap, and hardly
    compressible: a PGP file of 60,000 of them is over 1 MB)."""
    rng = random.Random(start)
    return b"".join(b"%032x\td_sid=10,color=red\n" % rng.getrandbits(128) for _ in range(count))


def _members(payload: bytes, count: int) -> bytes:
    """``count`` gzip members, each holding ``payload``."""
    return gzip.compress(payload, mtime=0) * count


ALL_LINES = 10**12  # the check's clock or bytes stop it, not its lines
GZIP_SHAPES = {
    # (the file, the lines the check reads)
    # 200,000 records in one member
    "one member": (lambda: gzip.compress(_lines(200_000)), 10_000),
    # each record its own member
    "many members": (
        lambda: b"".join(gzip.compress(_lines(1, start=n)) for n in range(20_000)),
        10_000,
    ),
    # 2.5 million members that inflate to nothing (50 MB): Python's gzip reader loops over
    # them inside one read() and does not return for 10 s and more
    "empty members": (lambda: _members(b"", 2_500_000), ALL_LINES),
    # 2.5 million members of one blank line each
    "members of blank lines": (lambda: _members(b"\n", 2_500_000), ALL_LINES),
    # records, then a member cut short
    "a truncated member": (
        lambda: gzip.compress(_lines(5_000)) + gzip.compress(_lines(9))[:30],
        10_000,
    ),
}


@pytest.fixture
def api(world: World, settings: Any, tmp_path: Path) -> tuple[Client, dict[str, str]]:
    settings.MEDIA_ROOT = tmp_path / "media"
    token = api_token_rotate(partner=world.partner, by="test")
    return Client(), {"Authorization": f"Bearer {token}"}


def _check(
    api: tuple[Client, dict[str, str]], name: str, data: bytes
) -> tuple[int, dict[str, Any], float]:
    client, headers = api
    started = time.monotonic()
    answer = client.post("/api/v1/dry-run", {"file": _upload(name, data)}, headers=headers)
    return answer.status_code, answer.json(), time.monotonic() - started


def _upload(name: str, data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data)


def _process_checked(
    api: tuple[Client, dict[str, str]], process: dict[str, str]
) -> tuple[InboundBatch, float]:
    """*Process this file* through the API's token, then the batch as the worker runs it."""
    client, headers = api
    made = client.post("/api/v1/files", process, headers=headers)
    assert made.status_code == 201, made.json()
    batch = InboundFile.objects.get(name=process["name"]).batch
    assert batch is not None
    started = time.monotonic()
    with contextlib.suppress(InboundRejected):  # the batch ends failed, with its receipt
        inbound_batch_process(batch_id=batch.pk)
    took = time.monotonic() - started
    batch.refresh_from_db()
    return batch, took


@pytest.mark.parametrize("shape", list(GZIP_SHAPES))
def test_a_check_of_any_gzip_shape_holds_its_clock_and_the_file_can_be_processed(
    api: tuple[Client, dict[str, str]], settings: Any, shape: str
) -> None:
    make, lines = GZIP_SHAPES[shape]
    settings.PORTAL_DRY_RUN_LINES = lines
    settings.PORTAL_DRY_RUN_SECONDS = 1
    data = make()
    name = "ftp_dpm_21_1700000000.sync.gz"
    status, report, took = _check(api, name, data)
    print(f"{shape}: {len(data) / 1024**2:.1f} MB, checked in {took:.2f} s: {report}"[:400])
    assert took < 1 + SLACK
    if shape == "a truncated member":  # read to its end within the bound: final
        assert status == 400, report
        assert report["errors"][0]["msg"].startswith("the file is corrupt (it ends inside a")
        return
    assert status == 200, report
    if report["complete"]:
        assert report["lines"] > 0
    else:
        assert report["stopped"] in (("time", "bytes") if lines == ALL_LINES else ("lines",))
        if report["lines"] == 0:
            assert report["extent"].startswith("No record in the first ")
    batch, took = _process_checked(api, report["process"])
    print(f"  processed in {took:.2f} s: {batch.status} {batch.error}")
    assert batch.status in (InboundBatch.Status.PROCESSED, InboundBatch.Status.FAILED)
    if shape == "empty members":
        assert batch.error.endswith("the file holds no records")
    assert took < 60


def test_a_checked_gzip_of_empty_members_is_stopped_early_by_processing(
    api: tuple[Client, dict[str, str]], settings: Any
) -> None:
    """Processing counts the compressed bytes consumed even when nothing is inflated: past
    INBOUND_PROPORTION_MIN_BYTES without a line that could apply, the batch stops."""
    settings.PORTAL_DRY_RUN_SECONDS = 1
    settings.INBOUND_PROPORTION_MIN_BYTES = 8 * 1024**2
    status, report, _ = _check(api, "ftp_dpm_21_1700000000.sync.gz", _members(b"", 2_500_000))
    assert status == 200, report
    batch, took = _process_checked(api, report["process"])
    print(f"processed in {took:.2f} s: {batch.error}")
    assert batch.status == InboundBatch.Status.FAILED
    assert re.search(r"stopped after 8\.\d MB read: it holds no line at all", batch.error)
    assert batch.receipt.pk  # a failure receipt, e-mailed like any other
    assert batch.receipt.deliveries.exists()


def test_a_check_of_a_plain_file_holds_its_bytes(
    api: tuple[Client, dict[str, str]], settings: Any
) -> None:
    settings.PORTAL_DRY_RUN_LINES = ALL_LINES
    settings.PORTAL_DRY_RUN_MAX_BYTES = 1024**2
    status, report, _ = _check(api, "ftp_dpm_21_1700000000.sync", _lines(100_000))
    assert status == 200, report
    assert (report["complete"], report["stopped"]) == (False, "bytes")
    assert 0 < report["bytes_read"] <= 1024**2
    assert report["lines"] == report["bytes_read"] // len(_lines(1))  # whole lines only


@NEEDS_GPG
@pytest.mark.parametrize("compression", ["none", "zlib", "bzip2"])
def test_a_check_of_a_big_pgp_file_reads_its_start_and_the_file_can_be_processed(
    api: tuple[Client, dict[str, str]], platform_key: Path, compression: str
) -> None:
    """Before: past about 1 MB the check stopped reading, gpg died of the closed pipe, and
    that was taken for an unreadable file ("no record in the first 10,000 lines"); the
    upload was thrown away."""
    encrypted = encrypt(platform_key, _lines(80_000), "--compress-algo", compression)
    assert len(encrypted) > 1024**2
    status, report, _ = _check(api, "ftp_dpm_21_1700000000.sync.pgp", encrypted)
    assert status == 200, report
    assert (report["complete"], report["stopped"], report["lines"]) == (False, "lines", 10_000)
    assert report["no_matching_ids"] == 10_000
    batch, _ = _process_checked(api, report["process"])
    assert batch.status == InboundBatch.Status.PROCESSED, batch.error
    assert batch.receipt.records_received == 80_000


@NEEDS_GPG
def test_a_check_of_a_pgp_file_holds_its_clock(
    api: tuple[Client, dict[str, str]], platform_key: Path, settings: Any
) -> None:
    settings.PORTAL_DRY_RUN_LINES = ALL_LINES
    settings.PORTAL_DRY_RUN_MAX_BYTES = 10 * 1024**3
    settings.PORTAL_DRY_RUN_SECONDS = 1
    blank = encrypt(platform_key, b"\n" * 256 * 1024**2, "--compress-level", "1")
    status, report, took = _check(api, "ftp_dpm_21_1700000000.sync.gpg", blank)
    print(f"{len(blank)} bytes of PGP (256 MB of blank lines), checked in {took:.2f} s")
    assert status == 200, report
    assert took < 1 + SLACK
    assert (report["complete"], report["stopped"], report["lines"]) == (False, "time", 0)
    assert report["extent"].startswith("No record in the first ")
    assert "then the check stopped: the check reads for at most 1 seconds" in report["extent"]


def test_a_gzip_header_with_a_huge_name_is_read_in_c(
    api: tuple[Client, dict[str, str]], settings: Any
) -> None:
    """A gzip header may carry a file name of any length; Python's gzip reader reads it byte
    by byte (minutes for a gigabyte); zlib skips it."""
    settings.PORTAL_DRY_RUN_SECONDS = 1
    name_field = b"n" * (32 * 1024**2) + b"\0"
    header = b"\x1f\x8b\x08\x08\0\0\0\0\0\xff" + name_field  # FNAME set
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    records = _lines(3)
    deflated = body.compress(records) + body.flush()
    trailer = zlib.crc32(records).to_bytes(4, "little") + len(records).to_bytes(4, "little")
    status, report, took = _check(api, "ftp_dpm_21_1700000000.sync.gz", header + deflated + trailer)
    print(f"a 32 MB name: checked in {took:.2f} s")
    assert took < 1 + SLACK
    assert status == 200, report
    assert report["lines"] in (0, 3)
