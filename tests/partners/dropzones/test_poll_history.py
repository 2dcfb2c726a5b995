"""A poll's cost follows the channel's current listing, not its history: the objects seen
before are looked up by the names listed now, never read whole."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext

from partners.dropzones.services import PollResult, inbound_poll
from partners.models import ChannelObject, InboundChannel, InboundFile
from tests.partners.inbound.conftest import World

DAY = "acme/date=2026-11-28"
HISTORY = 100_000


def _history_insert(channel: InboundChannel, rows: int) -> None:
    """``rows`` objects taken long ago (set-based: one statement)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {ChannelObject._meta.db_table}
                (channel_id, path, version, size, state, first_seen_at, last_seen_at)
            SELECT %s, 'acme/date=2020-01-01/ftp_dpm_21_' || (1500000000 + n) || '.sync',
                   '12:1500000000', 12, 'registered', now(), now()
            FROM generate_series(1, %s) AS n
            """,
            [channel.pk, rows],
        )


@contextmanager
def _objects_loaded() -> Iterator[list[int]]:
    """Counts the ChannelObject rows read into memory (one post_init per model instance)."""
    loaded = [0]

    def count(sender: Any, **kwargs: Any) -> None:
        loaded[0] += 1

    post_init.connect(count, sender=ChannelObject)
    try:
        yield loaded
    finally:
        post_init.disconnect(count, sender=ChannelObject)


def _measured_poll(channel: InboundChannel) -> tuple[PollResult, int, int, float]:
    """A poll, with the ChannelObject rows it read, its queries and its time."""
    fresh = InboundChannel.objects.select_related("partner").get(pk=channel.pk)
    with _objects_loaded() as loaded, CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = inbound_poll(channel=fresh)
        took = time.perf_counter() - started
    return result, loaded[0], len(queries), took


def _channel(world: World, folder: Path, name: str) -> InboundChannel:
    for number in range(10):
        path = folder / DAY / f"ftp_dpm_21_17000000{number:02d}.sync"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"u1\td_sid=10\n")
    return InboundChannel.objects.create(
        partner=world.partner, name=name, kind="local", prefix=str(folder)
    )


def test_a_poll_reads_the_objects_listed_now_not_the_channels_history(
    world: World, tmp_path: Path
) -> None:
    """Before: every poll read every object the channel ever had (100,000 rows here, for a
    listing of 10 files), so its time and memory grew with the channel's age."""
    young = _channel(world, tmp_path / "young", "young")
    old = _channel(world, tmp_path / "old", "old")
    _history_insert(old, HISTORY)
    assert ChannelObject.objects.filter(channel=old).count() == HISTORY

    measured: dict[str, list[tuple[PollResult, int, int, float]]] = {}
    for channel in (young, old):
        measured[channel.name] = [_measured_poll(channel) for _ in range(3)]
    for name, polls in measured.items():
        print(
            f"{name}: rows read {[p[1] for p in polls]}, queries {[p[2] for p in polls]},"
            f" seconds {[round(p[3], 3) for p in polls]}"
        )
    for young_poll, old_poll in zip(measured["young"], measured["old"], strict=True):
        # The same work, whatever the history: the same queries, the same rows read.
        assert old_poll[2] == young_poll[2]
        assert old_poll[1] == young_poll[1]
        assert old_poll[0].listed == young_poll[0].listed == 10
        assert old_poll[1] <= 10  # the listed names' own objects (made or read) only
    seen, registered, quiet = measured["old"]
    assert (seen[0].new, len(registered[0].registered), quiet[0].new) == (10, 10, 0)
    assert InboundFile.objects.filter(storage=f"channel:{old.pk}").count() == 10
