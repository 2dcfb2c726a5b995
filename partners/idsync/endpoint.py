"""The HTTP ID-sync endpoints, as a small WSGI application in front of Django.

Browsers hit ``/ibs:`` on every partner page view, so it skips Django's middleware and URL
resolution, reads the raw request target (the DPUUID may hold an encoded ``&``), keeps each
data source's settings for a few seconds, and writes with one SQL statement per call.
Everything else goes on to Django.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection

from partners.idsync.calls import (
    INACTIVE_DATA_SOURCE,
    REDIRECT_NOT_ALLOWED,
    UNKNOWN_DPID,
    UUID_PLACEHOLDER,
    CallError,
    parse_ibs_call,
    redirect_host_allowed,
)
from partners.idsync.mappings import MAX_DPUUIDS_PER_PROFILE, MAX_PROFILES_PER_DPUUID

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

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
# hence the ranks from cap - 1.
SYNC_SQL = """
WITH made AS (
    INSERT INTO segments_profile (uuid, created_at) VALUES (%(uuid)s, now())
    ON CONFLICT (uuid) DO NOTHING RETURNING id
), profile AS (
    SELECT id FROM made UNION ALL SELECT id FROM segments_profile WHERE uuid = %(uuid)s LIMIT 1
), mapped AS (
    INSERT INTO partners_idmapping (data_source_id, dpuuid, profile_id, first_seen_at, last_seen_at)
    SELECT v.dpid, v.dpuuid, profile.id, now(), now()
    FROM profile, unnest(%(dpids)s::int[], %(dpuuids)s::text[]) AS v(dpid, dpuuid)
    WHERE NOT EXISTS (SELECT 1 FROM partners_idsyncoptout o
                      WHERE o.data_source_id = v.dpid AND o.dpuuid = v.dpuuid)
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
SELECT (SELECT count(*) FROM mapped), (SELECT count(*) FROM evicted)
"""

OPT_OUT_SQL = """
WITH recorded AS (
    INSERT INTO partners_idsyncoptout (data_source_id, dpuuid, created_at)
    SELECT v.dpid, v.dpuuid, now()
    FROM unnest(%(dpids)s::int[], %(dpuuids)s::text[]) v(dpid, dpuuid)
    ON CONFLICT (data_source_id, dpuuid) DO NOTHING RETURNING 1
)
DELETE FROM partners_idmapping m USING unnest(%(dpids)s::int[], %(dpuuids)s::text[]) v(dpid, dpuuid)
WHERE m.data_source_id = v.dpid AND m.dpuuid = v.dpuuid
"""


class _Sources:
    """Each data source's (active, redirect hosts, partner ID-sync URL), read at most every
    IDSYNC_SOURCE_CACHE_SECONDS per worker process."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[float, tuple[bool, list[str], str] | None]] = {}

    def get(self, dpids: Iterable[int]) -> dict[int, tuple[bool, list[str], str] | None]:
        now = time.monotonic()
        wanted = set(dpids)
        stale = [d for d in wanted if d not in self._known or self._known[d][0] < now]
        if stale:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT dpid, active, redirect_hosts, idsync_url_template"
                    " FROM partners_datasource WHERE dpid = ANY(%s)",
                    [stale],
                )
                found = {row[0]: (row[1], list(row[2]), row[3]) for row in cursor.fetchall()}
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


def _cookie_uuid(environ: dict[str, Any]) -> str | None:
    name = settings.IDSYNC_COOKIE_NAME + "="
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        part = part.strip()
        if part.startswith(name):
            value = part[len(name) :]
            if len(value) == 38 and value.isascii() and value.isdigit():
                return value
    return None


def new_uuid() -> str:
    """A random platform UUID: 38 decimal digits, from the OS's cryptographic source."""
    return str(secrets.randbelow(9 * 10**37) + 10**37)


def _visitor(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The visitor's UUID (from the cookie, or a new one) and the headers of the answer:
    no caching, and the cookie when it is new."""
    headers = list(NO_CACHE)
    uuid = _cookie_uuid(environ)
    if uuid is None:
        uuid = new_uuid()
        headers.append(_cookie_header(uuid, environ))
    return uuid, headers


def _https(environ: dict[str, Any]) -> bool:
    if environ.get("wsgi.url_scheme") == "https":
        return True
    return bool(
        getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        and environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip() == "https"
    )


def _cookie_header(uuid: str, environ: dict[str, Any]) -> tuple[str, str]:
    parts = [
        f"{settings.IDSYNC_COOKIE_NAME}={uuid}",
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


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *NO_CACHE],
    )
    return [data]


def _errors(
    start_response: StartResponse, errors: list[CallError], status: str = "400 Bad Request"
) -> list[bytes]:
    return _json(
        start_response, status, {"errors": [{"code": e.code, "msg": e.msg} for e in errors]}
    )


def _source_errors(dpids: list[int]) -> list[CallError]:
    errors = []
    for dpid, source in sorted(sources.get(dpids).items()):
        if source is None:
            errors.append(CallError(UNKNOWN_DPID, f"DPID {dpid} is not a data source"))
        elif not source[0]:
            errors.append(CallError(INACTIVE_DATA_SOURCE, f"data source {dpid} is not active"))
    return errors


_session_ready: int | None = None


def _sync_write(params: dict[str, Any]) -> None:
    """Run SYNC_SQL on the worker's database connection, as a prepared statement (planned
    once per connection, not per call) with asynchronous commit: a crash may lose the last
    fraction of a second of syncs (browsers sync again on the next page view), never
    corrupt anything, and a call does not wait for a disk flush."""
    global _session_ready
    connection.ensure_connection()
    raw = connection.connection
    assert raw is not None
    if _session_ready != id(raw):  # a new connection (first call, or after a reconnect)
        raw.execute("SET synchronous_commit = off")
        # Django turns psycopg's prepared statements off (its own cursors bind client-side
        # and never use them); this endpoint's one statement is prepared explicitly.
        raw.prepare_threshold = 1_000_000
        _session_ready = id(raw)
    # A server-side-binding cursor: Django's own bind client-side, which cannot prepare.
    with psycopg.Cursor(raw) as cursor:
        cursor.execute(SYNC_SQL, params, prepare=True)


def ibs_answer(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """``/ibs:`` and ``/ibs?``: map the partner's IDs to the visitor's UUID."""
    call = parse_ibs_call(_raw_target(environ))
    errors = call.errors or _source_errors([dpid for dpid, _ in call.ids])
    if not errors and call.redirect is not None:
        known = sources.get(dpid for dpid, _ in call.ids)
        hosts = [host for source in known.values() if source for host in source[1]]
        if not redirect_host_allowed(call.redirect, hosts):
            errors = [CallError(REDIRECT_NOT_ALLOWED, "the redirect goes to a host not allowed")]
    if errors:
        return _errors(start_response, errors)
    uuid, headers = _visitor(environ)
    try:
        _sync_write(
            {
                "uuid": uuid,
                "dpids": [dpid for dpid, _ in call.ids],
                "dpuuids": [dpuuid for _, dpuuid in call.ids],
                "per_dpuuid": MAX_PROFILES_PER_DPUUID,
                "per_profile": MAX_DPUUIDS_PER_PROFILE,
            }
        )
    except (DatabaseError, psycopg.Error):
        connection.close_if_unusable_or_obsolete()
        return _json(
            start_response, "503 Service Unavailable", {"errors": [{"code": 0, "msg": "try again"}]}
        )
    if call.redirect is not None:
        location = call.redirect.replace(UUID_PLACEHOLDER, uuid)
        start_response("302 Found", [("Location", location), ("Content-Length", "0"), *headers])
        return [b""]
    start_response(
        "200 OK", [("Content-Type", "image/gif"), ("Content-Length", str(len(PIXEL))), *headers]
    )
    return [PIXEL]


def optout_answer(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """``/optout?d_cid=<DPID>%01<ID>``: never map these IDs again, and forget their mappings."""
    call = parse_ibs_call(_raw_target(environ).replace("/optout", "/ibs", 1))
    errors = [e for e in call.errors if e.code not in (7, 8)] or _source_errors(
        [dpid for dpid, _ in call.ids]
    )
    if errors:
        return _errors(start_response, errors)
    with connection.cursor() as cursor:
        cursor.execute(
            OPT_OUT_SQL,
            {"dpids": [dpid for dpid, _ in call.ids], "dpuuids": [d for _, d in call.ids]},
        )
    return _json(start_response, "200 OK", {"opted_out": len(call.ids)})


def idsync_out_answer(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """``/idsync/out/<DPID>``: send the visitor to the partner's ID-sync URL with our UUID."""
    tail = environ.get("PATH_INFO", "")[len("/idsync/out/") :].strip("/")
    source = sources.get([int(tail)]).get(int(tail)) if tail.isdigit() and len(tail) < 10 else None
    if source is None or not source[0] or not source[2]:
        error = CallError(UNKNOWN_DPID, "no active data source with a partner ID-sync URL here")
        return _errors(start_response, [error], "404 Not Found")
    uuid, headers = _visitor(environ)
    location = source[2].replace(UUID_PLACEHOLDER, uuid)
    start_response("302 Found", [("Location", location), ("Content-Length", "0"), *headers])
    return [b""]


def idsync_only(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """What the ID-sync pool answers for any other path: it serves nothing else (the proxy
    sends the portal, the admin and the API to the portal pool)."""
    error = CallError(0, "not an ID-sync path: this server answers /ibs, /optout, /idsync/")
    return _errors(start_response, [error], "404 Not Found")


def with_idsync_endpoints(django_app: WSGIApp) -> WSGIApp:
    """The WSGI application: the ID-sync paths answered here, the rest by Django."""

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/ibs" or path.startswith("/ibs:"):
            return ibs_answer(environ, start_response)
        if path == "/optout":
            return optout_answer(environ, start_response)
        if path.startswith("/idsync/out/"):
            return idsync_out_answer(environ, start_response)
        return django_app(environ, start_response)

    return application
