"""How much ID sync may write per client address and per data source (README "HTTP ID sync").

Counted are the rows a call would add: a new profile, and each new mapping (or a visitor's
opt-out), per client address (``IDSYNC_NEW_PER_ADDRESS``; the address as the portal's own
limits count it, :func:`portal.auth.told_client_address`: an IPv6 address by its /64) and
per data source (``IDSYNC_NEW_PER_DPID``), in fixed windows. The counters live in Redis, so
every process of every host of the pool shares them; a call that would write pays one
round trip (a small Lua script, :data:`ADMIT_LUA`), a returning visitor who writes nothing
pays none. The script checks every limit that applies before it counts anything: a call
past a limit consumes nothing, so a flood from one address that its own limit stops does
not eat its data sources' budgets (their other visitors still sync). Past a limit the call
answers as usual and writes nothing; it is counted per data source and day (shown on the
data source's admin page), and the first call past a limit in a window logs a warning
naming the address or the data source. When Redis cannot be reached
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
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisError
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
        self._scripts: dict[str, Script] = {}

    def execute(
        self, commands: list[tuple[Any, ...]], *, missing_script: bool = False
    ) -> list[Any] | None:
        """The replies to ``commands``, sent together; None when Redis cannot be reached.
        With ``missing_script``, Redis's NOSCRIPT answer is a reply (the error itself)."""
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
        except NoScriptError as exc:
            if not missing_script or len(commands) != 1:
                raise
            return [exc]  # the reply was read: the connection goes on
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

    def script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """The reply of a Lua ``script`` (by its SHA, loaded when Redis does not know it
        yet); None when Redis cannot be reached."""
        registered = self._scripts.get(script)
        if registered is None:
            # register_script only hashes the text here (the client never connects): the
            # commands go down this thread's connection, as execute's do.
            registered = redis.Redis().register_script(script)
            self._scripts[script] = registered
        replies = self.execute(
            [("EVALSHA", registered.sha, len(keys), *keys, *args)], missing_script=True
        )
        if replies is None:
            return None
        if isinstance(replies[0], NoScriptError):  # a new Redis, or one restarted
            replies = self.execute([("EVAL", registered.script, len(keys), *keys, *args)])
        return None if replies is None else replies[0]


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


# Every counter is checked before any is counted: a call past a limit consumes nothing.
# KEYS: the n counters, then each counter's "went past in this window" flag, then the
# refused tallies (a hash per data source and day). ARGV: n, then per counter its rows to
# add, limit, window (seconds) and the name of its limit in the tallies ("address" or
# "data_source"), then how long a tally is kept (seconds).
# Returns {0} when admitted; else {i, total, first}: the first counter i (1-based) past its
# limit, its count, and 1 when this is the first call refused for it in its window.
ADMIT_LUA = """
local n = tonumber(ARGV[1])
for i = 1, n do
    local add, limit = tonumber(ARGV[4 * i - 2]), tonumber(ARGV[4 * i - 1])
    local total = tonumber(redis.call('GET', KEYS[i]) or '0')
    if total + add > limit then
        for r = 2 * n + 1, #KEYS do
            redis.call('HINCRBY', KEYS[r], ARGV[4 * i + 1], 1)
            redis.call('EXPIRE', KEYS[r], ARGV[4 * n + 2])
        end
        local first = redis.call('SET', KEYS[n + i], 1, 'NX', 'EX', ARGV[4 * i])
        return {i, total, first and 1 or 0}
    end
end
for i = 1, n do
    local add = tonumber(ARGV[4 * i - 2])
    if redis.call('INCRBY', KEYS[i], add) == add then
        redis.call('EXPIRE', KEYS[i], ARGV[4 * i])
    end
end
return {0}
"""


def admit(*, address: str | None, rows: int, rows_per_dpid: dict[int, int]) -> bool:
    """Whether ``rows`` new rows for ``address`` and ``rows_per_dpid`` for each data source
    are within every limit, and if so count them (True as well when Redis cannot be
    reached). A call refused counts nothing against any limit; it is tallied for each of
    its data sources under the first limit it is past."""
    now = time.time()
    counted = _counted(address, rows, rows_per_dpid, now)
    day = _day(now)
    keys = [c.key for c in counted]
    keys += [c.key.replace(f"{KEY_PREFIX}new:", f"{KEY_PREFIX}over:", 1) for c in counted]
    keys += [refused_key(dpid, day) for dpid in rows_per_dpid]
    args: list[Any] = [len(counted)]
    for c in counted:
        reason = "address" if c.setting == "IDSYNC_NEW_PER_ADDRESS" else "data_source"
        args += [c.add, c.limit, c.period, reason]
    args.append(REFUSED_KEEP_DAYS * 86400)
    reply = _redis.script(ADMIT_LUA, keys, args)
    if reply is None or int(reply[0]) == 0:
        return True
    over, first = counted[int(reply[0]) - 1], int(reply[2])
    if first:  # the first call refused for this counter in its window
        log.warning(
            "ID sync: %s went past %s (%d new profiles and mappings per %d s): what it"
            " sends is not written until the window ends",
            over.who if over.setting == "IDSYNC_NEW_PER_DPID" else f"client address {over.who}",
            over.setting,
            over.limit,
            over.period,
        )
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
