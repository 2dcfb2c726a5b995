"""Polling drop zones through the production code path, over S3, SFTP and a local folder."""

from __future__ import annotations

import gzip
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from partners.dropzones.services import inbound_channel_poll, inbound_poll, inbound_purge
from partners.inbound.processing import inbound_batch_process
from partners.inbound.queueing import inbound_waiting_batches_release
from partners.models import ChannelObject, InboundBatch, InboundChannel, InboundFile
from partners.receipts.render import receipt_text
from tests.factories import DataSourceFactory, PartnerFactory
from tests.partners.dropzones.conftest import DropZone, dropzone_make
from tests.partners.inbound.conftest import World
from tests.partners.portal.test_pages import _login

DAY = "acme/date=2026-11-28"
NAME = "ftp_dpm_21_1700000000.sync"


def _poll(zone: DropZone) -> Any:
    return inbound_poll(channel=InboundChannel.objects.get(pk=zone.channel.pk))


def test_a_file_is_registered_once_its_size_held_between_two_polls(
    dropzone: DropZone, world: World
) -> None:
    dropzone.put(f"{DAY}/{NAME}.gz", gzip.compress(b"u1\td_sid=10,d_sid=11\nu9\td_sid=10\n"))
    first = _poll(dropzone)
    assert (first.listed, first.new, first.registered) == (1, 1, [])
    second = _poll(dropzone)
    assert second.registered == [f"{DAY}/{NAME}.gz"]
    assert (_poll(dropzone).registered, _poll(dropzone).new) == ([], 0)  # never twice

    file = InboundFile.objects.get()
    assert (file.name, file.storage) == (f"{NAME}.gz", f"channel:{dropzone.channel.pk}")
    assert file.via == InboundFile.Via.DROPZONE
    assert file.batch is not None
    assert file.batch.status == InboundBatch.Status.QUEUED
    receipt = inbound_batch_process(batch_id=file.batch.pk)  # read from the drop zone
    assert (receipt.records_received, receipt.stored_records) == (2, 1)
    assert world.held(world.u1) == {10, 11}


def test_my_files_shows_a_drop_zone_file_from_the_poll_that_sees_it(
    dropzone: DropZone, world: World
) -> None:
    """Before its size held (the file is registered a poll later), the partner already sees
    it in *My files*; another partner does not."""
    dropzone.put(f"{DAY}/{NAME}", b"u1\td_sid=10\n")
    _poll(dropzone)
    acme = _login(world.partner, "acme")
    [row] = acme.get("/portal/files/status.json").json()["files"]
    assert (row["name"], row["status"], row["status_label"], row["via_label"]) == (
        NAME,
        "seen",
        "Seen, waiting for its size to hold",
        "Drop zone",
    )
    assert "Seen, waiting for its size to hold" in acme.get("/portal/files/").content.decode()
    other = _login(PartnerFactory.create(name="Other"), "other")
    assert other.get("/portal/files/status.json").json()["files"] == []

    _poll(dropzone)  # registered: the row is the file's now
    [row] = acme.get("/portal/files/status.json").json()["files"]
    assert (row["name"], row["status"], row["via"]) == (NAME, "queued", "dropzone")


def test_a_file_still_being_written_waits(dropzone: DropZone, world: World) -> None:
    dropzone.put(f"{DAY}/{NAME}", b"u1\td_sid=10\n")
    _poll(dropzone)
    dropzone.put(f"{DAY}/{NAME}", b"u1\td_sid=10\nu2\td_sid=11\n")  # grew since
    assert _poll(dropzone).registered == []
    assert _poll(dropzone).registered == [f"{DAY}/{NAME}"]
    assert InboundFile.objects.get().size == len(b"u1\td_sid=10\nu2\td_sid=11\n")


def test_foreign_dpids_and_misplaced_files_are_rejected_with_the_reason(
    dropzone: DropZone, world: World
) -> None:
    DataSourceFactory.create(dpid=31, partner=PartnerFactory.create())
    dropzone.put(f"{DAY}/ftp_dpm_31_1700000000.sync", b"u1\td_sid=10\n")
    dropzone.put(f"acme/{NAME}", b"u1\td_sid=10\n")
    dropzone.put(f"{DAY}/traits.csv", b"u1,10\n")
    _poll(dropzone)
    result = _poll(dropzone)
    assert sorted(result.rejected) == sorted(
        [
            (f"acme/{NAME}", "put files in acme/date=YYYY-MM-DD/ (SPEC §3.1), not in acme"),
            (f"{DAY}/ftp_dpm_31_1700000000.sync", "data source 31 belongs to another partner"),
            (
                f"{DAY}/traits.csv",
                "'traits.csv' does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_ or c2c_id_",
            ),
        ]
    )
    assert not InboundBatch.objects.exists()
    # The partner sees each refused file and why, in My files (the row names the file, so
    # its reason says "the name" rather than quoting it again).
    rows = _login(world.partner, "acme").get("/portal/files/status.json").json()["files"]
    assert {(r["name"], r["status"], r["via"], r["error"]) for r in rows} == {
        (
            NAME,
            "rejected",
            "dropzone",
            "put files in acme/date=YYYY-MM-DD/ (SPEC §3.1), not in acme",
        ),
        (
            "ftp_dpm_31_1700000000.sync",
            "rejected",
            "dropzone",
            "data source 31 belongs to another partner",
        ),
        (
            "traits.csv",
            "rejected",
            "dropzone",
            "the name does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_ or c2c_id_",
        ),
    }
    assert _poll(dropzone).rejected == []  # said once


def test_the_outbound_folder_of_a_destination_on_the_channel_is_not_polled(
    dropzone: DropZone, world: World
) -> None:
    from partners.models import Destination

    Destination.objects.create(
        partner=world.partner, name="Acme daily", channel=dropzone.channel, folder="/to-acme/"
    )
    dropzone.put("acme/to-acme/s3_1_21_full_1700000000.sync", b"1234 500,501 \n")
    dropzone.put("acme/to-acme/s3_1_21_full_1700000000.info", b"{}")
    dropzone.put(f"acme/outbound/{NAME}", b"u1\td_sid=10\n")  # no destination's folder
    _poll(dropzone)
    result = _poll(dropzone)
    assert result.listed == 1
    assert result.rejected == [
        (
            f"acme/outbound/{NAME}",
            "put files in acme/date=YYYY-MM-DD/ (SPEC §3.1), not in acme/outbound",
        )
    ]


def test_split_parts_arriving_in_separate_polls_make_one_batch(
    dropzone: DropZone, world: World, settings: Any
) -> None:
    dropzone.put(f"{DAY}/{NAME}.1", b"u1\td_sid=10\n")
    _poll(dropzone)
    _poll(dropzone)
    dropzone.put(f"{DAY}/{NAME}.2", b"u2\td_sid=11\n")
    _poll(dropzone)
    _poll(dropzone)
    [batch] = InboundBatch.objects.all()
    assert batch.status == InboundBatch.Status.WAITING
    assert sorted(f.name for f in batch.files.all()) == [f"{NAME}.1", f"{NAME}.2"]
    later = timezone.now() + timedelta(seconds=settings.INBOUND_PARTS_SETTLE_SECONDS)
    assert [b.pk for b in inbound_waiting_batches_release(now=later)] == [batch.pk]
    receipt = inbound_batch_process(batch_id=batch.pk)
    assert receipt.records_received == 2
    assert (world.held(world.u1), world.held(world.u2)) == ({10}, {11})


def test_a_part_that_never_arrives_makes_the_timeout_receipt(
    dropzone: DropZone, world: World, settings: Any, mailoutbox: Any
) -> None:
    for part in (1, 3):
        dropzone.put(f"{DAY}/{NAME}.{part}", b"u1\td_sid=10\n")
    _poll(dropzone)
    _poll(dropzone)
    [batch] = InboundBatch.objects.all()
    late = batch.created_at + timedelta(seconds=settings.INBOUND_PARTS_MAX_WAIT_SECONDS)
    assert inbound_waiting_batches_release(now=late - timedelta(seconds=1)) == []
    [released] = inbound_waiting_batches_release(now=late)
    assert released.missing_parts == "2"
    receipt = inbound_batch_process(batch_id=batch.pk)
    assert "processed without them): 2" in receipt_text(receipt)


def test_purge_deletes_only_old_files_and_keeps_their_records(
    dropzone: DropZone, world: World
) -> None:
    dropzone.put(f"{DAY}/ftp_dpm_21_1700000000.sync", b"u1\td_sid=10\n")
    dropzone.put(f"{DAY}/ftp_dpm_21_1700000001.sync", b"u2\td_sid=10\n")
    _poll(dropzone)
    _poll(dropzone)
    old, _ = InboundFile.objects.order_by("name")
    InboundFile.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=31))
    result = inbound_purge()
    assert (result.deleted, result.missing) == (1, 0)
    assert not dropzone.exists(f"{DAY}/ftp_dpm_21_1700000000.sync")
    assert dropzone.exists(f"{DAY}/ftp_dpm_21_1700000001.sync")
    old.refresh_from_db()
    assert old.purged_at is not None
    assert ChannelObject.objects.get(file=old).state == ChannelObject.State.PURGED
    assert inbound_purge().deleted == 0  # once
    assert _poll(dropzone).new == 0  # a purged file is not taken again


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["s3", "sftp", "local"])
def test_concurrent_pollers_register_each_file_exactly_once(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any, settings: Any
) -> None:
    world = World()
    zone = dropzone_make(kind, request, world.partner, settings, tmp_path)
    channel = zone.channel
    for number in range(8):
        zone.put(f"{DAY}/ftp_dpm_21_17000000{number:02d}.sync", f"u{number}\td_sid=11\n".encode())
    errors: list[BaseException] = []
    skipped = 0

    def poller(barrier: threading.Barrier) -> None:
        nonlocal skipped
        try:
            barrier.wait()
            result = inbound_channel_poll(channel_id=channel.pk)
            assert result is not None
            skipped += result.skipped
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    for _ in range(3):  # three rounds of four pollers started at the same moment
        barrier = threading.Barrier(4)
        threads = [threading.Thread(target=poller, args=(barrier,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert skipped > 0  # they did meet
    assert InboundFile.objects.count() == 8
    assert ChannelObject.objects.count() == 8
    assert InboundBatch.objects.count() == 8
