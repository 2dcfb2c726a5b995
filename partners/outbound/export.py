"""Segment membership of a destination, read from PostgreSQL as a stream of rows (SPEC §6).

One row per user ID to write: its segments (``full``: every current membership in the
destination's segments; ``iter``: the last change of each membership since the previous
successful run, joins and leaves apart). Rendered by PostgreSQL and read with ``COPY … TO
STDOUT`` (:func:`destination_lines`), or as values through a server-side cursor for the
templates rendered in Python (:func:`destination_rows`): the membership list is never in
memory whole.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

from partners.outbound.templates import SEGMENT_TYPE, Context, Template

# The memberships to send, ``u``: (profile_id, sid, at, joined). ``full``: every current one
# (joined); ``iter``: the last change of each since the previous run (joined or left).
_MEMBERS_FULL = """
SELECT m.profile_id, m.segment_id AS sid, m.joined_at AS at, true AS joined
FROM segments_segmentmembership m
WHERE m.segment_id = ANY(%(sids)s)
"""
_MEMBERS_ITER = """
SELECT DISTINCT ON (c.profile_id, c.segment_id) c.profile_id, c.segment_id AS sid, c.at, c.joined
FROM segments_segmentmembershipchange c
WHERE c.segment_id = ANY(%(sids)s) AND c.at > %(since)s AND c.at <= %(until)s
ORDER BY c.profile_id, c.segment_id, c.at DESC, c.id DESC
"""
# The rows are grouped per profile among the memberships (on Citus, where they lie: the
# memberships, profile traits and change log share the profile's shard), then joined to the
# profile's UUID and, by DPUUID, to the data source's mappings. Each part is a CTE: PostgreSQL
# inlines them; Citus, which cannot join tables distributed on different keys in one
# statement, runs each part on its own (README "Scaling out").
_ROWS = """
WITH g AS (
    SELECT u.profile_id,
           coalesce(array_agg(u.sid ORDER BY u.sid) FILTER (WHERE u.joined), '{{}}') AS sids,
           coalesce(array_agg(extract(epoch FROM u.at)::bigint ORDER BY u.sid)
                    FILTER (WHERE u.joined), '{{}}') AS times,
           coalesce(array_agg(u.sid ORDER BY u.sid) FILTER (WHERE NOT u.joined), '{{}}')
               AS removed,
           coalesce(array_agg(extract(epoch FROM u.at)::bigint ORDER BY u.sid)
                    FILTER (WHERE NOT u.joined), '{{}}') AS removed_times
    FROM ({members}) u
    GROUP BY u.profile_id
){ctes}
SELECT {id_columns}, g.sids, g.times, g.removed, g.removed_times{extra}
FROM g JOIN segments_profile p ON p.id = g.profile_id
{joins}
"""
# Each list is joined by the aggregate itself from its segments' items (rendered once per
# segment, or per membership by SQL when they show its time), in SID order: no array per row
# taken apart again, no item rendered twice.
_LINES = """
WITH g AS (
    SELECT u.profile_id, count(*) FILTER (WHERE u.joined) AS n_joined,
           count(*) FILTER (WHERE NOT u.joined) AS n_removed{lists}
    FROM (SELECT m.profile_id, m.sid, extract(epoch FROM m.at)::bigint AS at, m.joined
          FROM ({members}) m) u
    JOIN unnest(%(seg_sids)s::int[], %(seg_aliases)s::text[]{item_arrays})
         AS seg(sid, alias{item_columns}) ON seg.sid = u.sid
    GROUP BY u.profile_id
){ctes}
SELECT {expression} FROM (
    SELECT {id_columns}, g.n_joined, g.n_removed{list_values}
    FROM g JOIN segments_profile p ON p.id = g.profile_id
    {joins}
) AS r(uuid, dpuuid, n_joined, n_removed{list_columns})
"""
_LIST = (
    "coalesce(string_agg({item}, %(sep{k})s ORDER BY u.sid) FILTER (WHERE {negate}u.joined), '')"
    " AS l{k}"
)
# The data source's mappings, one row per DPUUID of a profile (a row per DPUUID written).
_IDS = """,
ids AS (
    SELECT i.profile_id, i.dpuuid FROM partners_idmapping i
    WHERE i.data_source_id = %(id_dpid)s
)"""
_IDS_JOIN = "JOIN ids ON ids.profile_id = g.profile_id"
# DP_UUID_LIST: each profile's DPUUIDs of the data source, in one list.
_DP_UUID_LISTS = """,
dpuuid_lists AS (
    SELECT i.profile_id, array_agg(i.dpuuid ORDER BY i.dpuuid) AS dpuuids
    FROM partners_idmapping i
    WHERE i.data_source_id = %(id_dpid)s AND i.profile_id IN (SELECT profile_id FROM g)
    GROUP BY i.profile_id
)"""
_DP_UUID_LISTS_JOIN = "LEFT JOIN dpuuid_lists dl ON dl.profile_id = g.profile_id"
# The profile's traits across data sources ({SID: realized at}), for templates showing them.
_TRAITS = """,
traits AS (
    SELECT t.profile_id, jsonb_object_agg(e.key, e.value) AS traits
    FROM segments_profiletraits t, jsonb_each(t.realized) e
    WHERE t.profile_id IN (SELECT profile_id FROM g)
    GROUP BY t.profile_id
)"""
_TRAITS_JOIN = "LEFT JOIN traits tr ON tr.profile_id = g.profile_id"


@dataclass(frozen=True)
class MemberRow:
    uuid: str
    dpuuid: str  # "" when the ID column is the UUID
    sids: list[int]
    times: list[int]
    removed: list[int]
    removed_times: list[int]
    dpuuids: list[str]
    traits: dict[str, int]


@dataclass(frozen=True)
class MemberQuery:
    """Which members a run reads: ``since`` None is a ``full`` export, else ``iter`` (the
    changes in ``(since, until]``). Keyed by UUID, or (``by_dpuuid``) by the DPUUIDs of data
    source ``id_dpid``, one row per DPUUID (``id_dpid`` also feeds ``DP_UUID_LIST``)."""

    segment_sids: list[int]
    id_dpid: int | None
    by_dpuuid: bool
    since: datetime | None
    until: datetime


def destination_rows(
    query: MemberQuery, *, with_dpuuids: bool = False, with_traits: bool = False
) -> Generator[MemberRow, None, None]:
    """The rows to write, each with its segments, as Python values."""
    sql, params = _rows_query(query, with_dpuuids=with_dpuuids, with_traits=with_traits)
    for row in _streamed(sql, params):
        yield MemberRow(
            uuid=row[0],
            dpuuid=row[1],
            sids=list(row[2]),
            times=list(row[3]),
            removed=list(row[4]),
            removed_times=list(row[5]),
            dpuuids=list(row[6] or []),
            # Django reads jsonb as text (its JSONField parses it): parse it here.
            traits=json.loads(row[7]) if isinstance(row[7], str) else dict(row[7] or {}),
        )


# A user ID with a C0/C1 control character or DEL (text cannot hold NUL): the SQL twin of
# partners.inbound.lines.CONTROL_CHARACTER, the characters themselves sent as a parameter (no
# E'' string to get wrong).
CONTROL_CHARACTER_SQL = "[\x01-\x1f\x7f-\x9f]"


def destination_lines(
    query: MemberQuery, *, template: Template, constants: Context, aliases: dict[int, str]
) -> Generator[bytes | None, None, None]:
    """The same rows rendered by PostgreSQL, for a row template it can render (``template.sql``
    not None): the row constants and each segment's alias and items go in as parameters.
    Each line comes as the bytes to write, newline included, read with ``COPY … TO STDOUT``:
    several times faster than rendering each row in Python, and no Python string per row.
    A row whose UUID or DPUUID holds a control character comes as None (not rendered: the
    caller counts it as failed)."""
    assert template.sql is not None
    sids = query.segment_sids
    params = _query_params(query) | {
        "control": CONTROL_CHARACTER_SQL,
        "seg_sids": sids,
        "seg_aliases": [aliases.get(sid, "") for sid in sids],
    }
    params |= {f"c_{name}": str(value) for name, value in constants.items()}
    lists, item_arrays, item_columns = [], [], []
    for k, listed in enumerate(template.sql_lists):
        item = listed.item_sql
        if item is None:  # the same text for every member: rendered here once per segment
            params[f"items{k}"] = [
                listed.render_item(
                    constants, {"sid": sid, "alias": aliases.get(sid, ""), "type": SEGMENT_TYPE}
                )
                for sid in sids
            ]
            item_arrays.append(f", %(items{k})s::text[]")
            item_columns.append(f", i{k}")
            item = f"seg.i{k}"
        params[f"sep{k}"] = listed.separator
        lists.append(", " + _LIST.format(item=item, k=k, negate="" if listed.joined else "NOT "))
    id_columns, ctes, joins = _id_clauses(query)
    sql = _LINES.format(
        # NULL: COPY writes it as the line "\\N", which no rendered text can be (a backslash
        # in text is written doubled).
        expression="CASE WHEN r.uuid ~ %(control)s OR r.dpuuid ~ %(control)s THEN NULL"
        f" ELSE {template.sql} END",
        id_columns=id_columns,
        lists="".join(lists),
        members=_members(query),
        item_arrays="".join(item_arrays),
        item_columns="".join(item_columns),
        ctes=ctes,
        joins=joins,
        list_values="".join(f", g.l{k}" for k in range(len(lists))),
        list_columns="".join(f", l{k}" for k in range(len(lists))),
    )
    # psycopg merges the parameters into a COPY client-side; Django's wrapper takes none.
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({sql}) TO STDOUT", params) as copy,
    ):
        while line := copy.read():
            line = bytes(line)
            if line == _COPY_NULL:
                yield None
                continue
            yield _copy_text_unescaped(line) if b"\\" in line else line


_COPY_NULL = b"\\N\n"


# COPY's text format writes a backslash as two, and a tab, a newline … as a backslash and
# a letter.
_COPY_ESCAPES = (
    (b"\\t", b"\t"),
    (b"\\n", b"\n"),
    (b"\\r", b"\r"),
    (b"\\b", b"\b"),
    (b"\\f", b"\f"),
    (b"\\v", b"\v"),
)


def _copy_text_unescaped(line: bytes) -> bytes:
    """A line of COPY's text format as it was. A text value never holds a NUL byte, so NUL
    stands for an escaped backslash while the other escapes are undone."""
    line = line.replace(b"\\\\", b"\0")
    for escaped, char in _COPY_ESCAPES:
        line = line.replace(escaped, char)
    return line.replace(b"\0", b"\\")


def _streamed(sql: str, params: dict[str, Any]) -> Generator[tuple[Any, ...], None, None]:
    with connection.cursor() as settings:
        # A cursor is planned for its first 10 % by default (fast start, no parallel sort):
        # an export reads every row, and planned for all of them it runs twice as fast.
        settings.execute("SET LOCAL cursor_tuple_fraction = 1.0")
    cursor = connection.chunked_cursor()  # a server-side cursor: rows arrive in batches
    try:
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(5000):
            yield from batch
    finally:
        cursor.close()


def _rows_query(
    query: MemberQuery, *, with_dpuuids: bool, with_traits: bool
) -> tuple[str, dict[str, Any]]:
    id_columns, ctes, joins = _id_clauses(query)
    extra = ""
    if with_dpuuids:
        ctes += _DP_UUID_LISTS
        joins += "\n" + _DP_UUID_LISTS_JOIN
        extra += ", coalesce(dl.dpuuids, '{}')"
    else:
        extra += ", NULL"
    if with_traits:
        ctes += _TRAITS
        joins += "\n" + _TRAITS_JOIN
        extra += ", coalesce(tr.traits, '{}')"
    else:
        extra += ", NULL"
    sql = _ROWS.format(
        id_columns=id_columns, members=_members(query), ctes=ctes, joins=joins, extra=extra
    )
    return sql, _query_params(query)


def _members(query: MemberQuery) -> str:
    return _MEMBERS_FULL if query.since is None else _MEMBERS_ITER


def _id_clauses(query: MemberQuery) -> tuple[str, str, str]:
    """The ID columns (UUID, DPUUID), the CTE and the join that find the DPUUIDs."""
    if not query.by_dpuuid:
        return "p.uuid, ''", "", ""
    return "p.uuid, ids.dpuuid", _IDS, _IDS_JOIN


def _query_params(query: MemberQuery) -> dict[str, Any]:
    return {
        "sids": query.segment_sids,
        "since": query.since,
        "until": query.until,
        "id_dpid": query.id_dpid,
    }
