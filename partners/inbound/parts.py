"""Parts of a big batch parsed ahead by jobs of their own, on any worker.

A part job parses one file into its own UNLOGGED tables (``inbound_part_<file id>`` and
``…_error``) and records a :class:`StagedPart`, all in one transaction: a worker killed
midway leaves nothing, and the retry starts again. The batch job then takes the staged rows
into its own staging tables and drops the part tables in the batch's transaction, so they
go exactly when the batch commits. An unlogged table is emptied by a PostgreSQL crash: a
part whose table no longer holds its rows is not trusted, and is parsed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import connection

from partners.inbound.parse import ParseTally
from partners.inbound.stage import ERROR_COLUMNS, LINE_COLUMNS, STAGE_ERROR, STAGE_LINE
from partners.models import InboundFile, StagedPart


def part_tables(file_id: int) -> tuple[str, str]:
    return f"inbound_part_{file_id}", f"inbound_part_{file_id}_error"


def part_tables_create(file_id: int) -> tuple[str, str]:
    """Empty line and error tables for one part (made again when a retry finds them)."""
    lines, errors = part_tables(file_id)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {lines}, {errors}")
        for name, ddl in ((lines, STAGE_LINE), (errors, STAGE_ERROR)):
            cursor.execute(
                ddl.replace("CREATE TEMP TABLE stage_line", f"CREATE UNLOGGED TABLE {name}")
                .replace("CREATE TEMP TABLE stage_error", f"CREATE UNLOGGED TABLE {name}")
                .replace("ON COMMIT DROP", "")
            )
    return lines, errors


def staged_parts_take(files: Sequence[InboundFile], *, tally: ParseTally) -> dict[int, StagedPart]:
    """Copy the staged parts of ``files`` into the batch's staging tables (and their counts
    into ``tally``); return them by file id. A part whose table lost its rows is skipped."""
    taken: dict[int, StagedPart] = {}
    with connection.cursor() as cursor:
        for part in StagedPart.objects.filter(file__in=files):
            lines, errors = part_tables(part.file_id)
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [lines])
            exists = cursor.fetchone()
            if not exists or not exists[0]:
                continue
            cursor.execute(f"SELECT count(*) FROM {lines}")
            count = cursor.fetchone()
            if not count or count[0] != part.lines:  # emptied by a crash: parse it again
                continue
            cursor.execute(
                f"INSERT INTO stage_line ({LINE_COLUMNS}) SELECT {LINE_COLUMNS} FROM {lines}"
            )
            cursor.execute(
                f"INSERT INTO stage_error ({ERROR_COLUMNS}) SELECT {ERROR_COLUMNS} FROM {errors}"
            )
            tally.received += part.received
            tally.rejected += part.rejected
            tally.over_limit += part.over_limit
            taken[part.file_id] = part
    return taken


def staged_parts_drop(parts: Iterable[StagedPart]) -> None:
    """Drop the parts' tables and records (inside the batch's transaction)."""
    parts = list(parts)
    with connection.cursor() as cursor:
        for part in parts:
            lines, errors = part_tables(part.file_id)
            cursor.execute(f"DROP TABLE IF EXISTS {lines}, {errors}")
    StagedPart.objects.filter(pk__in=[part.pk for part in parts]).delete()
