"""The check equals the processing: *Check only* runs the real pipeline on the lines it reads
and rolls it back, so each of its figures is what processing those lines gives.

Each test generates a file of one shape with every kind of line in it, checks it, then
processes the same file and compares every counter, the error sample and the per-trait
figures; and the check must have left nothing behind."""

from __future__ import annotations

import gzip
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from partners.inbound.dryrun import CHECK_LOCK_WAIT_MS, DryRunReport, inbound_dry_run
from partners.inbound.errors import InboundRejected
from partners.inbound.processing import inbound_batch_process
from partners.inbound.registration import inbound_files_register
from partners.models import DataSource, IDMapping, InboundBatch, LineError, PendingRecord
from partners.storage import StoredFile
from segments.models import Profile, ProfileTraits
from tests.factories import DataSourceFactory, IDMappingFactory, ProfileFactory, TraitFactory
from tests.partners.inbound.conftest import World, counters

GAID = "3d6f1c2a-5b4e-4f7a-9c8d-{:012x}"
IDFA = "B56E68EC-34ED-46D5-AF0C-{:012X}"


def _state() -> tuple[Any, ...]:
    """Everything a check could change, to compare before and after it."""
    return (
        Profile.objects.count(),
        sorted(ProfileTraits.objects.values_list("profile_id", "data_source_id", "realized")),
        PendingRecord.objects.count(),
        InboundBatch.objects.count(),
        LineError.objects.count(),
        IDMapping.objects.count(),
    )


def _lines(ids: list[str], *, unknown: list[str], invalid: list[str], seed: int) -> str:
    """Lines of every kind, shuffled: realizations, removals, traits of another data source,
    unused signals, a line with no trait, format errors, invalid and unknown IDs, blank
    lines, CRLF, and one user over the 200-lines cap."""
    rng = random.Random(seed)
    lines = []
    for user in ids:
        lines.append(f"{user}\td_sid=10,d_sid=11")
        lines.append(f"{user}\t{rng.choice(['10:0', '11:0', 'd_unsid=11'])}")  # removals
        lines.append(f"{user}\td_sid=90,zz=1")  # another data source's trait; unused signal
        lines.append(f"{user}\td_sid=12")
    lines += [f"{user}\td_sid=10" for user in unknown]
    lines += [f"{user}\td_sid=11" for user in invalid]
    lines += ["u1 d_sid=10", "\td_sid=10", "u2\td_sid=abc", "u2\t"]  # format errors
    lines += ["", "   "]
    lines += [f"{ids[0]}\td_sid=12"] * 205  # over the 200-lines cap
    rng.shuffle(lines)
    return "".join(line + rng.choice(["\n", "\r\n"]) for line in lines)


def _check_then_process(
    path: Path, partner: Any, *, sample_lines: int = 100_000
) -> tuple[DryRunReport, Any]:
    before = _state()
    report = inbound_dry_run(
        file=StoredFile.local(path), partner=partner, sample_lines=sample_lines
    )
    assert _state() == before, "the check left something behind"
    registration = inbound_files_register(paths=[path])
    receipt = inbound_batch_process(batch_id=registration.batches[0].pk)
    return report, receipt


def _assert_same(report: DryRunReport, receipt: Any) -> None:
    assert report.complete
    assert counters(report.receipt) == counters(receipt)
    assert report.receipt.pending_records == receipt.pending_records
    assert report.receipt.over_line_limit == receipt.over_line_limit
    assert report.receipt.errors_sample == receipt.errors_sample
    assert sum(report.realized.values()) == receipt.total_realized_traits
    assert sum(report.removed.values()) == receipt.total_removed_traits
    assert report.user_ids_matched <= report.user_ids_valid


def _nonzero(receipt: Any) -> set[str]:
    """The counters that are not 0: the shape under test holds lines of those kinds."""
    return {name for name, value in counters(receipt).items() if value}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


@pytest.fixture
def dpuuids(world: World) -> list[str]:
    TraitFactory.create(sid=12, data_source=world.source)
    users = ["u1", "u2"]
    for n in range(3, 40):
        IDMappingFactory.create(data_source=world.source, dpuuid=f"u{n}")
        users.append(f"u{n}")
    # A DPUUID mapped to two profiles: its realizations fan out.
    IDMappingFactory.create(data_source=world.source, dpuuid="u5")
    return users


@pytest.mark.parametrize(
    "name",
    [
        "ftp_dpm_21_1700000000.sync",
        "ftp_dpm_21_1700000000.sync.gz",
        "ftp_dpm_21_1700000000.overwrite",
    ],
)
def test_dpuuid_files(world: World, dpuuids: list[str], tmp_path: Path, name: str) -> None:
    # Traits held before, so that removals and overwrites (13, never sent) remove something.
    TraitFactory.create(sid=13, data_source=world.source)
    for profile in (world.u1, world.u2):
        now = int(time.time())
        ProfileTraits.objects.create(
            profile=profile,
            data_source=world.source,
            realized={"10": now, "11": now, "13": now},
            updated_at=timezone.now(),
        )
    text = _lines(dpuuids, unknown=["n1", "n2", "n3"], invalid=["x\x07y", "%253A"], seed=1)
    report, receipt = _check_then_process(_write(tmp_path, name, text), world.partner)
    _assert_same(report, receipt)
    assert _nonzero(receipt) >= {
        "format_errors",
        "invalid_ids",
        "no_matching_ids",
        "no_trait_realized",
        "total_traits_failed_validation",
        "total_unused_signals",
        "total_removed_traits",
    }
    assert receipt.over_line_limit == 4 + 205 - 200  # the first user's own 4 lines and 205


def test_platform_uuid_file(world: World, tmp_path: Path) -> None:
    source = DataSourceFactory.create(dpid=31, partner=world.partner, inbound_id_type="uuid")
    for sid in (10, 11, 12):
        TraitFactory.create(sid=300 + sid, data_source=source)
    known = [ProfileFactory.create().uuid for _ in range(5)]
    new = [f"{n:038d}" for n in range(1, 6)]
    text = _lines(known + new, unknown=[], invalid=["1234", "abc"], seed=2).replace(
        "d_sid=1", "d_sid=31"
    )
    report, receipt = _check_then_process(
        _write(tmp_path, "ftp_dpm_31_1700000000.sync", text), world.partner
    )
    _assert_same(report, receipt)
    assert _nonzero(receipt) >= {"stored_records", "invalid_ids"}
    assert Profile.objects.filter(uuid__in=new).count() == 5  # made by processing, not the check


def test_global_device_ids_with_a_target(world: World, dpuuids: list[str], tmp_path: Path) -> None:
    gaids = [GAID.format(n) for n in range(20)]
    for gaid in gaids[:12]:
        IDMappingFactory.create(data_source_id=20914, dpuuid=gaid)
    text = _lines(gaids, unknown=[GAID.format(999)], invalid=[gaids[0].upper(), "zz"], seed=3)
    report, receipt = _check_then_process(
        _write(tmp_path, "ftp_dpm_20914_21_1700000000.sync.gz", text), world.partner
    )
    _assert_same(report, receipt)
    assert _nonzero(receipt) >= {"invalid_ids", "no_matching_ids", "stored_records"}


def test_legacy_device_file(world: World, tmp_path: Path) -> None:
    source = DataSourceFactory.create(dpid=12345, partner=world.partner)
    for sid in (10, 11, 12, 90):
        TraitFactory.create(sid=12000 + sid, data_source=source)
    idfas = [IDFA.format(n) for n in range(10)]
    for idfa in idfas[:6]:
        IDMappingFactory.create(data_source_id=20915, dpuuid=idfa)
    rng = random.Random(4)
    lines = [
        f"idfa\t{idfa}\t{rng.choice(['12010', '12011', '12010,12011', '90', '7'])}"
        for idfa in idfas
    ]
    lines += [f"idfa\t{IDFA.format(777)}\t12010", "idfa\tnot-an-idfa\t12010"]
    lines += ["idfa\tno-signals", "gaid\t3d6f1c2a-5b4e-4f7a-9c8d-000000000001\t12010", ""]
    rng.shuffle(lines)
    text = "\n".join(lines) + "\n"
    report, receipt = _check_then_process(
        _write(tmp_path, "ftp_dpm_odc_12345_1700000000.sync", text), world.partner
    )
    _assert_same(report, receipt)
    assert _nonzero(receipt) >= {"stored_records", "no_matching_ids"}


def test_cross_device_file_keeps_pending_records(
    world: World, dpuuids: list[str], tmp_path: Path
) -> None:
    DataSource.objects.filter(pk=world.source.pk).update(id_type="cross_device")
    text = _lines(dpuuids[:10], unknown=["p1", "p2", "p3"], invalid=[], seed=5)
    report, receipt = _check_then_process(
        _write(tmp_path, "ftp_dpm_21_1700000000.sync", text), world.partner
    )
    _assert_same(report, receipt)
    assert receipt.pending_records == 3
    assert PendingRecord.objects.count() == 3  # processing's, none of the check's


def test_a_bounded_check_equals_processing_the_lines_it_read(
    world: World, dpuuids: list[str], tmp_path: Path
) -> None:
    text = _lines(dpuuids, unknown=["n1", "n2"], invalid=["a\x1bb"], seed=6)
    (tmp_path / "whole").mkdir()
    whole = _write(tmp_path / "whole", "ftp_dpm_21_1700000000.sync", text)
    report = inbound_dry_run(file=StoredFile.local(whole), partner=world.partner, sample_lines=60)
    assert (report.complete, report.stopped) == (False, "lines")
    head = "".join(text.splitlines(keepends=True)[:60])
    registration = inbound_files_register(paths=[_write(tmp_path, whole.name, head)])
    receipt = inbound_batch_process(batch_id=registration.batches[0].pk)
    assert counters(report.receipt) == counters(receipt)
    assert report.receipt.errors_sample == receipt.errors_sample


def test_the_check_and_the_receipt_name_a_line_the_same(world: World, tmp_path: Path) -> None:
    """Before: the check called 'no trait realized' a line processing calls 'no matching ID',
    and counted the signals of unmapped user IDs as realized and unused."""
    path = _write(tmp_path, "ftp_dpm_21_1700000000.sync", "u9\td_sid=10,zz=1\nu1\td_sid=10\n")
    report = inbound_dry_run(file=StoredFile.local(path), partner=world.partner, sample_lines=10)
    assert (report.receipt.no_matching_ids, report.receipt.no_trait_realized) == (1, 0)
    assert (report.receipt.total_unused_signals, report.realized) == (0, {10: 1})
    assert [e["kind"] for e in report.errors] == ["no_matching_id"]


@pytest.mark.django_db(transaction=True)
def test_a_check_behind_a_running_batch_says_so(world: World, tmp_path: Path) -> None:
    """A row a running batch holds makes the check answer within CHECK_LOCK_WAIT_MS that it
    is busy, instead of holding the web request until the batch commits."""
    ProfileTraits.objects.create(
        profile=world.u1, data_source=world.source, realized={}, updated_at=timezone.now()
    )
    path = _write(tmp_path, "ftp_dpm_21_1700000000.sync", "u1\td_sid=10\n")
    locked, release = threading.Event(), threading.Event()

    def running_batch() -> None:
        try:
            with transaction.atomic():
                list(ProfileTraits.objects.select_for_update().filter(profile=world.u1))
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=running_batch)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        with pytest.raises(InboundRejected, match="data source 21 is being processed right now"):
            inbound_dry_run(file=StoredFile.local(path), partner=world.partner, sample_lines=10)
        assert time.monotonic() - started < CHECK_LOCK_WAIT_MS / 1000 + 3
    finally:
        release.set()
        holder.join()
    assert ProfileTraits.objects.get(profile=world.u1).realized == {}
