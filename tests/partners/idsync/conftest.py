from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from partners.idsync.limits import KEY_PREFIX


def idsync_counters_wipe() -> None:
    """Drop the ID-sync limits' counters: they outlive a test's database (Redis)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(autouse=True)
def idsync_counters_wiped() -> Iterator[None]:
    idsync_counters_wipe()
    yield
    idsync_counters_wipe()
