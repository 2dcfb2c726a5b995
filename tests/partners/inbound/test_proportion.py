"""A small file cannot hold a worker for an hour: lines past the per-user limit are dropped
while parsing (never staged), with the same figures as before; and a file read far out of
proportion to what it could apply stops its batch early, failed, with a receipt saying why."""

from __future__ import annotations

import gzip
import random
import re
import zlib
from pathlib import Path
from typing import Any

import pytest

from partners.inbound.errors import InboundRejected
from partners.inbound.processing import inbound_batch_process, inbound_part_stage
from partners.inbound.registration import inbound_files_register
from partners.models import InboundBatch, LineError, Receipt, StagedPart
from segments.models import ProfileTraits
from tests.partners.inbound.conftest import World, counters


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data, compresslevel=1) if name.endswith(".gz") else data)
    return path


def _failed(path: Path) -> InboundBatch:
    batch = inbound_files_register(paths=[path]).batches[0]
    with pytest.raises(InboundRejected):
        inbound_batch_process(batch_id=batch.pk)
    batch.refresh_from_db()
    assert batch.status == InboundBatch.Status.FAILED
    assert not ProfileTraits.objects.exists()  # nothing applied
    assert batch.receipt.deliveries.exists()  # its receipt, e-mailed like any other
    return batch


def test_a_small_gzip_of_one_user_id_stops_early_with_a_receipt(
    world: World, tmp_path: Path, settings: Any
) -> None:
    """Before: 5 million lines of one user ID (a 279 KB gzip) held a worker 67 s, and the
    5 GB limit allowed an hour."""
    settings.INBOUND_PROPORTION_MIN_LINES = 100_000
    path = _write(tmp_path, "ftp_dpm_21_1700000000.sync.gz", b"u1\td_sid=10\n" * 300_000)
    batch = _failed(path)
    print(batch.error)
    assert batch.error.startswith("ftp_dpm_21_1700000000.sync.gz: stopped at line ")
    assert "over the 200-lines-per-user limit" in batch.error
    assert "Nothing was applied" in batch.error
    stopped_at = int(batch.error.split("stopped at line ")[1].split(":")[0].replace(",", ""))
    assert 100_000 <= stopped_at < 300_000


def test_records_then_millions_of_blank_lines_stop_early(world: World, tmp_path: Path) -> None:
    """200 good lines, then 256 MB of blank lines in a 255 KB gzip (64 s of a worker before):
    the blank lines are counted, not split, and judged as they come."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = packer.compress(b"u1\td_sid=10\n" * 200)
    data += b"".join(packer.compress(b"\n" * 1024**2) for _ in range(256))
    path = tmp_path / "ftp_dpm_21_1700000000.sync.gz"
    path.write_bytes(data + packer.flush())
    batch = _failed(path)
    print(batch.error)
    stopped = r"stopped at line (1,0\d\d,\d\d\d): of its \1 lines, [\d,]+ blank; at most 200 could"
    assert re.search(stopped, batch.error)


def test_lines_too_long_to_be_records_stop_early_by_their_bytes(
    world: World, tmp_path: Path, settings: Any
) -> None:
    settings.INBOUND_PROPORTION_MIN_BYTES = 16 * 1024**2
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = b"".join(packer.compress(b"u1\td_sid=10" * 20_000 + b"\n") for _ in range(400))
    path = tmp_path / "ftp_dpm_21_1700000000.sync.gz"
    path.write_bytes(data + packer.flush())
    batch = _failed(path)
    print(batch.error)
    assert re.search(
        r"stopped after 16\.\d MB read: of its \d+ lines, \d+ format errors;", batch.error
    )
    assert "at most 0 could apply anything (one in every 1 MB is needed)" in batch.error


def test_a_few_records_among_blank_and_rejected_lines_stop_early(
    world: World, tmp_path: Path, settings: Any
) -> None:
    settings.INBOUND_PROPORTION_MIN_LINES = 50_000
    rng = random.Random(1)
    lines = []
    for n in range(120_000):
        lines.append(
            rng.choice([b"", b"\r", b"u1 no tab", b"u2\td_sid=abc", b"u2\tzz=1"])
            if n % 300
            else b"u%d\td_sid=10" % n
        )
    path = _write(tmp_path, "ftp_dpm_21_1700000000.sync", b"\n".join(lines) + b"\n")
    batch = _failed(path)
    print(batch.error)
    assert "stopped at line " in batch.error
    for words in ("blank", "format errors", "realizing or removing no trait"):
        assert words in batch.error
    assert "(fewer than 1 in 100)" in batch.error


def test_a_file_in_proportion_is_processed(world: World, tmp_path: Path, settings: Any) -> None:
    settings.INBOUND_PROPORTION_MIN_LINES = 1_000
    settings.INBOUND_PROPORTION_MIN_BYTES = 1_000
    lines = b"".join(
        b"u1\td_sid=10\n" if n % 50 == 0 else b"u2\tzz=1\n" if n % 2 else b"\n"
        for n in range(5_000)
    )  # 1 in 50 lines realizes a trait: in proportion
    path = _write(tmp_path, "ftp_dpm_21_1700000000.sync", lines)
    receipt = inbound_batch_process(batch_id=inbound_files_register(paths=[path]).batches[0].pk)
    assert (receipt.stored_records, receipt.no_trait_realized) == (100, 200)
    assert receipt.over_line_limit == 2_300  # u2's lines past its 200th


def test_lines_over_the_limit_are_not_staged_and_counted_the_same(
    world: World, tmp_path: Path
) -> None:
    """A part job (its own table, whose rows are counted) of 50,000 lines of one user ID
    stages 200 of them. Before: all 50,000, each then sorted, numbered and listed in SQL."""
    one = _write(tmp_path, "ftp_dpm_21_1700000000.sync.1.gz", b"u1\td_sid=10\n" * 50_000)
    two = _write(tmp_path, "ftp_dpm_21_1700000000.sync.2.gz", b"u1\td_sid=11\nu2\td_sid=11\n")
    batch = inbound_files_register(paths=[one, two]).batches[0]
    first = batch.files.get(split=1)
    part = inbound_part_stage(file_id=first.pk)
    assert part is not None
    assert (part.lines, part.received, part.over_limit) == (200, 50_000, 49_800)
    receipt = inbound_batch_process(batch_id=batch.pk)
    assert not StagedPart.objects.exists()
    assert (receipt.records_received, receipt.over_line_limit) == (50_002, 49_801)
    assert (receipt.records_processed, receipt.stored_records) == (201, 201)
    assert (world.held(world.u1), world.held(world.u2)) == ({10}, {11})
    kept = LineError.objects.filter(batch=batch, kind="over_line_limit")
    assert kept.count() == 49_801
    assert list(kept.order_by("file_name", "line_number").values_list("line_number")[:2]) == [
        (201,),
        (202,),
    ]
    assert kept.get(file_name=two.name).line_number == 1  # u1's 50,001st line


def _receipt_and_errors(path: Path) -> tuple[dict[str, int], list[tuple[Any, ...]], Receipt]:
    receipt = inbound_batch_process(batch_id=inbound_files_register(paths=[path]).batches[0].pk)
    errors = list(
        LineError.objects.filter(batch=receipt.batch)
        .order_by("line_number", "kind")
        .values_list("line_number", "kind", "reason", "line_start")
    )
    return {**counters(receipt), "over": receipt.over_line_limit}, errors, receipt


@pytest.mark.parametrize("processes", [0, 2])
def test_the_limit_is_exact_however_the_lines_are_parsed(
    world: World, tmp_path: Path, settings: Any, processes: int
) -> None:
    """Heavy user IDs spread over many blocks, some of their lines malformed (a format error
    does not count towards the limit): the figures and the kept errors are the ones the
    SQL alone gives (every line staged)."""
    settings.INBOUND_PARALLEL_MIN_BYTES = 0
    settings.INBOUND_PARSE_PROCESSES = processes
    rng = random.Random(7)
    lines = []
    for n in range(60_000):
        user = rng.choice([b"u1", b"u2", b"u1", b"heavy%d" % rng.randrange(3), b"x%d" % n])
        signals = rng.choice([b"d_sid=10", b"d_sid=11,color=red", b"d_sid=", b"10:0"])
        lines.append(user + b"\t" + signals + b" " * rng.randrange(40))
    data = b"\n".join(lines) + b"\n"
    assert len(data) > 3 * (1 << 19)  # several blocks
    parsed, parsed_errors, receipt = _receipt_and_errors(
        _write(tmp_path, "ftp_dpm_21_1700000000.sync", data)
    )
    # What the SPEC says, counted here line by line.
    assert parsed["over"] > 30_000
    assert len(parsed_errors) == receipt.format_errors + parsed["over"] + receipt.no_matching_ids
    formats = sum(1 for line in lines if line.split(b"\t")[1].rstrip().endswith(b"="))
    assert receipt.format_errors == formats
    per_user: dict[bytes, int] = {}
    over = 0
    for line in lines:
        user, signals = line.split(b"\t")
        if signals.rstrip().endswith(b"="):
            continue
        per_user[user] = per_user.get(user, 0) + 1
        over += per_user[user] > 200
    assert parsed["over"] == over
    overs = [n for n, kind, _, _ in parsed_errors if kind == "over_line_limit"]
    seen: dict[bytes, int] = {}
    expected = []
    for number, line in enumerate(lines, start=1):
        user, signals = line.split(b"\t")
        if signals.rstrip().endswith(b"="):
            continue
        seen[user] = seen.get(user, 0) + 1
        if seen[user] > 200:
            expected.append(number)
    assert overs == expected
