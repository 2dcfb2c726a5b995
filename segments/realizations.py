"""Profiles and their trait maps, written for the apps that feed them (inbound batches, ID
sync): the SQL of segments' own tables is written here, once. Callers say *what* to write as
a SELECT over their own (temporary) tables; these statements say *how* it is stored.

A trait map is ``segments_profiletraits.realized``: ``{"<SID>": <realized UNIX seconds>}``
per (profile, data source). Every statement is set-based: one per call, whatever the size.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

# For a caller that must stay one statement (the ID-sync endpoint answers a browser on every
# page view: one round trip): CTEs ``made`` and ``profile`` giving the id of the profile of
# ``%(uuid)s``, made when new if ``%(may_create)s`` (else ``profile`` is empty for a new
# one). Used as ``WITH {PROFILE_OF_UUID_CTES}, …``.
PROFILE_OF_UUID_CTES = """
made AS (
    INSERT INTO segments_profile (uuid, created_at) SELECT %(uuid)s, now() WHERE %(may_create)s
    ON CONFLICT (uuid) DO NOTHING RETURNING id
), profile AS (
    SELECT id FROM made UNION ALL SELECT id FROM segments_profile WHERE uuid = %(uuid)s LIMIT 1
)
"""


def _run(sql: str, params: dict[str, Any] | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def profiles_ensure(*, uuids_sql: str, params: dict[str, Any] | None = None) -> int:
    """Make a profile for each UUID that ``uuids_sql`` (a SELECT of one column) gives and
    that has none yet; return how many were made."""
    return _run(
        f"""
        INSERT INTO segments_profile (uuid, created_at)
        SELECT DISTINCT s.uuid, now() FROM ({uuids_sql}) AS s(uuid)
        ON CONFLICT (uuid) DO NOTHING
        """,
        params,
    )


def trait_maps_merge(
    *, maps_sql: str, params: dict[str, Any] | None = None, touched_into: str | None = None
) -> int:
    """Add trait maps to what the profiles hold: ``maps_sql`` selects ``(profile_id,
    data_source_id, realized)``, one row per (profile, data source); a SID already held
    takes its new time. With ``touched_into``, the profiles written are kept in a new
    temporary table of that name (``profile_id``), in the same statement. Returns the rows
    written."""
    # In key order: the primary-key index is filled left to right.
    upsert = """
        INSERT INTO segments_profiletraits (profile_id, data_source_id, realized, updated_at)
        SELECT profile_id, data_source_id, realized, now() FROM maps ORDER BY profile_id
        ON CONFLICT (profile_id, data_source_id)
        DO UPDATE SET realized = segments_profiletraits.realized || EXCLUDED.realized,
                      updated_at = EXCLUDED.updated_at
    """
    if touched_into is None:
        return _run(f"WITH maps AS ({maps_sql}) {upsert}", params)
    return _run(
        f"""
        CREATE TEMP TABLE {touched_into} ON COMMIT DROP AS
        WITH maps AS ({maps_sql}), stored AS ({upsert} RETURNING profile_id)
        SELECT profile_id FROM stored
        """,
        params,
    )


def trait_maps_replace(*, maps_sql: str, params: dict[str, Any] | None = None) -> int:
    """Replace what the profiles hold of a data source with new trait maps (``maps_sql`` as
    for :func:`trait_maps_merge`); return the rows written."""
    return _run(
        f"""
        WITH maps AS ({maps_sql})
        INSERT INTO segments_profiletraits (profile_id, data_source_id, realized, updated_at)
        SELECT profile_id, data_source_id, realized, now() FROM maps ORDER BY profile_id
        ON CONFLICT (profile_id, data_source_id)
        DO UPDATE SET realized = EXCLUDED.realized, updated_at = EXCLUDED.updated_at
        """,
        params,
    )
