"""The demo works with its own data: the README's walkthrough files, processed after the
demo's seed, store records, realize traits and fill the demo segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from partners.inbound.services import inbound_batch_process, inbound_files_register
from partners.models import IDMapping, Receipt
from portal.demo import demo_seed
from portal.demo_files import (
    DAY1_FILE,
    DAY2_FILE,
    IDSYNC_FILE,
    MISTAKES_FILE,
    SYNCED_VISITORS,
    demo_files,
)
from segments.models import SegmentMembership

DEMO_DIR = Path(settings.BASE_DIR) / "demo"


def _process(name: str) -> Receipt:
    registration = inbound_files_register(paths=[DEMO_DIR / name])
    (batch,) = registration.batches
    return inbound_batch_process(batch_id=batch.pk)


def _members() -> dict[int, int]:
    return {
        sid: SegmentMembership.objects.filter(segment_id=sid).count() for sid in (500, 501, 502)
    }


def test_the_files_in_the_repository_are_the_demo_s(tmp_path: Path) -> None:
    assert {path.name: path.read_bytes() for path in DEMO_DIR.iterdir()} == demo_files()


@pytest.mark.django_db
def test_the_walkthrough_realizes_traits_and_fills_the_demo_segments(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PARTNER_SOLUTIONS_EMAILS = []
    monkeypatch.setenv("DEMO_DROPZONE", str(tmp_path / "dropzone"))
    demo_seed()
    demo_seed()  # safe to run again
    assert IDMapping.objects.filter(data_source_id=21).count() == 400
    assert _members() == {500: 0, 501: 0, 502: 0}

    synced = _process(IDSYNC_FILE)
    assert (synced.records_received, synced.mappings_created, synced.rejected) == (100, 100, 0)

    day1 = _process(DAY1_FILE)
    assert (day1.records_received, day1.format_errors, day1.no_matching_ids) == (500, 0, 0)
    assert day1.stored_records == 500 - day1.no_trait_realized > 400  # the ID sync came first
    assert day1.total_realized_traits > 500
    after_day1 = _members()
    assert all(after_day1.values()), after_day1
    assert len(SYNCED_VISITORS) == 100

    mistakes = _process(MISTAKES_FILE)
    assert (mistakes.records_received, mistakes.stored_records) == (8, 2)
    assert (mistakes.format_errors, mistakes.invalid_ids, mistakes.no_matching_ids) == (2, 1, 1)
    assert (mistakes.no_trait_realized, mistakes.total_traits_failed_validation) == (2, 1)

    day2 = _process(DAY2_FILE)
    assert day2.total_removed_traits > 0
    assert day2.records_received == 250
    assert _members() != after_day1
