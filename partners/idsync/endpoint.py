"""The HTTP ID-sync endpoints, as a small WSGI application in front of Django.

Browsers hit ``/ibs:`` on every partner page view, so it skips Django's middleware and URL
resolution, reads the raw request target (the DPUUID may hold an encoded ``&``), keeps each
data source's settings for a few seconds, and writes with one SQL statement per call.
Everything else goes on to Django.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from partners.idsync import limits
from partners.idsync.calls import (
    BAD_ENCODING,
    INACTIVE_DATA_SOURCE,
    REDIRECT_NOT_ALLOWED,
    TOO_MANY_NEW,
    UNKNOWN_DPID,
    UUID_PLACEHOLDER,
    CallError,
    parse_ibs_call,
    redirect_host_allowed,
)
from partners.idsync.cookies import cookie_uuids, signed_value
from partners.idsync.mappings import MAX_DPUUIDS_PER_PROFILE, MAX_PROFILES_PER_DPUUID
from partners.inbound.lines import user_id_problem
from portal.auth import told_client_address
from portal.health import health_report, healthy
from segments.models import Profile
from segments.realizations import PROFILE_OF_UUID_CTES

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
T = TypeVar("T")

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE = [
    ("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0"),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
]

# One statement: the profile (made for a new cookie), the mappings (refreshed when known and
# not seen within the hour; never for opted-out IDs), and the caps of SPEC §2.1 for new
# ones (oldest evicted). Rows written by one statement are invisible to its other parts,
# hence the ranks from cap - 1. With %(may_create)s false it only refreshes what exists, and
# says what a write would add: whether the profile exists, and the DPIDs of the IDs not
# mapped to it yet (so that a returning visitor is counted against the limits only when
# something new would be written).
SYNC_SQL = f"""
WITH {PROFILE_OF_UUID_CTES}, ids AS (
    SELECT v.dpid, v.dpuuid, EXISTS (
        SELECT 1 FROM partners_idmapping m JOIN profile ON m.profile_id = profile.id
        WHERE m.data_source_id = v.dpid AND m.dpuuid = v.dpuuid) AS known
    FROM unnest(%(dpids)s::int[], %(dpuuids)s::text[]) AS v(dpid, dpuuid)
    WHERE NOT EXISTS (SELECT 1 FROM partners_idsyncoptout o
                      WHERE o.data_source_id = v.dpid AND o.dpuuid = v.dpuuid
                        AND (o.profile_id IS NULL OR o.profile_id IN (SELECT id FROM profile)))
), mapped AS (
    INSERT INTO partners_idmapping (data_source_id, dpuuid, profile_id, first_seen_at, last_seen_at)
    SELECT ids.dpid, ids.dpuuid, profile.id, now(), now()
    FROM profile, ids
    WHERE ids.known OR %(may_create)s
    ON CONFLICT (data_source_id, dpuuid, profile_id) DO UPDATE SET last_seen_at = now()
        -- a returning visitor syncs on every page view: refresh at most hourly (expiry
        -- counts days), so most of their calls write nothing at all
        WHERE partners_idmapping.last_seen_at < now() - interval '1 hour'
    RETURNING data_source_id, dpuuid, profile_id, xmax = 0 AS created
), over_cap AS (
    SELECT id FROM (
        SELECT m.id, row_number() OVER (PARTITION BY m.data_source_id, m.dpuuid
                                        ORDER BY m.last_seen_at DESC, m.id DESC) AS n
        FROM partners_idmapping m JOIN mapped ON mapped.created
         AND m.data_source_id = mapped.data_source_id AND m.dpuuid = mapped.dpuuid
    ) r WHERE n >= %(per_dpuuid)s
    UNION
    SELECT id FROM (
        SELECT m.id, row_number() OVER (PARTITION BY m.profile_id, m.data_source_id
                                        ORDER BY m.last_seen_at DESC, m.id DESC) AS n
        FROM partners_idmapping m JOIN mapped ON mapped.created
         AND m.profile_id = mapped.profile_id AND m.data_source_id = mapped.data_source_id
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


class Source(NamedTuple):
    """What the endpoints need of a data source."""

    active: bool
    redirect_hosts: list[str]
    idsync_url_template: str
    inbound_id_type: str
    device_id_format: str


class _Sources:
    """Each data source's settings, read at most every IDSYNC_SOURCE_CACHE_SECONDS per worker
    process (shared by its threads: a race only reads a source twice)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[float, Source | None]] = {}

    def get(self, dpids: Iterable[int]) -> dict[int, Source | None]:
        now = time.monotonic()
        wanted = set(dpids)
        stale = [d for d in wanted if d not in self._known or self._known[d][0] < now]
        if stale:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT dpid, active, redirect_hosts, idsync_url_template, inbound_id_type,"
                    " device_id_format FROM partners_datasource WHERE dpid = ANY(%s)",
                    [stale],
                )
                found = {
                    row[0]: Source(row[1], list(row[2]), row[3], row[4], row[5])
                    for row in cursor.fetchall()
                }
            expires = now + settings.IDSYNC_SOURCE_CACHE_SECONDS
            for dpid in stale:
                self._known[dpid] = (expires, found.get(dpid))
        return {dpid: self._known[dpid][1] for dpid in wanted}

    def clear(self) -> None:
        self._known.clear()


sources = _Sources()


def _raw_target(environ: dict[str, Any]) -> str:
    """The request target as the client sent it (gunicorn: RAW_URI; uWSGI: REQUEST_URI);
    else rebuilt from the decoded path, which cannot tell an encoded '&' from a real one."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/:=&;,$")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def new_uuid() -> str:
    """A random platform UUID: 38 decimal digits, from the OS's cryptographic source."""
    return str(secrets.randbelow(9 * 10**37) + 10**37)


# The migration whose application marks when this database's cookies are signed.
SIGNED_COOKIES_MIGRATION = ("partners", "0027_idsync_signed_cookies")
_signed_since: datetime | None = None


def _plain_cookies_before() -> datetime | None:
    """Profiles made before this time may still hold a plain cookie: IDSYNC_PLAIN_COOKIES_BEFORE,
    else the time the marker migration was applied (read once per process); None (no plain
    cookie is taken) while it is not applied."""
    global _signed_since
    if settings.IDSYNC_PLAIN_COOKIES_BEFORE is not None:
        return settings.IDSYNC_PLAIN_COOKIES_BEFORE
    if _signed_since is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT applied FROM django_migrations WHERE app = %s AND name = %s",
                list(SIGNED_COOKIES_MIGRATION),
            )
            row = cursor.fetchone()
        _signed_since = row[0] if row else None
    return _signed_since


def _plain_cookie_taken(uuid: str) -> bool:
    """Whether a plain cookie (issued before cookies were signed) is still taken: its
    profile exists and was made before cookies were signed here (_plain_cookies_before),
    which is not older than IDSYNC_COOKIE_MAX_AGE (past that, every plain cookie has
    expired). A profile made since was never given a plain cookie: a bare UUID for it is
    guessed or leaked, not a visitor's cookie."""
    before = _plain_cookies_before()
    if before is None:
        return False
    if timezone.now() > before + timedelta(seconds=settings.IDSYNC_COOKIE_MAX_AGE):
        return False
    return Profile.objects.filter(uuid=uuid, created_at__lt=before).exists()


def _cookie_visitor(environ: dict[str, Any]) -> tuple[str | None, bool]:
    """The UUID of the visitor's cookie, verified (None: no cookie that is ours), and
    whether the cookie must be issued again, signed (a plain one still taken). A plain
    cookie costs a database read; may raise DatabaseError."""
    found = cookie_uuids(environ.get("HTTP_COOKIE", ""), settings.IDSYNC_COOKIE_NAME)
    if found.signed is not None:
        return found.signed, found.stale
    if found.plain is not None and _plain_cookie_taken(found.plain):
        return found.plain, True
    return None, False


class Visitor(NamedTuple):
    uuid: str
    known: bool  # from the visitor's own (verified) cookie; else new
    headers: list[tuple[str, str]]  # no caching, and the cookie when (re)issued


def _visitor(environ: dict[str, Any]) -> Visitor:
    """The visitor's UUID (from the cookie, or a new one) and the headers of the answer."""
    headers = list(NO_CACHE)
    uuid, reissue = _cookie_visitor(environ)
    known = uuid is not None
    if uuid is None:
        uuid = new_uuid()
    if reissue or not known:
        headers.append(_cookie_header(uuid, environ))
    return Visitor(uuid, known, headers)


def _https(environ: dict[str, Any]) -> bool:
    if environ.get("wsgi.url_scheme") == "https":
        return True
    return bool(
        getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        and environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip() == "https"
    )


def _cookie_header(uuid: str, environ: dict[str, Any]) -> tuple[str, str]:
    parts = [
        f"{settings.IDSYNC_COOKIE_NAME}={signed_value(uuid)}",
        "Path=/",
        f"Max-Age={settings.IDSYNC_COOKIE_MAX_AGE}",
        "SameSite=None",
        "HttpOnly",
    ]
    if settings.IDSYNC_COOKIE_DOMAIN:
        parts.append(f"Domain={settings.IDSYNC_COOKIE_DOMAIN}")
    if _https(environ):
        parts.append("Secure")
    return ("Set-Cookie", "; ".join(parts))


def _json(
    start_response: StartResponse,
    status: str,
    body: dict[str, Any],
    headers: list[tuple[str, str]] = NO_CACHE,
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers],
    )
    return [data]


def _errors(
    start_response: StartResponse, errors: list[CallError], status: str = "400 Bad Request"
) -> list[bytes]:
    return _json(
        start_response, status, {"errors": [{"code": e.code, "msg": e.msg} for e in errors]}
    )


def _source_errors(ids: list[tuple[int, str]]) -> list[CallError]:
    """Unknown or inactive data sources, and global device IDs not in their source's format
    (checked as in files: SPEC §3)."""
    errors = []
    known = sources.get(dpid for dpid, _ in ids)
    for dpid, source in sorted(known.items()):
        if source is None:
            errors.append(CallError(UNKNOWN_DPID, f"DPID {dpid} is not a data source"))
        elif not source.active:
            errors.append(CallError(INACTIVE_DATA_SOURCE, f"data source {dpid} is not active"))
    for dpid, dpuuid in ids:
        source = known[dpid]
        if source and source.active and source.inbound_id_type == "device":
            problem = user_id_problem(
                dpuuid, inbound_id_type="device", device_id_format=source.device_id_format
            )
            if problem:
                errors.append(CallError(BAD_ENCODING, f"DPID {dpid}: {problem}"))
    return errors


def _unavailable(start_response: StartResponse) -> list[bytes]:
    """The database cannot be reached: the documented 503, code 0; the connection is
    dropped when broken, so the next call reconnects."""
    connection.close_if_unusable_or_obsolete()
    return _errors(start_response, [CallError(0, "try again")], status="503 Service Unavailable")


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
_busy_logged_at = -60.0


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
        with contextlib.suppress(psycopg.Error):  # broken: Django replaces it anyway
            raw.execute("RESET lock_timeout; RESET synchronous_commit; RESET plan_cache_mode")


def _written(params: dict[str, Any], *, may_create: bool) -> tuple[bool, list[int]] | None:
    """_sync_write, or None when a row it needed stayed locked past the lock_timeout (a
    batch writing the same rows): nothing written, said in the log at most once a minute."""
    global _busy_logged_at
    try:
        return _sync_write(params, may_create=may_create)
    except psycopg.errors.LockNotAvailable:
        now = time.monotonic()
        if now - _busy_logged_at >= 60:
            _busy_logged_at = now
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
        raw.execute("SET plan_cache_mode = force_generic_plan")
        # Django turns psycopg's prepared statements off (its own cursors bind client-side
        # and never use them); this endpoint's one statement is prepared explicitly.
        raw.prepare_threshold = 1_000_000
        _sessions_ready.add(raw)
    _lock_waits_bound(raw)
    # A server-side-binding cursor: Django's own bind client-side, which cannot prepare.
    with psycopg.Cursor(raw) as cursor:
        cursor.execute(SYNC_SQL, {**params, "may_create": may_create}, prepare=True)
        row = cursor.fetchone()
    assert row is not None
    return bool(row[0]), list(row[1])


def _sync(environ: dict[str, Any], visitor: Visitor, ids: list[tuple[int, str]]) -> None:
    """Map the IDs to the visitor, within the limits (partners/idsync/limits.py). Only what
    would be new is counted: a new visitor's profile and IDs; for a visitor whose cookie is
    known, a first statement refreshes what exists and says what is new (most calls of a
    returning visitor: nothing, and no count)."""
    params = {
        "uuid": visitor.uuid,
        "dpids": [dpid for dpid, _ in ids],
        "dpuuids": [dpuuid for _, dpuuid in ids],
        "per_dpuuid": MAX_PROFILES_PER_DPUUID,
        "per_profile": MAX_DPUUIDS_PER_PROFILE,
    }
    if visitor.known:
        found = _written(params, may_create=False)
        if found is None:
            return
        has_profile, unmapped = found
        if has_profile and not unmapped:
            return
    else:  # a new UUID: no profile, nothing mapped yet
        has_profile, unmapped = False, [dpid for dpid, _ in ids]
    rows_per_dpid = Counter(unmapped)
    if not has_profile:  # the profile counts for each data source of the call
        rows_per_dpid.update({dpid: 1 for dpid, _ in ids})
    rows = len(unmapped) + (0 if has_profile else 1)
    if limits.admit(address=told_client_address(environ), rows=rows, rows_per_dpid=rows_per_dpid):
        _written(params, may_create=True)


def ibs_answer(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """``/ibs:`` and ``/ibs?``: map the partner's IDs to the visitor's UUID. Past the limits
    the answer is the same; nothing is written."""
    call = parse_ibs_call(_raw_target(environ))
    try:
        errors = call.errors or _once_more_if_dropped(lambda: _source_errors(call.ids))
    except (DatabaseError, psycopg.Error):
        return _unavailable(start_response)
    if not errors and call.redirect is not None:
        known = sources.get(dpid for dpid, _ in call.ids)  # just read: from the cache
        hosts = [host for source in known.values() if source for host in source.redirect_hosts]
        if not redirect_host_allowed(call.redirect, hosts):
            errors = [CallError(REDIRECT_NOT_ALLOWED, "the redirect goes to a host not allowed")]
    if errors:
        return _errors(start_response, errors)
    try:
        visitor = _once_more_if_dropped(lambda: _visitor(environ))
        _once_more_if_dropped(lambda: _sync(environ, visitor, call.ids))
    except (DatabaseError, psycopg.Error):
        return _unavailable(start_response)
    if call.redirect is not None:
        location = call.redirect.replace(UUID_PLACEHOLDER, visitor.uuid)
        start_response(
            "302 Found", [("Location", location), ("Content-Length", "0"), *visitor.headers]
        )
        return [b""]
    start_response(
        "200 OK",
        [("Content-Type", "image/gif"), ("Content-Length", str(len(PIXEL))), *visitor.headers],
    )
    return [PIXEL]


def optout_answer(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """``/optout?d_cid=<DPID>%01<ID>``: the visitor making the call opts out of these IDs.
    Only their own (verified) cookie's UUID is concerned: its mappings to these IDs go and
    are never made again. Without such a cookie there is nothing of theirs to forget, and
    nothing changes: an opt-out for an ID, whoever holds it, is the data source's (``POST
    /api/v1/optouts``). Each ID is a row written, counted against the limits."""
    call = parse_ibs_call(_raw_target(environ).replace("/optout", "/ibs", 1))
    headers = list(NO_CACHE)
    try:
        errors = [e for e in call.errors if e.code not in (7, 8)] or _once_more_if_dropped(
            lambda: _source_errors(call.ids)
        )
        if errors:
            return _errors(start_response, errors)
        uuid, reissue = _once_more_if_dropped(lambda: _cookie_visitor(environ))
        if uuid is None:
            return _json(start_response, "200 OK", {"opted_out": 0})
        if reissue:
            headers.append(_cookie_header(uuid, environ))
        per_dpid = Counter(dpid for dpid, _ in call.ids)
        address = told_client_address(environ)
        if not limits.admit(address=address, rows=len(call.ids), rows_per_dpid=per_dpid):
            error = CallError(TOO_MANY_NEW, "too many opt-outs from here just now: try later")
            return _errors(start_response, [error], "429 Too Many Requests")
        params = {
            "uuid": uuid,
            "dpids": [dpid for dpid, _ in call.ids],
            "dpuuids": [d for _, d in call.ids],
        }
        row = _once_more_if_dropped(lambda: _visitor_opt_out(params))
    except (DatabaseError, psycopg.Error):
        return _unavailable(start_response)
    opted_out = len(call.ids) if row and row[0] else 0  # a profile to opt out, or none yet
    return _json(start_response, "200 OK", {"opted_out": opted_out}, headers)


def _visitor_opt_out(params: dict[str, Any]) -> Any:
    """Record the visitor's opt-out. A mapping locked by a batch past the lock_timeout fails
    the statement, so nothing changes and the visitor is answered 503 "try again" (an
    opt-out is not dropped as a sync may be)."""
    connection.ensure_connection()
    _lock_waits_bound(connection.connection)
    with connection.cursor() as cursor:
        cursor.execute(VISITOR_OPT_OUT_SQL, params)
        return cursor.fetchone()


def idsync_out_answer(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """``/idsync/out/<DPID>``: send the visitor to the partner's ID-sync URL with our UUID."""
    tail = environ.get("PATH_INFO", "")[len("/idsync/out/") :].strip("/")
    try:
        source = (
            _once_more_if_dropped(lambda: sources.get([int(tail)])).get(int(tail))
            if tail.isascii() and tail.isdigit() and len(tail) < 10
            else None
        )
    except (DatabaseError, psycopg.Error):
        return _unavailable(start_response)
    if source is None or not source.active or not source.idsync_url_template:
        error = CallError(UNKNOWN_DPID, "no active data source with a partner ID-sync URL here")
        return _errors(start_response, [error], "404 Not Found")
    try:
        visitor = _once_more_if_dropped(lambda: _visitor(environ))
    except (DatabaseError, psycopg.Error):
        return _unavailable(start_response)
    location = source.idsync_url_template.replace(UUID_PLACEHOLDER, visitor.uuid)
    start_response("302 Found", [("Location", location), ("Content-Length", "0"), *visitor.headers])
    return [b""]


def idsync_only(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """What the ID-sync pool answers for any other path: ``/healthz``, and nothing else (the
    proxy sends the portal, the admin and the API to the portal pool)."""
    if environ.get("PATH_INFO") == "/healthz":
        _connection_refreshed()
        report = health_report()
        return _json(
            start_response, "200 OK" if healthy(report) else "503 Service Unavailable", report
        )
    error = CallError(0, "not an ID-sync path: this server answers /ibs, /optout, /idsync/")
    return _errors(start_response, [error], "404 Not Found")


def with_idsync_endpoints(django_app: WSGIApp) -> WSGIApp:
    """The WSGI application: the ID-sync paths answered here, the rest by Django."""
    # The ID-sync pool's processes (idsync_only) use their connections for these endpoints
    # only: the lock_timeout stays in the session. Elsewhere Django's requests share them.
    shared_with_django = django_app is not idsync_only

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/ibs" or path.startswith("/ibs:"):
            answer = ibs_answer
        elif path == "/optout":
            answer = optout_answer
        elif path.startswith("/idsync/out/"):
            answer = idsync_out_answer
        else:
            return django_app(environ, start_response)
        _connection_refreshed()
        try:
            return answer(environ, start_response)
        finally:
            if shared_with_django:
                _session_given_back()

    return application
