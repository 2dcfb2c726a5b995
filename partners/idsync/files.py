"""ID-synchronization files (SPEC §2.2): ``adobe_id_`` / ``c2c_id_`` batches.

Each line holds one ID per DPID of the name, master first. The master column's IDs are read
by the master data source's inbound ID type (DPID 0: platform UUIDs; otherwise usually
DPUUIDs already mapped: a chained sync), and every other column's IDs are mapped to the
master's profiles. Reading reuses the inbound machinery: streaming lines, COPY staging, one
set-based statement per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from django.db import connection
from django.utils import timezone

from partners.idsync.mappings import id_mappings_enforce_caps
from partners.inbound.apply import line_errors_persist
from partners.inbound.lines import read_lines, user_id_problem
from partners.inbound.names import parse_inbound_file_name
from partners.inbound.parse import ParseTally
from partners.inbound.proportion import LineCounts
from partners.inbound.stage import Progress, files_stage, sql_run
from partners.models import DataSource, InboundBatch, InboundFile, Receipt
from partners.receipts.build import idsync_receipt_create
from segments.membership import segment_memberships_refresh
from segments.realizations import profiles_ensure, trait_maps_merge

IDSYNC_TABLES = "idsync_stage, idsync_error, idsync_master, idsync_fresh, pending_applied"


def _rows(
    stream: IO[bytes],
    *,
    file_no: int,
    columns: list[tuple[int, str, str]],
    tally: ParseTally,
    counts: LineCounts,
) -> Iterator[tuple[Any, ...]]:
    """One staged row per (line, mapped column): (file_no, line_no, master ID, DPID, ID).
    ``counts``: lines read, and those that could map something (the proportion rules)."""
    (_, master_type, master_format), mapped = columns[0], columns[1:]
    for raw in read_lines(stream):
        tally.received += 1
        counts.lines = raw.number
        counts.received += 1
        if raw.text is None:
            tally.reject(file_no, raw.number, "format_error", raw.error or "unreadable", raw.start)
            continue
        text = raw.text
        if text != text.rstrip(" \t"):
            tally.reject(
                file_no, raw.number, "format_error", "the line ends in a tab or a space", raw.start
            )
            continue
        ids = text.split("\t")
        if len(ids) != len(columns):
            tally.reject(
                file_no,
                raw.number,
                "format_error",
                f"{len(ids)} columns, but the file name lists {len(columns)} DPIDs",
                raw.start,
            )
            continue
        problem = next((f"column {i + 1} is empty" for i, v in enumerate(ids) if not v), None)
        problem = problem or user_id_problem(
            ids[0], inbound_id_type=master_type, device_id_format=master_format
        )
        for index, (_, id_type, id_format) in enumerate(mapped, start=1):
            if problem:
                break
            column_problem = user_id_problem(
                ids[index], inbound_id_type=id_type, device_id_format=id_format
            )
            if column_problem:
                problem = f"column {index + 1}: {column_problem}"
        if problem:
            tally.reject(file_no, raw.number, "invalid_id", problem, raw.start)
            continue
        counts.applying += 1
        for index, (dpid, _, _) in enumerate(mapped, start=1):
            yield (file_no, raw.number, ids[0], dpid, ids[index], raw.start)


def idsync_batch_apply(
    batch: InboundBatch, *, started: datetime, progress: Progress | None = None
) -> Receipt:
    """Apply an ID-sync batch inside the caller's transaction (see inbound_batch_process):
    stage the rows, find each master ID's profiles, map the other columns' IDs to them
    (the caps enforced), then realize the pending records the new mappings match."""
    files = list(batch.files.order_by("split", "name"))
    columns = _columns_of(files[0].name)
    master_dpid, master_type, _ = columns[0]
    tally = _rows_stage(files, columns=columns, progress=progress)
    now = timezone.now()
    params: dict[str, Any] = {"master": master_dpid, "now": now, "batch": batch.pk}
    unmatched = _masters_resolve(params, master_type=master_type)
    created, refreshed = _mappings_upsert(params)
    id_mappings_enforce_caps(touched_table="idsync_fresh")
    _pending_apply(now=int(now.timestamp()))

    sample = line_errors_persist(
        batch_id=batch.pk, file_names=[f.name for f in files], errors_table="idsync_error"
    )
    return idsync_receipt_create(
        batch=batch,
        received=tally.received,
        created=created,
        refreshed=refreshed,
        rejected=tally.rejected + unmatched,
        started=started,
        errors_sample=sample,
    )


def _columns_of(name: str) -> list[tuple[int, str, str]]:
    """(DPID, inbound ID type, device ID format) of each column the file name lists,
    master first (DPID 0: platform UUIDs)."""
    parsed = parse_inbound_file_name(name)
    sources = DataSource.objects.in_bulk([d for d in parsed.column_dpids if d])
    return [
        (dpid, "uuid", "")
        if dpid == 0
        else (dpid, sources[dpid].inbound_id_type, sources[dpid].device_id_format)
        for dpid in parsed.column_dpids
    ]


def _rows_stage(
    files: list[InboundFile], *, columns: list[tuple[int, str, str]], progress: Progress | None
) -> ParseTally:
    """``idsync_stage``: one row per (line, mapped column); ``idsync_error``: the lines
    rejected while reading."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {IDSYNC_TABLES}")
        cursor.execute(
            "CREATE TEMP TABLE idsync_stage (file_no int, line_no bigint, master_id text,"
            " dpid int, id text, line_start text) ON COMMIT DROP"
        )
        cursor.execute(
            "CREATE TEMP TABLE idsync_error (file_no int, line_no bigint, kind text,"
            " reason text, line_start text) ON COMMIT DROP"
        )
    tally = ParseTally()
    files_stage(
        files,
        table="idsync_stage",
        columns="file_no, line_no, master_id, dpid, id, line_start",
        types=["int4", "int8", "text", "int4", "text", "text"],
        rows=lambda file_no, stream, counts: _rows(
            stream, file_no=file_no, columns=columns, tally=tally, counts=counts
        ),
        tally=tally,
        errors_table="idsync_error",
        progress=progress,
    )
    return tally


def _masters_resolve(params: dict[str, Any], *, master_type: str) -> int:
    """``idsync_master``: each staged row with a profile of its master ID; the lines whose
    master ID has none go to ``idsync_error``. Returns how many lines went there."""
    if master_type == DataSource.InboundIDType.UUID:
        profiles_ensure(uuids_sql="SELECT master_id FROM idsync_stage")
        master_join = "JOIN segments_profile p ON p.uuid = s.master_id"
        profile = "p.id"
    else:
        master_join = (
            "JOIN partners_idmapping m ON m.data_source_id = %(master)s AND m.dpuuid = s.master_id"
        )
        profile = "m.profile_id"
    sql_run(
        f"""
        CREATE TEMP TABLE idsync_master ON COMMIT DROP AS
        SELECT s.file_no, s.line_no, s.dpid, s.id, {profile} AS profile_id
        FROM idsync_stage s {master_join}
        """,
        params,
    )
    # Lines whose master ID maps to no profile (a chained sync of an unknown ID).
    return sql_run(
        """
        INSERT INTO idsync_error (file_no, line_no, kind, reason, line_start)
        SELECT DISTINCT s.file_no, s.line_no, 'no_matching_id',
               'no ID mapping for the first column''s ID in data source ' || %(master)s,
               s.line_start
        FROM idsync_stage s
        WHERE NOT EXISTS (SELECT 1 FROM idsync_master m
                          WHERE m.file_no = s.file_no AND m.line_no = s.line_no)
        """,
        params,
    )


def _mappings_upsert(params: dict[str, Any]) -> tuple[int, int]:
    """``idsync_fresh``: the mappings made or seen again; returns (created, refreshed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TEMP TABLE idsync_fresh ON COMMIT DROP AS
            WITH upserted AS (
                INSERT INTO partners_idmapping
                    (data_source_id, dpuuid, profile_id, first_seen_at, last_seen_at)
                SELECT DISTINCT s.dpid, s.id, s.profile_id,
                       %(now)s::timestamptz, %(now)s::timestamptz
                FROM idsync_master s
                -- an opted-out ID is never mapped again, by a file no more than by a browser
                -- (an anti-join rather than NOT EXISTS: on Citus the staged rows travel to
                -- the opt-outs' shards, where a correlated subquery cannot)
                LEFT JOIN partners_idsyncoptout o
                    ON o.data_source_id = s.dpid AND o.dpuuid = s.id
                   AND (o.profile_id IS NULL OR o.profile_id = s.profile_id)
                WHERE o.dpuuid IS NULL
                ON CONFLICT (data_source_id, dpuuid, profile_id)
                DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at
                RETURNING data_source_id, dpuuid, profile_id, (xmax = 0) AS created
            )
            SELECT * FROM upserted
            """,
            params,
        )
        cursor.execute(
            "SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created)"
            " FROM idsync_fresh"
        )
        created, refreshed = cursor.fetchone() or (0, 0)
    return created, refreshed


def _pending_apply(*, now: int) -> None:
    """Cross-device records that waited for a mapping created just now: realize them."""
    sql_run(
        """
        CREATE TEMP TABLE pending_applied ON COMMIT DROP AS
        SELECT pr.id, pr.target_id, pr.adds, pr.realized_at, f.profile_id
        FROM partners_pendingrecord pr
        JOIN idsync_fresh f ON f.data_source_id = pr.data_source_id AND f.dpuuid = pr.dpuuid
        WHERE f.created
        """
    )
    if not sql_run(
        "DELETE FROM partners_pendingrecord WHERE id IN (SELECT id FROM pending_applied)"
    ):
        return
    trait_maps_merge(
        maps_sql="""
            SELECT profile_id, target_id AS data_source_id,
                   jsonb_object_agg(sid::text, extract(epoch FROM realized_at)::bigint)
                       AS realized
            FROM (SELECT DISTINCT ON (profile_id, target_id, sid) profile_id, target_id, sid,
                         realized_at
                  FROM pending_applied CROSS JOIN LATERAL unnest(adds) AS a(sid)
                  ORDER BY profile_id, target_id, sid, realized_at DESC) latest
            GROUP BY profile_id, target_id
        """
    )
    segment_memberships_refresh(profiles_table="pending_applied", now=now)
