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
        " 1 membership change older than 30 days pruned"
    )
    assert SegmentMembershipChange.objects.get().at > timezone.now() - timedelta(days=30)
    assert not default_storage.exists(checked.path)
    assert default_storage.exists(fresh_check.path)
    assert not default_storage.exists(delivered.path)
    delivered.refresh_from_db()
    assert delivered.purged_at is not None  # the record stays
    assert ScheduleRun.objects.count() == 1
