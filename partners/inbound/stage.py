"""Parsed lines into temporary staging tables, through COPY (psycopg 3).

The tables live for the batch's transaction only: a worker killed mid-batch leaves nothing
behind, and the retry starts from a clean slate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.db import connection

from partners.inbound.names import parse_inbound_file_name
from partners.inbound.proportion import (
    LineCounts,
    OutOfProportionError,
    ProportionRules,
    proportion_watch,
)
from partners.inbound.sources import ReadMeter, UnreadableFileError, open_plain

if TYPE_CHECKING:
    from partners.inbound.parse import ParseTally
    from partners.models import InboundFile

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
ERROR_COLUMNS = "file_no, line_no, kind, reason, line_start"
ERROR_TYPES = ["int4", "int8", "text", "text", "text"]


# Every temporary relation a batch creates (stage, apply, membership). Tables drop at commit;
# views do not, so they are dropped when the batch is done; and a caller that runs two
# batches in one transaction (tests, `ingest` of several batches) needs all of them gone.
BATCH_RELATIONS = [
    "stage_line",
    "stage_error",
    "line",
    "line_outcome",
    "hit",
    "unresolved",
    "op",
    "old",
    "ttl",
    "pair",
    "removal",
    "newmap",
    "batch_error",
    "touched_trait_map",
]


def batch_relations_drop() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relkind FROM pg_class"
            " WHERE relnamespace = pg_my_temp_schema() AND relname = ANY(%s)",
            [BATCH_RELATIONS],
        )
        for name, kind in cursor.fetchall():
            cursor.execute(f"DROP {'VIEW' if kind == 'v' else 'TABLE'} IF EXISTS {name} CASCADE")


def staging_create() -> None:
    batch_relations_drop()
    with connection.cursor() as cursor:
        cursor.execute(STAGE_LINE)
        cursor.execute(STAGE_ERROR)


def stage_rows(table: str, columns: str, types: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """COPY ``rows`` into a staging table (binary COPY: no text escaping of partner data)."""
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def stage_text(table: str, columns: str, blocks: Iterable[str]) -> None:
    """COPY blocks of rows already in COPY text format (escaped by their maker)."""
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for block in blocks:
            if block:
                copy.write(block)


_Item = TypeVar("_Item")


class NoRecordsError(UnreadableFileError):
    """A file read to its end (or as far as a check reads) without a single record."""


# How a check wraps a file's plain stream: it may bound the reading through the meter.
StreamWrap = Callable[[IO[bytes], ReadMeter], IO[bytes]]


def proportion_rules() -> ProportionRules:
    return ProportionRules(
        min_lines=settings.INBOUND_PROPORTION_MIN_LINES,
        lines_per_line_applying=settings.INBOUND_PROPORTION_LINES,
        min_bytes=settings.INBOUND_PROPORTION_MIN_BYTES,
        bytes_per_line_applying=settings.INBOUND_PROPORTION_BYTES,
    )


def files_stage(
    files: Sequence[InboundFile],
    *,
    table: str,
    columns: str,
    types: list[str] | None,
    rows: Callable[[int, IO[bytes], LineCounts], Iterable[Any]],
    tally: ParseTally,
    errors_table: str,
    progress: Progress | None = None,
    skip: Collection[int] = (),
    stream_wrap: StreamWrap | None = None,
) -> None:
    """Stream every file of a batch (plain bytes) into ``table``, in batch order, then the
    lines rejected while reading into ``errors_table``. ``rows`` yields row tuples of
    ``types``, or with ``types`` None, blocks of rows in COPY text format, and keeps what
    the file's lines hold in its :class:`LineCounts`. A file that cannot be read, holds no
    records, or is read far out of proportion to what it could apply
    (:mod:`partners.inbound.proportion`) fails the whole batch with its name in the message.
    ``progress`` hears the share of the batch's stored bytes read (0 to ``STAGED_PERCENT``).
    The files numbered in ``skip`` are staged already (by part jobs). ``stream_wrap`` wraps
    each file's plain stream (the check reads only the start of a file through it, with its
    own bounds instead of the proportion rules).
    """
    total = max(1, sum(file.size for file_no, file in enumerate(files) if file_no not in skip))
    done = 0  # stored bytes of the files read before
    rules = None if stream_wrap else proportion_rules()
    for file_no, file in enumerate(files):
        if file_no in skip:
            continue
        received_before = tally.received
        meter = ReadMeter()
        counts = LineCounts()
        if rules is not None:
            meter.watch = proportion_watch(counts, bytes_read=meter.bytes_read, rules=rules)
        compression = parse_inbound_file_name(file.name).compression
        try:
            with open_plain(file.storage, file.path, compression, meter=meter) as plain:
                stream = stream_wrap(plain, meter) if stream_wrap else plain
                staged: Iterable[Any] = rows(file_no, stream, counts)
                if meter.watch is not None and types is None:
                    # Judged by its lines too, block by block as they are parsed (rows one by
                    # one are judged as the file is read, every 64 KB).
                    staged = _watched(staged, meter.watch)
                if progress is not None:
                    staged = _reporting(staged, _share(meter, done, total), progress)
                if types is None:
                    stage_text(table, columns, staged)
                else:
                    stage_rows(table, columns, types, staged)
        except (UnreadableFileError, OutOfProportionError) as exc:
            raise UnreadableFileError(f"{file.name}: {exc}") from exc
        done += meter.stored
        if tally.received == received_before:
            raise NoRecordsError(f"{file.name}: the file holds no records")
    stage_rows(errors_table, ERROR_COLUMNS, ERROR_TYPES, tally.errors)


def _watched(items: Iterable[_Item], watch: Callable[[], None]) -> Iterator[_Item]:
    for item in items:
        watch()
        yield item


def _share(meter: ReadMeter, done: int, total: int) -> Callable[[], int]:
    return lambda: (done + meter.stored) * STAGED_PERCENT // total


# A batch's progress in percent, heard by whoever follows it (the job saves it for the portal).
Progress = Callable[[int], None]
STAGED_PERCENT = 80  # reading and staging is most of a batch; applying is the rest
PROGRESS_EVERY_SECONDS = 1.0


def _reporting(
    items: Iterable[_Item], percent: Callable[[], int], progress: Progress
) -> Iterator[_Item]:
    """Pass ``items`` through, telling ``progress`` the percentage at most once a second."""
    last = time.monotonic()
    for item in items:
        yield item
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_SECONDS:
            last = now
            progress(min(STAGED_PERCENT, percent()))


def sql_run(sql: str, params: dict[str, Any] | None = None) -> int:
    """Run one statement on the batch's connection; return the rows it touched."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)
