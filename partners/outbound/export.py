"""Segment membership of a destination, read from PostgreSQL as a stream of rows (SPEC §6).

One row per user ID to write: its segments (``full``: every current membership in the
destination's segments; ``iter``: the last change of each membership since the previous
successful run, joins and leaves apart). A server-side cursor streams them: the membership
list is never in memory whole.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

_FULL = """
SELECT {id_columns},
       array_agg(m.segment_id ORDER BY m.segment_id) AS sids,
       array_agg(extract(epoch FROM m.joined_at)::bigint ORDER BY m.segment_id) AS times,
       '{{}}'::int[] AS removed, '{{}}'::bigint[] AS removed_times{extra}
FROM segments_segmentmembership m
JOIN segments_profile p ON p.id = m.profile_id
{id_join}
WHERE m.segment_id = ANY(%(sids)s)
GROUP BY {id_group}
"""
_ITER = """
WITH last AS (
    SELECT DISTINCT ON (c.profile_id, c.segment_id) c.profile_id, c.segment_id, c.joined, c.at
    FROM segments_segmentmembershipchange c
    WHERE c.segment_id = ANY(%(sids)s) AND c.at > %(since)s AND c.at <= %(until)s
    ORDER BY c.profile_id, c.segment_id, c.at DESC, c.id DESC
)
SELECT {id_columns},
       coalesce(array_agg(m.segment_id ORDER BY m.segment_id) FILTER (WHERE m.joined), '{{}}'),
       coalesce(array_agg(extract(epoch FROM m.at)::bigint ORDER BY m.segment_id)
                FILTER (WHERE m.joined), '{{}}'),
       coalesce(array_agg(m.segment_id ORDER BY m.segment_id) FILTER (WHERE NOT m.joined), '{{}}'),
       coalesce(array_agg(extract(epoch FROM m.at)::bigint ORDER BY m.segment_id)
                FILTER (WHERE NOT m.joined), '{{}}'){extra}
FROM last m
JOIN segments_profile p ON p.id = m.profile_id
{id_join}
GROUP BY {id_group}
"""
_DP_UUID_LIST = (
    ", (SELECT coalesce(array_agg(i.dpuuid ORDER BY i.dpuuid), '{}') FROM partners_idmapping i"
    " WHERE i.profile_id = p.id AND i.data_source_id = %(id_dpid)s) AS dpuuids"
)
_TRAITS = (
    ", (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}') FROM segments_profiletraits t,"
    " jsonb_each(t.realized) e WHERE t.profile_id = p.id) AS traits"
)


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


def destination_lines(
    query: MemberQuery, *, expression: str, constants: dict[str, str], aliases: dict[int, str]
) -> Generator[str, None, None]:
    """The same rows rendered by PostgreSQL: ``expression`` is a row template compiled to SQL
    over the row ``r`` (Template.sql), with the row constants and the segments' aliases as
    parameters. Several times faster than rendering each row in Python."""
    inner, params = _rows_query(query, with_dpuuids=False, with_traits=False)
    sql = (
        f"SELECT {expression} FROM ({inner})"
        " AS r(uuid, dpuuid, sids, times, removed, removed_times, dpuuids, traits)"
    )
    params |= {f"c_{name}": value for name, value in constants.items()}
    params["aliases"] = json.dumps({str(sid): value for sid, value in aliases.items()})
    for row in _streamed(sql, params):
        yield row[0]


def _streamed(sql: str, params: dict[str, Any]) -> Generator[tuple[Any, ...], None, None]:
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
    if not query.by_dpuuid:
        id_columns, id_join, id_group = "p.uuid, ''", "", "p.id, p.uuid"
    else:
        id_columns = "p.uuid, im.dpuuid"
        id_join = (
            "JOIN partners_idmapping im ON im.profile_id = p.id AND im.data_source_id = %(id_dpid)s"
        )
        id_group = "p.id, p.uuid, im.dpuuid"
    extra = (_DP_UUID_LIST if with_dpuuids else ", NULL") + (_TRAITS if with_traits else ", NULL")
    sql = (_FULL if query.since is None else _ITER).format(
        id_columns=id_columns, id_join=id_join, id_group=id_group, extra=extra
    )
    params: dict[str, Any] = {
        "sids": query.segment_sids,
        "since": query.since,
        "until": query.until,
        "id_dpid": query.id_dpid,
    }
    return sql, params
