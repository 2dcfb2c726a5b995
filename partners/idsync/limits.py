"""How much ID sync may write per client address and per data source (README "HTTP ID sync").

Counted are the rows a call would add: a new profile, and each new mapping (or a visitor's
opt-out), per client address (``IDSYNC_NEW_PER_ADDRESS``; the address as the portal's own
limits count it, :func:`portal.auth.told_client_address`: an IPv6 address by its /64) and
per data source (``IDSYNC_NEW_PER_DPID``), in fixed windows. The counters live in Redis, so
every process of every host of the pool shares them; a call that would write pays one
round trip (INCRBY and EXPIRE per key), a returning visitor who writes nothing pays none.
Past a limit the call answers as usual and writes nothing; it is counted per data source
and day (shown on the data source's admin page), and the first call past a limit in a
window logs a warning naming the address or the data source. When Redis cannot be reached
the limits are not applied (ID sync goes on, and the process says so in its log, at most
once a minute).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger(__name__)

KEY_PREFIX = "idsync:"
# Redis answers in well under a millisecond; past this it is taken as down, not waited for.
REDIS_TIMEOUT_SECONDS = 0.25
# After a failure, this process leaves Redis alone for a while (no timeout paid per call).
REDIS_RETRY_SECONDS = 5.0
REDIS_DOWN_LOG_SECONDS = 60.0
REFUSED_KEEP_DAYS = 8


# --- Redis, failing open -----------------------------------------------------------------------


class _Redis:
    """This process's Redis connection for the counters, with short timeouts and no retry;
    after a failure Redis is left alone for REDIS_RETRY_SECONDS, so an outage costs no call
    a timeout. Commands go straight down one connection (redis-py's Connection: packed and
    sent at once, then the replies read): half the CPU of a client pipeline, on a path that
    runs for every new visitor."""

    def __init__(self) -> None:
        # One connection per thread (the portal pool's threads answer /ibs: too); the pause
        # after a failure is the process's.
        self._local = threading.local()
        self._url = ""
        self._down_until = 0.0
        self._down_logged_at = -REDIS_DOWN_LOG_SECONDS

    def execute(self, commands: list[tuple[Any, ...]]) -> list[Any] | None:
        """The replies to ``commands``, sent together; None when Redis cannot be reached."""
        made_for = (settings.REDIS_URL, os.getpid())  # a forked child makes its own
        if getattr(self._local, "made_for", None) != made_for:
            client = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),  # a call does not wait out retries
            )
            self._local.connection = client.connection_pool.make_connection()  # connects when used
            self._local.made_for = made_for
        if self._url != settings.REDIS_URL:  # another Redis (tests): not known to be down
            self._url, self._down_until = settings.REDIS_URL, 0.0
        if time.monotonic() < self._down_until:
            return None
        connection = self._local.connection
        try:
            connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            return [connection.read_response() for _ in commands]
        except (RedisError, OSError) as exc:
            connection.disconnect()  # replies may be left unread: start afresh next time
            self._failed(exc)
            return None

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._down_until = now + REDIS_RETRY_SECONDS
        if now - self._down_logged_at >= REDIS_DOWN_LOG_SECONDS:
            self._down_logged_at = now
            log.warning(
                "ID sync: Redis unreachable (%s): new profiles and mappings are not limited"
                " until it answers again",
                type(exc).__name__,
            )


_redis = _Redis()


# --- Counting ----------------------------------------------------------------------------------


def _day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def refused_key(dpid: int, day: str) -> str:
    return f"{KEY_PREFIX}refused:{dpid}:{day}"


class _Counted(NamedTuple):
    key: str
    add: int
    limit: int
    period: int
    setting: str
    who: str  # for the log: the address or the data source


def _counted(
    address: str | None, rows: int, rows_per_dpid: dict[int, int], now: float
) -> list[_Counted]:
    per_address, address_period = settings.IDSYNC_NEW_PER_ADDRESS
    per_dpid, dpid_period = settings.IDSYNC_NEW_PER_DPID
    counted = [
        _Counted(
            f"{KEY_PREFIX}new:d:{dpid}:{int(now // dpid_period)}",
            n,
            per_dpid,
            dpid_period,
            "IDSYNC_NEW_PER_DPID",
            f"data source {dpid}",
        )
        for dpid, n in rows_per_dpid.items()
    ]
    if address is None:
        # The proxy did not say who the client is (no X-Real-IP): counting everyone as the
        # proxy would stop every new visitor; the data sources' limits still hold.
        _proxy_without_header()
        return counted
    who = address or "unknown"
    key = f"{KEY_PREFIX}new:a:{who}:{int(now // address_period)}"
    return [
        _Counted(key, rows, per_address, address_period, "IDSYNC_NEW_PER_ADDRESS", who),
        *counted,
    ]


_proxy_warned_at = -REDIS_DOWN_LOG_SECONDS


def _proxy_without_header() -> None:
    global _proxy_warned_at
    now = time.monotonic()
    if now - _proxy_warned_at >= REDIS_DOWN_LOG_SECONDS:
        _proxy_warned_at = now
        log.warning(
            "ID sync: a call from a proxy without X-Real-IP: the per-address limit is not"
            " applied (the proxy must set the header: README Production)"
        )


def admit(*, address: str | None, rows: int, rows_per_dpid: dict[int, int]) -> bool:
    """Count ``rows`` new rows for ``address`` and ``rows_per_dpid`` for each data source;
    whether they are within the limits (True as well when Redis cannot be reached). A call
    refused is counted for each of its data sources."""
    now = time.time()
    counted = _counted(address, rows, rows_per_dpid, now)
    commands: list[tuple[Any, ...]] = []
    for c in counted:
        commands += [("INCRBY", c.key, c.add), ("EXPIRE", c.key, c.period)]
    replies = _redis.execute(commands)
    if replies is None:
        return True
    totals = [int(total) for total in replies[::2]]
    over = [c for c, total in zip(counted, totals, strict=True) if total > c.limit]
    if not over:
        return True
    for c, total in zip(counted, totals, strict=True):
        if total - c.add <= c.limit < total:  # this call went past: once per window and key
            log.warning(
                "ID sync: %s went past %s (%d new profiles and mappings per %d s): what it"
                " sends is not written until the window ends",
                c.who if c.setting == "IDSYNC_NEW_PER_DPID" else f"client address {c.who}",
                c.setting,
                c.limit,
                c.period,
            )
    day = _day(now)
    reason = "address" if over[0].setting == "IDSYNC_NEW_PER_ADDRESS" else "data_source"
    refused: list[tuple[Any, ...]] = []
    for dpid in rows_per_dpid:
        key = refused_key(dpid, day)
        refused += [("HINCRBY", key, reason, 1), ("EXPIRE", key, REFUSED_KEEP_DAYS * 86400)]
    _redis.execute(refused)
    return False


# --- What staff see ----------------------------------------------------------------------------


class RefusedDay(NamedTuple):
    day: date
    over_address_limit: int
    over_data_source_limit: int


def refused_by_day(*, dpid: int, days: int = 7) -> list[RefusedDay]:
    """The calls of data source ``dpid`` refused per day (UTC), today first. Raises
    RedisError (or OSError) when Redis cannot be reached."""
    today = datetime.now(UTC).date()
    wanted = [today - timedelta(days=n) for n in range(days)]
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=REDIS_TIMEOUT_SECONDS * 4,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS * 4,
    )
    try:
        pipe = client.pipeline(transaction=False)
        for day in wanted:
            pipe.hmget(refused_key(dpid, day.isoformat()), ["address", "data_source"])
        found = pipe.execute()
    finally:
        client.close()
    return [
        RefusedDay(day, int(address or 0), int(data_source or 0))
        for day, (address, data_source) in zip(wanted, found, strict=True)
    ]
