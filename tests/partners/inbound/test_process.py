from __future__ import annotations

import gzip
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from partners.inbound.errors import InboundRejected
from partners.inbound.processing import inbound_batch_process
from partners.inbound.registration import inbound_files_register
from partners.models import InboundBatch, InboundFile, LineError, PendingRecord
from segments.models import Profile, ProfileTraits, Segment, SegmentMembership
from tests.factories import (
    DataSourceFactory,
    IDMappingFactory,
    ProfileFactory,
    SegmentFactory,
    TraitFactory,
    random_uuid,
)
from tests.partners.inbound.conftest import Deliver, World, counters, expect


def test_the_spec_worked_example(world: World, deliver: Deliver) -> None:
    receipt = deliver(
        {
            "ftp_dpm_21_1700000000.sync": "u1\td_sid=10,d_sid=11\n"
            "u2\td_sid=90,zz=1\n"
            "u9\td_sid=10\n"
            "u1 d_sid=10\n"
        }
    )
    assert counters(receipt) == expect(
        records_received=4,
        format_errors=1,
        no_matching_ids=1,
        no_trait_realized=1,
        records_processed=4,
        stored_records=1,
        total_devices=1,
        total_signals=5,
        total_unused_signals=1,
        total_realized_traits=2,
        total_traits_failed_validation=1,
        total_users_with_failed_traits=1,
    )
    assert world.held(world.u1) == {10, 11}
    assert world.held(world.u2) == set()
    kinds = [(e["kind"], e["line"]) for e in receipt.errors_sample]
    assert kinds == [
        ("format_error", 4),
        ("no_matching_id", 3),
        ("no_trait_realized", 2),
        ("trait_failed_validation", 2),
    ]


SYNC = "ftp_dpm_21_1700000000.sync"


def test_every_signal_form(world: World, deliver: Deliver) -> None:
    TraitFactory.create(sid=12, data_source=world.source, rule='"plan" == "gold" AND age >= 30')
    TraitFactory.create(sid=13, data_source=world.source, rule='ic == "PREMIUM"')
    TraitFactory.create(sid=14, data_source=world.source, rule="city contains york")
    receipt = deliver(
        {
            SYNC: "u1\td_sid=10 , 11:0\n"  # realize 10; remove 11 (not held: nothing)
            'u1\t"plan"="Gold", age = 31\n'  # key-value, quoted key and value, spaces
            'u2\tplan="gold",-age=45, PREMIUM\n'  # leading '-' dropped; bare code
            'u2\t"city"=New York: Manhattan,ic=premium\n'  # value with space and colon
        }
    )
    assert world.held(world.u1) == {10, 12}
    assert world.held(world.u2) == {12, 13, 14}
    assert counters(receipt) == expect(
        records_received=4,
        records_processed=4,
        stored_records=4,
        total_devices=2,
        total_signals=9,
        total_realized_traits=1 + 1 + 2 + 2,
    )


def test_removals_in_sync_files(world: World, deliver: Deliver) -> None:
    deliver({SYNC: "u1\td_sid=10,d_sid=11\nu2\td_sid=10\n"})
    receipt = deliver(
        {
            "ftp_dpm_21_1700086400.sync": "u1\td_unsid=10\n"
            "u1\t11:-1\n"
            "u2\t10:0,d_unsid=11\n"  # 11 not held by u2: not counted
        }
    )
    assert world.held(world.u1) == set()
    assert world.held(world.u2) == set()
    assert receipt.total_removed_traits == 3
    assert receipt.total_devices == 2
    assert receipt.no_trait_realized == 0


def test_realize_then_remove_in_one_file_follows_line_order(world: World, deliver: Deliver) -> None:
    receipt = deliver(
        {SYNC: "u1\td_sid=10\nu1\td_unsid=10\nu1\td_sid=11\nu1\td_unsid=11\nu1\td_sid=11\n"}
    )
    assert world.held(world.u1) == {11}
    assert (receipt.total_realized_traits, receipt.total_removed_traits) == (3, 2)


def test_overwrite_replaces_the_users_traits_and_ignores_removals(
    world: World, deliver: Deliver
) -> None:
    TraitFactory.create(sid=12, data_source=world.source)
    u3 = IDMappingFactory.create(data_source=world.source, dpuuid="u3").profile
    # Day 1: incremental.
    deliver({SYNC: "u1\td_sid=10,d_sid=11\nu2\td_sid=10\nu3\td_sid=11\n"})
    # Day 2: u1 and u2 are sent in full; u3 is not in the file and keeps its traits.
    receipt = deliver(
        {"ftp_dpm_21_1700086400.overwrite": "u1\td_sid=12,d_unsid=12\nu2\td_sid=10,d_sid=11,10:0\n"}
    )
    assert world.held(world.u1) == {12}
    assert world.held(world.u2) == {10, 11}
    assert world.held(u3) == {11}
    assert counters(receipt) == expect(
        records_received=2,
        records_processed=2,
        stored_records=2,
        total_devices=2,
        total_signals=5,
        total_realized_traits=3,
        total_removed_traits=2,  # u1 lost 10 and 11
    )
    # Day 3: back to incremental.
    deliver({"ftp_dpm_21_1700172800.sync": "u1\td_sid=10\n"})
    assert world.held(world.u1) == {10, 12}


def test_overwrite_leaves_traits_of_other_data_sources(world: World, deliver: Deliver) -> None:
    TraitFactory.create(sid=23, data_source=world.other)
    IDMappingFactory.create(data_source=world.other, dpuuid="u1-22", profile=world.u1)
    deliver({"ftp_dpm_22_1700000000.sync": "u1-22\td_sid=23\n"})
    deliver({"ftp_dpm_21_1700000000.overwrite": "u1\td_sid=10\n"})
    assert world.held(world.u1, 22) == {23}
    assert world.held(world.u1) == {10}


def test_fan_out_to_every_mapped_profile(world: World, deliver: Deliver) -> None:
    second = IDMappingFactory.create(data_source=world.source, dpuuid="u1").profile
    third = IDMappingFactory.create(data_source=world.source, dpuuid="u1").profile
    receipt = deliver({SYNC: "u1\td_sid=10,d_sid=11\n"})
    assert receipt.total_realized_traits == 6
    assert receipt.total_devices == 3
    assert receipt.stored_records == 1
    for profile in (world.u1, second, third):
        assert world.held(profile) == {10, 11}


def test_realizing_again_refreshes_the_time(world: World, deliver: Deliver) -> None:
    deliver({SYNC: "u1\td_sid=10\n"})
    row = ProfileTraits.objects.get(profile=world.u1, data_source=world.source)
    row.realized["10"] -= 86400 * 3
    ProfileTraits.objects.filter(profile=world.u1, data_source=world.source).update(
        realized=row.realized
    )
    receipt = deliver({"ftp_dpm_21_1700086400.sync": "u1\td_sid=10\n"})
    assert receipt.total_realized_traits == 1
    fresh = ProfileTraits.objects.get(profile=world.u1, data_source=world.source).realized["10"]
    assert fresh >= int(timezone.now().timestamp()) - 60


def test_format_errors(world: World, deliver: Deliver) -> None:
    long_line = "u1\t" + ",".join(["d_sid=10"] * 12_000) + "\n"  # > 102,400 bytes
    content = (
        b"u1\n"  # no tab
        b"\td_sid=10\n"  # empty user ID
        b"u1\td_sid=abc\n"  # malformed signal: the whole line is out
        b"u1\td_sid=10,,d_sid=11\n"  # empty signal
        b'u1\t"plan=gold\n'  # unbalanced quote
        b"u1\tcolor=\n"  # empty value
        b"u1\t\xff\xfe=1\n" + long_line.encode() + b"u1\td_sid=10\n"  # not UTF-8
    )
    receipt = deliver({SYNC: content})
    assert counters(receipt) == expect(
        records_received=9,
        format_errors=8,
        records_processed=9,
        stored_records=1,
        total_devices=1,
        total_signals=1,
        total_realized_traits=1,
    )
    reasons = list(
        LineError.objects.filter(batch=receipt.batch)
        .order_by("line_number")
        .values_list("line_number", "reason")
    )
    assert reasons[:3] == [
        (1, "no tab between the user ID and the signals"),
        (2, "empty user ID"),
        (3, "'d_sid=abc': d_sid needs a trait ID (a positive number)"),
    ]
    assert (8, "line longer than 102,400 bytes") in reasons
    assert (7, "not UTF-8 text (byte 4)") in reasons


def test_crlf_bom_blank_lines_and_no_final_newline(world: World, deliver: Deliver) -> None:
    content = b"\xef\xbb\xbfu1\td_sid=10\r\n\r\nu2\td_sid=11\r\n\n\n  \nu1\td_sid=11"
    receipt = deliver({SYNC: content})
    assert receipt.records_received == 3
    assert receipt.format_errors == 0
    assert world.held(world.u1) == {10, 11}
    assert world.held(world.u2) == {11}


def test_the_200_lines_per_user_cap(world: World, deliver: Deliver) -> None:
    lines = "u1\td_sid=10\n" * 199 + "u1\td_sid=11\n" + "u1\td_unsid=10\n" * 5 + "u2\td_sid=10\n"
    receipt = deliver({SYNC: lines})
    assert receipt.records_received == 206
    assert receipt.records_processed == 201
    assert receipt.stored_records == 201
    assert world.held(world.u1) == {10, 11}  # the removals came after the cap
    assert LineError.objects.filter(batch=receipt.batch, kind="over_line_limit").count() == 5


def test_platform_uuid_data_source(world: World, deliver: Deliver) -> None:
    uuid_source = DataSourceFactory.create(dpid=31, partner=world.partner, inbound_id_type="uuid")
    TraitFactory.create(sid=40, data_source=uuid_source)
    known = ProfileFactory.create()
    new_uuid = random_uuid()
    receipt = deliver(
        {
            "ftp_dpm_31_1700000000.sync": f"{known.uuid}\td_sid=40\n"
            f"{new_uuid}\td_sid=40\n"
            "1234\td_sid=40\n"  # not 38 digits
        }
    )
    assert counters(receipt) == expect(
        records_received=3,
        invalid_ids=1,
        records_processed=3,
        stored_records=2,
        total_devices=2,
        total_signals=3,
        total_realized_traits=2,
    )
    assert world.held(Profile.objects.get(uuid=new_uuid), 31) == {40}


def test_global_device_ids_with_a_target(world: World, deliver: Deliver) -> None:
    gaid = "3d6f1c2a-5b4e-4f7a-9c8d-1e2f3a4b5c6d"
    device_profile = IDMappingFactory.create(data_source_id=20914, dpuuid=gaid).profile
    receipt = deliver(
        {
            "ftp_dpm_20914_21_1700000000.sync": f"{gaid}\td_sid=10\n"
            f"{gaid.upper()}\td_sid=10\n"  # GAIDs are lowercase
            "3d6f1c2a-0000-4f7a-9c8d-1e2f3a4b5c6e\td_sid=10\n"  # well-formed, unmapped
        }
    )
    assert (receipt.invalid_ids, receipt.no_matching_ids, receipt.stored_records) == (1, 1, 1)
    assert world.held(device_profile) == {10}


def test_legacy_device_file(world: World, fixtures_dir: Path, deliver: Deliver) -> None:
    source = DataSourceFactory.create(dpid=12345, partner=world.partner)
    TraitFactory.create(sid=38838, data_source=source)
    idfa = "B56E68EC-34ED-46D5-AF0C-1D2401F676C9"
    profile = IDMappingFactory.create(data_source_id=20915, dpuuid=idfa).profile
    receipt = deliver(
        {
            "ftp_dpm_odc_12345_1556223815.sync": (
                fixtures_dir / "ftp_dpm_odc_12345_1556223815.sync"
            ).read_bytes()
        }
    )
    assert counters(receipt) == expect(
        records_received=8,
        invalid_ids=0,
        no_matching_ids=7,
        records_processed=8,
        stored_records=1,
        total_devices=1,
        total_signals=8,
        total_realized_traits=1,
    )
    assert world.held(profile, 12345) == {38838}


def test_split_parts_in_any_order_form_one_batch(world: World, tmp_path: Path) -> None:
    names = ["ftp_dpm_21_1700000000.sync.3.gz", "ftp_dpm_21_1700000000.sync.1.gz"]
    (tmp_path / names[0]).write_bytes(gzip.compress(b"u1\td_sid=10\n"))
    (tmp_path / names[1]).write_bytes(gzip.compress(b"u1\td_unsid=10\nu2\td_sid=11\n"))
    registration = inbound_files_register(paths=[tmp_path / n for n in names])
    assert len(registration.batches) == 1
    receipt = inbound_batch_process(batch_id=registration.batches[0].pk)
    assert receipt.records_received == 3
    assert world.held(world.u1) == {10}  # part 1 before part 3, whatever the delivery order
    assert world.held(world.u2) == {11}


def test_a_duplicate_delivery_is_not_applied_again(world: World, tmp_path: Path) -> None:
    path = tmp_path / SYNC
    path.write_text("u1\td_sid=10\n")
    first = inbound_files_register(paths=[path])
    inbound_batch_process(batch_id=first.batches[0].pk)
    again = inbound_files_register(paths=[path])
    assert again.batches == []
    assert [f.status for f in again.duplicates] == [InboundFile.Status.DUPLICATE]
    # Same name, new content: a new delivery.
    path.write_text("u1\td_sid=11\n")
    third = inbound_files_register(paths=[path])
    inbound_batch_process(batch_id=third.batches[0].pk)
    assert world.held(world.u1) == {10, 11}


def test_processing_a_batch_twice_changes_nothing(world: World, tmp_path: Path) -> None:
    path = tmp_path / SYNC
    path.write_text("u1\td_sid=10\n")
    batch = inbound_files_register(paths=[path]).batches[0]
    first = inbound_batch_process(batch_id=batch.pk)
    second = inbound_batch_process(batch_id=batch.pk)
    assert first.pk == second.pk
    assert ProfileTraits.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("ftp_dpm_21_170000000.sync", "u1\td_sid=10\n", "'170000000' is not a 10-digit timestamp"),
        ("ftp_dpm_99_1700000000.sync", "u1\td_sid=10\n", "DPID 99 is not a data source we know"),
        ("ftp_dpm_21_1700000000.sync", "", "the file is empty"),
        (
            "ftp_dpm_20914_1700000000.sync",
            "x\td_sid=10\n",
            "DPID 20914 is a global device data source: the name needs a target DPID",
        ),
        ("ftp_dpm_21_1700000000.sync.gz.pgp", "x", "gzip and PGP together are not allowed"),
        ("ftp_dpm_77_1700000000.sync", "x\td_sid=1\n", "data source 77 belongs to another partner"),
    ],
)
def test_files_that_cannot_be_processed_change_nothing(
    world: World, tmp_path: Path, name: str, content: str, reason: str
) -> None:
    DataSourceFactory.create(dpid=77)  # another partner's
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InboundRejected) as caught:
        inbound_files_register(paths=[path], partner=world.partner)
    assert reason in caught.value.reason
    assert not InboundBatch.objects.exists()


def test_a_corrupt_gzip_fails_the_batch_and_changes_nothing(world: World, tmp_path: Path) -> None:
    good = tmp_path / "ftp_dpm_21_1700000000.sync.1.gz"
    good.write_bytes(gzip.compress(b"u1\td_sid=10\n"))
    bad = tmp_path / "ftp_dpm_21_1700000000.sync.2.gz"
    bad.write_bytes(gzip.compress(b"u2\td_sid=10\n" * 1000)[:40])  # cut short
    batch = inbound_files_register(paths=[good, bad]).batches[0]
    with pytest.raises(InboundRejected) as caught:
        inbound_batch_process(batch_id=batch.pk)
    assert "ftp_dpm_21_1700000000.sync.2.gz: the file is corrupt" in caught.value.reason
    batch.refresh_from_db()
    assert batch.status == InboundBatch.Status.FAILED
    assert "corrupt" in batch.error
    assert not ProfileTraits.objects.exists()


def test_cross_device_records_wait_for_their_mapping(world: World, deliver: Deliver) -> None:
    world.source.id_type = "cross_device"
    world.source.save()
    receipt = deliver({SYNC: "u7\td_sid=10\n"})
    assert (receipt.no_matching_ids, receipt.pending_records) == (1, 1)
    pending = PendingRecord.objects.get()
    assert (pending.dpuuid, pending.adds) == ("u7", [10])


def test_segment_membership_follows_the_batch(world: World, deliver: Deliver) -> None:
    both = SegmentFactory.create(sid=500, data_source=world.source, rule="10T AND 11T")
    recent = SegmentFactory.create(sid=501, data_source=world.source, rule="[10T] <= 30D")
    not_ten = SegmentFactory.create(sid=502, data_source=world.source, rule="11T AND NOT 10T")
    paused = SegmentFactory.create(sid=503, data_source=world.source, rule="11T", status="paused")
    deliver({SYNC: "u1\td_sid=10,d_sid=11\nu2\td_sid=11\n"})

    def members(segment: Segment) -> set[int]:
        return set(
            SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True)
        )

    assert members(both) == {world.u1.pk}
    assert members(recent) == {world.u1.pk}
    assert members(not_ten) == {world.u2.pk}
    assert members(paused) == set()
    deliver({"ftp_dpm_21_1700086400.sync": "u1\td_unsid=10\n"})
    assert members(both) == set()
    assert members(not_ten) == {world.u1.pk, world.u2.pk}


def test_expired_traits_do_not_count_as_held(world: World, deliver: Deliver) -> None:
    deliver({SYNC: "u1\td_sid=10\n"})
    old = int((timezone.now() - timedelta(days=200)).timestamp())
    ProfileTraits.objects.filter(profile=world.u1).update(realized={"10": old})
    receipt = deliver({"ftp_dpm_21_1700086400.sync": "u1\td_unsid=10\n"})
    assert receipt.total_removed_traits == 0


def test_a_gzip_bomb_is_stopped_at_the_uncompressed_limit(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real limit is 5 GB; the same check at 1 MB keeps the test small.
    monkeypatch.setattr("partners.inbound.sources.MAX_UNCOMPRESSED_BYTES", 1024 * 1024)
    path = tmp_path / "ftp_dpm_21_1700000000.sync.gz"
    with gzip.open(path, "wb") as out:
        for _ in range(200):
            out.write(b"u1\td_sid=10\n" * 1000)  # 2.4 MB inflated, a few KB compressed
    batch = inbound_files_register(paths=[path]).batches[0]
    with pytest.raises(InboundRejected, match=r"the file is larger than the [0-9.]+ GB limit"):
        inbound_batch_process(batch_id=batch.pk)
    assert not ProfileTraits.objects.exists()


def test_one_endless_line_is_one_format_error(world: World, tmp_path: Path) -> None:
    path = tmp_path / "ftp_dpm_21_1700000000.sync.gz"
    with gzip.open(path, "wb") as out:
        out.write(b"u1\t")
        for _ in range(50):
            out.write(b"d_sid=10," * 100_000)  # 45 MB on one line, never held whole
        out.write(b"d_sid=10\nu2\td_sid=11\n")
    receipt = inbound_batch_process(batch_id=inbound_files_register(paths=[path]).batches[0].pk)
    assert (receipt.records_received, receipt.format_errors, receipt.stored_records) == (2, 1, 1)
    assert world.held(world.u2) == {11}


def test_a_line_with_a_nul_character_is_a_format_error(world: World, deliver: Deliver) -> None:
    receipt = deliver({SYNC: "u1\td_sid=10\nu2\td_sid=11,x=a\x00b\n"})
    assert (receipt.format_errors, receipt.stored_records) == (1, 1)
    assert receipt.errors_sample[0]["reason"] == "the line holds a NUL character"


def test_parse_processes_give_the_same_result_as_one_process(
    world: World, deliver: Deliver, settings: Any
) -> None:
    """A big batch is parsed by a pool of processes, block by block: same receipt, same
    rejected lines, same stored traits as parsing in process."""
    TraitFactory.create(sid=12, data_source=world.source, rule="age >= 30")
    lines = []
    for n in range(40_000):  # ~0.9 MB: several blocks of lines
        user = ("u1", "u2", "u9", "u:1")[n % 4]
        signals = ("d_sid=10", "d_sid=11,age=31", "d_sid=90", "age=20,zz=1", ",")[n % 5]
        lines.append(f"{user}\t{signals}\n" if n % 997 else "no tab here\n")
    content = "".join(lines)

    def run(stamp: int, *, processes: int) -> tuple[Any, ...]:
        settings.INBOUND_PARSE_PROCESSES = processes
        settings.INBOUND_PARALLEL_MIN_BYTES = 0
        ProfileTraits.objects.all().delete()
        receipt = deliver({f"ftp_dpm_21_{stamp}.sync": content})
        errors = list(
            LineError.objects.filter(batch=receipt.batch)
            .order_by("line_number", "kind")
            .values_list("line_number", "kind", "reason", "line_start")
        )
        sample = [{k: v for k, v in e.items() if k != "file"} for e in receipt.errors_sample]
        held = (world.held(world.u1), world.held(world.u2))
        return counters(receipt), sample, errors, held

    in_process = run(1700000000, processes=0)
    assert in_process[0]["records_received"] == 40_000
    assert in_process[0]["format_errors"] > 40  # the tab-less lines and the empty signals
    assert run(1700000001, processes=2) == in_process


def test_lines_holding_nul_with_bad_utf8_or_past_the_limit_are_rejected_and_the_batch_ends(
    world: World, deliver: Deliver
) -> None:
    """PostgreSQL text cannot hold NUL: every kept start of a rejected line is shown without
    it, whatever else is wrong with the line (not UTF-8, too long), so the errors store."""
    from partners.inbound.lines import MAX_LINE_BYTES

    data = (
        b"u1\td_sid=10\n"
        b"u2\td_sid=10\x00\xff\n"  # NUL and a byte that is not UTF-8
        + b"u2\t\x00"
        + b"a" * MAX_LINE_BYTES
        + b"\n"  # NUL and too long
        + b"u2\t\x00" * 30_000
        + b"\n"  # too long while streaming
    )
    receipt = deliver({"ftp_dpm_21_1700000000.sync": data})
    assert (receipt.records_received, receipt.format_errors, receipt.stored_records) == (4, 3, 1)
    starts = list(receipt.batch.line_errors.order_by("line_number").values_list("line_start"))
    assert len(starts) == 3
    assert all("\x00" not in start and "\ufffd" in start for (start,) in starts)


def test_the_same_file_delivered_twice_before_processing_is_applied_once(
    world: World, tmp_path: Path
) -> None:
    """Both deliveries are registered before either is processed (so neither is a duplicate
    yet); the second to be processed finds the first applied and ends as a duplicate."""
    path = tmp_path / "ftp_dpm_21_1700000000.sync"
    path.write_text("u1\td_sid=10\n")
    first = inbound_files_register(paths=[path]).batches[0]
    second = inbound_files_register(paths=[path]).batches[0]
    assert inbound_batch_process(batch_id=first.pk).stored_records == 1
    with pytest.raises(InboundRejected, match="already processed"):
        inbound_batch_process(batch_id=second.pk)
    second.refresh_from_db()
    assert second.status == InboundBatch.Status.DUPLICATE
    assert second.finished_at is not None
    [copy] = InboundFile.objects.exclude(batch=first)
    assert (copy.status, copy.error) == (
        InboundFile.Status.DUPLICATE,
        "already processed (same name and content)",
    )
    assert world.held(world.u1) == {10}
    with pytest.raises(InboundRejected, match="already processed"):  # and again, the same
        inbound_batch_process(batch_id=second.pk)


def test_a_user_id_with_a_control_character_is_an_invalid_id(
    world: World, deliver: Deliver
) -> None:
    """Before: 'u1\\x07' was looked up as a DPUUID (and, once mapped, exported as it is)."""
    receipt = deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu1\x07\td_sid=10\n"})
    assert (receipt.invalid_ids, receipt.stored_records) == (1, 1)
    assert [e["reason"] for e in receipt.errors_sample] == [
        "a DPUUID must not hold a control character (U+0007)"
    ]
