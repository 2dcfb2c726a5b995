"""The ID-sync endpoint's SQL (partners/idsync/endpoint.py), and how it runs on the web
worker's connection: one prepared statement per call, row-lock waits bounded, a connection
PostgreSQL dropped retried once. Written for the endpoint's answers only: names with a
leading underscore are the endpoint's, not the rest of the apps'.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection

from portal.citus import is_citus
from segments.realizations import PROFILE_OF_UUID_CTES

# The endpoint's logger, as before the split: its messages keep their name.
log = logging.getLogger("partners.idsync.endpoint")

T = TypeVar("T")

# One statement: the profile (made for a new cookie), the mappings (refreshed when known and
# not seen within the hour; never for opted-out IDs), and the caps of SPEC §2.1 for new
# ones (oldest evicted). Rows written by one statement are invisible to its other parts,
# hence the ranks from cap - 1. With %(may_create)s false it only refreshes what exists, and
# says what a write would add: whether the profile exists, and the DPIDs of the IDs not
# mapped to it yet (so that a returning visitor is counted against the limits only when
# something new would be written).
SYNC_SQL = f"""
WITH {PROFILE_OF_UUID_CTES}, known AS (
    -- The mappings and opt-outs of the call's IDs, each read apart and only by the IDs
    -- named (on Citus: from the shards of these IDs alone, README "Scaling out"), then
    -- matched to the IDs: no correlated subquery.
    SELECT m.data_source_id, m.dpuuid FROM partners_idmapping m, profile
    WHERE m.profile_id = profile.id AND m.dpuuid = ANY(%(dpuuids)s::text[])
), blocked AS (
    SELECT o.data_source_id, o.dpuuid FROM partners_idsyncoptout o
    WHERE o.dpuuid = ANY(%(dpuuids)s::text[])
      AND (o.profile_id IS NULL OR o.profile_id IN (SELECT id FROM profile))
), ids AS (
    SELECT v.dpid, v.dpuuid, (v.dpid, v.dpuuid) IN (SELECT * FROM known) AS known
    FROM unnest(%(dpids)s::int[], %(dpuuids)s::text[]) AS v(dpid, dpuuid)
    WHERE (v.dpid, v.dpuuid) NOT IN (SELECT * FROM blocked)
), mapped AS (
    INSERT INTO partners_idmapping (data_source_id, dpuuid, profile_id, first_seen_at, last_seen_at)
    SELECT ids.dpid, ids.dpuuid, profile.id, now(), now()
    FROM profile, ids
    WHERE ids.known OR %(may_create)s
    -- EXCLUDED's time, not now(): Citus takes no volatile function in DO UPDATE
    ON CONFLICT (data_source_id, dpuuid, profile_id)
    DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at
        -- a returning visitor syncs on every page view: refresh at most hourly (expiry
        -- counts days), so most of their calls write nothing at all
        -- (a difference of times: timestamptz - interval is not IMMUTABLE, as Citus wants)
        WHERE EXCLUDED.last_seen_at - partners_idmapping.last_seen_at > interval '1 hour'
    RETURNING id, data_source_id, dpuuid, profile_id, xmax = 0 AS created
), over_cap AS (
    -- The rows just made are left out of the ranks by name: PostgreSQL does not show them
    -- to the other parts of the statement, Citus (which runs each part in turn) does.
    SELECT id FROM (
        SELECT m.id, row_number() OVER (PARTITION BY m.data_source_id, m.dpuuid
                                        ORDER BY m.last_seen_at DESC, m.id DESC) AS n
        FROM partners_idmapping m JOIN mapped ON mapped.created
         AND m.data_source_id = mapped.data_source_id AND m.dpuuid = mapped.dpuuid
        WHERE m.id NOT IN (SELECT id FROM mapped WHERE created)
    ) r WHERE n >= %(per_dpuuid)s
    UNION
    SELECT id FROM (
        SELECT m.id, row_number() OVER (PARTITION BY m.profile_id, m.data_source_id
                                        ORDER BY m.last_seen_at DESC, m.id DESC) AS n
        FROM partners_idmapping m JOIN mapped ON mapped.created
         AND m.profile_id = mapped.profile_id AND m.data_source_id = mapped.data_source_id
        WHERE m.id NOT IN (SELECT id FROM mapped WHERE created)
    ) r WHERE n >= %(per_profile)s
), evicted AS (
    DELETE FROM partners_idmapping WHERE id IN (SELECT id FROM over_cap) RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM profile), ARRAY(SELECT dpid FROM ids WHERE NOT known),
       (SELECT count(*) FROM evicted)
"""

# A visitor's own opt-out (README "HTTP ID sync"): only the mappings of the visitor's cookie
# UUID go, and only that UUID is never mapped to these IDs again. A data source's opt-out
# (the partner API) blocks the ID for every visitor: see partners/idsync/optouts.py.
VISITOR_OPT_OUT_SQL = """
WITH profile AS (
    SELECT id FROM segments_profile WHERE uuid = %(uuid)s
), recorded AS (
    INSERT INTO partners_idsyncoptout (data_source_id, dpuuid, profile_id, created_at)
    SELECT v.dpid, v.dpuuid, profile.id, now()
    FROM profile, unnest(%(dpids)s::int[], %(dpuuids)s::text[]) v(dpid, dpuuid)
    ON CONFLICT DO NOTHING RETURNING 1
), forgotten AS (
    DELETE FROM partners_idmapping m
    USING profile, unnest(%(dpids)s::int[], %(dpuuids)s::text[]) v(dpid, dpuuid)
    WHERE m.data_source_id = v.dpid AND m.dpuuid = v.dpuuid AND m.profile_id = profile.id
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM profile)
"""


def _once_more_if_dropped(run: Callable[[], T]) -> T:
    """Run a database call; if it failed because PostgreSQL dropped this worker's persistent
    connection (a restart, a failover, an idle timeout), run it once more on a new one, so
    the first call after a blip is answered (before: 503 "try again", then fine). Only a
    connection opened by an earlier call is retried, and only once it fails its health
    check: an error of the call itself, or a database that is down, is raised as before.
    Every call retried is idempotent (upserts; the opt-out's inserts do nothing twice).
    Django checks its own requests' connections (CONN_HEALTH_CHECKS) with a round trip
    before each request; this endpoint, hit on every partner page view, checks only after a
    failure and costs nothing otherwise."""
    reused = connection.connection is not None
    try:
        return run()
    except (DatabaseError, psycopg.Error):
        if not reused or connection.is_usable():
            raise
        connection.close()
        return run()


def _connection_refreshed() -> None:
    """What Django does as each of its requests starts (its ``request_started`` signal),
    which these answers, given before Django's stack, do not get: a connection past
    CONN_MAX_AGE, or left broken, is closed, and the next use opens a new one. Never in the
    middle of a transaction (the endpoint opens none; a test calling it may hold one)."""
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


# The database connections whose session has the endpoint's lock_timeout (see
# _lock_waits_bounded). A weak set, as _sessions_ready below.
_lock_waits_bounded: weakref.WeakSet[Any] = weakref.WeakSet()
# When each of the endpoint's repeated log messages was last written (_once_a_minute).
_logged_at: dict[str, float] = {}


def _once_a_minute(message: str) -> bool:
    """Whether ``message`` may be logged now: at most once a minute per process, as a
    busy pool answering every page view would otherwise repeat it thousands of times."""
    now = time.monotonic()
    if now - _logged_at.get(message, -60.0) < 60:
        return False
    _logged_at[message] = now
    return True


def _lock_waits_bound(raw: Any) -> None:
    """Let the endpoint's statements wait IDSYNC_LOCK_TIMEOUT_MS at most for a row lock.

    A batch applied by a worker (an ID-sync file: partners/idsync/files.py) writes its
    profiles and mappings in one transaction that lasts as long as the file (minutes for a
    big one). A call writing one of the same rows (the UUID of a profile the file is making,
    a mapping the file is creating, refreshing or evicting) would wait, in PostgreSQL, for
    that transaction to end: the endpoint's INSERT waits on the file's uncommitted entry in
    the unique index (segments_profile.uuid, or the mapping's (DPID, DPUUID, UUID)), or on
    the row the file locked. Past the timeout the statement fails, and the call answers as
    usual without writing (_written): the file is writing those very rows, and the browser
    syncs again on its next page view. Set once per connection, in its session; in a process
    where Django uses the connection as well, the application sets it back after each call
    (_session_given_back)."""
    if raw not in _lock_waits_bounded:
        raw.execute(
            "SELECT set_config('lock_timeout', %s, false)",
            [f"{settings.IDSYNC_LOCK_TIMEOUT_MS}ms"],
        )
        _lock_waits_bounded.add(raw)


def _session_given_back() -> None:
    """Give the connection back to Django with its own session, when the endpoint set up
    its own on it (_sync_write, _lock_waits_bound): its lock_timeout (no bound: PostgreSQL's
    default or the server's), and its synchronous commits (a portal upload answered must
    survive a crash of PostgreSQL) and planning. The next call sets them up again."""
    raw = connection.connection
    if raw is not None and (raw in _lock_waits_bounded or raw in _sessions_ready):
        _lock_waits_bounded.discard(raw)
        _sessions_ready.discard(raw)
        _sessions_on_citus.discard(raw)
        with contextlib.suppress(psycopg.Error):  # broken: Django replaces it anyway
            raw.execute("RESET lock_timeout; RESET synchronous_commit; RESET plan_cache_mode")


def _written(params: dict[str, Any], *, may_create: bool) -> tuple[bool, list[int]] | None:
    """_sync_write, or None when a row it needed stayed locked past the lock_timeout (a
    batch writing the same rows): nothing written, said in the log at most once a minute."""
    try:
        return _sync_write(params, may_create=may_create)
    except psycopg.errors.LockNotAvailable:
        if _once_a_minute("busy"):
            log.info(
                "ID sync: a call's rows were locked for more than %d ms (a batch writing the"
                " same profile or mapping): answered, not written; the browser syncs again",
                settings.IDSYNC_LOCK_TIMEOUT_MS,
            )
        return None


# The database connections already set up for SYNC_SQL. A weak set: a connection closed and
# collected leaves it (an id() could be reused by its successor); each gthread thread has its
# own connection, so membership is per connection, not per process.
_sessions_ready: weakref.WeakSet[Any] = weakref.WeakSet()
# Those of them on a Citus coordinator.
_sessions_on_citus: weakref.WeakSet[Any] = weakref.WeakSet()


def _sync_write(params: dict[str, Any], *, may_create: bool) -> tuple[bool, list[int]]:
    """Run SYNC_SQL on the worker's database connection, as a prepared statement (planned
    once per connection, not per call) with asynchronous commit: a crash may lose the last
    fraction of a second of syncs (browsers sync again on the next page view), never
    corrupt anything, and a call does not wait for a disk flush. Returns whether the
    profile existed (or was made) and the DPIDs of the IDs not mapped to it before."""
    connection.ensure_connection()
    raw = connection.connection
    assert raw is not None
    if raw not in _sessions_ready:  # a new connection (first call, or after a reconnect)
        raw.execute("SET synchronous_commit = off")
        # Planned once: left to choose, PostgreSQL keeps planning SYNC_SQL anew for each
        # call (0.5 ms: its generic plan is estimated dearer, the may_create switch being
        # unknown), though the generic plan runs as fast. Only prepared statements follow
        # this setting, and this is the only one on the connection.
        # Not on Citus: it cannot plan a distributed statement with its parameters left
        # open (it caches its own plans of single-shard statements).
        if is_citus(connection):
            _sessions_on_citus.add(raw)
        else:
            raw.execute("SET plan_cache_mode = force_generic_plan")
        # Django turns psycopg's prepared statements off (its own cursors bind client-side
        # and never use them); this endpoint's one statement is prepared explicitly.
        raw.prepare_threshold = 1_000_000
        _sessions_ready.add(raw)
    _lock_waits_bound(raw)
    # A server-side-binding cursor: Django's own bind client-side, which cannot prepare.
    with psycopg.Cursor(raw) as cursor:
        if raw in _sessions_on_citus:
            # The rows are locked on the workers, where the coordinator's session setting
            # does not reach: a SET LOCAL in a transaction does (citus.propagate_set_commands,
            # portal/citus.py). Two more round trips, on Citus only.
            with raw.transaction():
                cursor.execute(f"SET LOCAL lock_timeout = {int(settings.IDSYNC_LOCK_TIMEOUT_MS)}")
                cursor.execute(SYNC_SQL, {**params, "may_create": may_create}, prepare=True)
                row = cursor.fetchone()
        else:
            cursor.execute(SYNC_SQL, {**params, "may_create": may_create}, prepare=True)
            row = cursor.fetchone()
    assert row is not None
    return bool(row[0]), list(row[1])


def _visitor_opt_out(params: dict[str, Any]) -> Any:
    """Record the visitor's opt-out. A mapping locked by a batch past the lock_timeout fails
    the statement, so nothing changes and the visitor is answered 503 "try again" (an
    opt-out is not dropped as a sync may be)."""
    connection.ensure_connection()
    _lock_waits_bound(connection.connection)
    with connection.cursor() as cursor:
        cursor.execute(VISITOR_OPT_OUT_SQL, params)
        return cursor.fetchone()
