"""Parsed lines into temporary staging tables, through COPY (psycopg 3).

The tables live for the batch's transaction only: a worker killed mid-batch leaves nothing
behind, and the retry starts from a clean slate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection

# One row per well-formed line. ``ord`` orders every line of the batch (file, then line).
STAGE_LINE = """
CREATE TEMP TABLE stage_line (
    ord bigint NOT NULL,
    file_no int NOT NULL,
    line_no bigint NOT NULL,
    id_dpid int NOT NULL,
    user_id text NOT NULL,
    id_problem text,
    signals int NOT NULL,
    unused int NOT NULL,
    failed int NOT NULL,
    adds int[] NOT NULL,
    removes int[] NOT NULL,
    line_start text NOT NULL
) ON COMMIT DROP
"""
STAGE_ERROR = """
CREATE TEMP TABLE stage_error (
    file_no int NOT NULL,
    line_no bigint NOT NULL,
    kind text NOT NULL,
    reason text NOT NULL,
    line_start text NOT NULL
) ON COMMIT DROP
"""
LINE_COLUMNS = (
    "ord, file_no, line_no, id_dpid, user_id, id_problem, signals, unused, failed, adds,"
    " removes, line_start"
)
LINE_TYPES = ["int8", "int4", "int8", "int4", "text", "text", "int4", "int4", "int4"]
LINE_TYPES += ["int4[]", "int4[]", "text"]
ERROR_TYPES = ["int4", "int8", "text", "text", "text"]


def ord_of(file_no: int, line_no: int) -> int:
    """A batch-wide line order: files in batch order, lines in file order."""
    return (file_no << 40) | line_no


# Every temporary table a batch creates (stage, apply, membership). They drop at commit; a
# caller that runs two batches in one outer transaction (tests) needs them dropped sooner.
BATCH_TABLES = (
    "stage_line, stage_error, line, hit, line_outcome, op, old, ttl, seq, newmap,"
    " batch_error, touched_trait_map"
)


def staging_create() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {BATCH_TABLES}")
        cursor.execute(STAGE_LINE)
        cursor.execute(STAGE_ERROR)


def stage_rows(table: str, columns: str, types: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """COPY ``rows`` into a staging table (binary COPY: no text escaping of partner data)."""
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
