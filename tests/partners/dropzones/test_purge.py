"""The retention purge beyond drop zones: portal uploads, and the record of schedule runs."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from partners.models import InboundFile, ScheduleRun
from partners.portal.uploads import upload_accept, upload_store
from partners.schedules import retention_purge_run
from segments.models import SegmentMembershipChange
from tests.factories import SegmentFactory
from tests.partners.inbound.conftest import World


def test_old_uploads_go_checked_ones_never_processed_too_records_stay(
    world: World, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    checked = upload_store(  # "Check only", never processed
        partner=world.partner,
        upload=SimpleUploadedFile("ftp_dpm_21_1700000000.sync", b"u1\td_sid=10\n"),
    )
    fresh_check = upload_store(
        partner=world.partner,
        upload=SimpleUploadedFile("ftp_dpm_21_1700000001.sync", b"u1\td_sid=10\n"),
    )
    upload_accept(
        partner=world.partner,
        upload=SimpleUploadedFile("ftp_dpm_21_1700000002.sync", b"u1\td_sid=10\n"),
    )
    delivered = InboundFile.objects.get()
    month_ago = time.time() - 31 * 86400
    os.utime(default_storage.path(checked.path), (month_ago, month_ago))
    InboundFile.objects.update(received_at=timezone.now() - timedelta(days=31))
    ScheduleRun.objects.create(name="inbound_poll", started_at=timezone.now() - timedelta(days=31))
    ScheduleRun.objects.create(name="inbound_poll", started_at=timezone.now())
    segment = SegmentFactory.create(sid=500, data_source=world.source, rule="10T")
    for days in (31, 29):  # a join a month ago is pruned; one within 30 days stays
        SegmentMembershipChange.objects.create(
            profile=world.u1,
            segment=segment,
            joined=True,
            at=timezone.now() - timedelta(days=days),
        )

    result = retention_purge_run()

    assert result == (
        "1 file older than 30 days deleted, 0 already gone, 1 unclaimed upload deleted;"
        " 0 outbound files older than 8 days deleted; 1 old schedule run record pruned;"
        " 1 membership change older than 30 days pruned;"
        " 0 login records older than 90 days pruned"
    )
    assert SegmentMembershipChange.objects.get().at > timezone.now() - timedelta(days=30)
    assert not default_storage.exists(checked.path)
    assert default_storage.exists(fresh_check.path)
    assert not default_storage.exists(delivered.path)
    delivered.refresh_from_db()
    assert delivered.purged_at is not None  # the record stays
    assert ScheduleRun.objects.count() == 1


def test_a_folder_where_a_file_was_does_not_stop_the_purge(
    world: World, settings: Any, tmp_path: Path, caplog: Any
) -> None:
    """Before: a stored path that had become a folder (IsADirectoryError), or whose folder
    had become a file (NotADirectoryError), crashed the purge: the files after it were never
    deleted, nor the rest of the retention work done. Each is now left alone with its
    reason, and the purge goes on to its end."""
    settings.MEDIA_ROOT = tmp_path / "media"
    uploads = [
        upload_accept(
            partner=world.partner,
            upload=SimpleUploadedFile(f"ftp_dpm_21_170000000{n}.sync", b"u1\td_sid=10\n"),
        )
        for n in range(3)
    ]
    folder_now, file_on_its_way, plain = (
        InboundFile.objects.get(pk=upload.files[0].pk) for upload in uploads
    )
    # The first file's name is now a folder (with something in it); the second file's
    # folder is now a file.
    os.unlink(default_storage.path(folder_now.path))
    os.mkdir(default_storage.path(folder_now.path))
    Path(default_storage.path(folder_now.path), "kept.txt").write_text("not ours")
    way = Path(default_storage.path(file_on_its_way.path)).parent
    os.unlink(default_storage.path(file_on_its_way.path))
    way.rmdir()
    way.write_text("a file where a folder was")
    # A file of a drop-zone channel deleted since: its storage cannot be opened at all.
    orphan = InboundFile.objects.create(
        partner=world.partner,
        name="ftp_dpm_21_1600000000.sync",
        path="x/y.sync",
        size=1,
        storage="channel:999999",
    )
    InboundFile.objects.update(received_at=timezone.now() - timedelta(days=31))
    ScheduleRun.objects.create(name="inbound_poll", started_at=timezone.now() - timedelta(days=31))

    result = retention_purge_run()

    assert result == (
        "1 file older than 30 days deleted, 0 already gone, 2 not files any more and left"
        f" alone ({folder_now.path!r}: a folder stands where the file was;"
        f" {file_on_its_way.path!r}: a folder on its way is now a file), 1 not deleted"
        " (tried again at the next purge: 'x/y.sync': its drop-zone channel no longer"
        " exists), 0 unclaimed uploads deleted; 0 outbound files older than 8 days deleted;"
        " 1 old schedule run record pruned; 0 membership changes older than 30 days pruned;"
        " 0 login records older than 90 days pruned"
    )
    assert not default_storage.exists(plain.path)
    assert Path(default_storage.path(folder_now.path), "kept.txt").read_text() == "not ours"
    assert way.read_text() == "a file where a folder was"
    # Nothing more to do for those left alone; the orphan is tried again next time.
    assert list(InboundFile.objects.filter(purged_at__isnull=True)) == [orphan]
    assert f"purge: {folder_now.path!r} left alone: a folder stands where" in caplog.text
