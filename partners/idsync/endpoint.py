"""The HTTP ID-sync endpoints, as a small WSGI application in front of Django.

Browsers hit ``/ibs:`` on every partner page view, so it skips Django's middleware and URL
resolution, reads the raw request target (the DPUUID may hold an encoded ``&``), keeps each
data source's settings for a few seconds, and writes with one SQL statement per call.
Everything else goes on to Django.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import quote

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection

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
from partners.idsync.mappings import MAX_DPUUIDS_PER_PROFILE, MAX_PROFILES_PER_DPUUID
from partners.idsync.statements import (
    _connection_refreshed,
    _once_a_minute,
    _once_more_if_dropped,
    _session_given_back,
    _visitor_opt_out,
    _written,
)
from partners.idsync.visitors import (
    NO_CACHE,
    Visitor,
    _cookie_header,
    _cookie_visitor,
    _visitor,
    new_uuid,
)
from partners.inbound.lines import user_id_problem
from portal.auth import told_client_address
from portal.health import health_report, healthy

log = logging.getLogger(__name__)

# Imported by name from here (portal/wsgi.py, tests, tests/factories.py): they keep working.
__all__ = [
    "PIXEL",
    "_session_given_back",
    "idsync_only",
    "new_uuid",
    "sources",
    "with_idsync_endpoints",
]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


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
    dropped when broken, so the next call reconnects. Called in the ``except`` block: the
    log says what failed, at most once a minute (an outage fails every call)."""
    if _once_a_minute("unavailable"):
        log.warning("ID sync: the database failed, answered 503 (try again)", exc_info=True)
    connection.close_if_unusable_or_obsolete()
    return _errors(start_response, [CallError(0, "try again")], status="503 Service Unavailable")


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
