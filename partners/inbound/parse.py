"""From a file's plain bytes to staging rows: the per-line work, in Python, streaming.

Lines are read in order (bounded, SPEC §3.2) and parsed in blocks: by a pool of parse
processes for a big batch, so every core parses while this process feeds COPY, or in
process for a small one. A block comes back as COPY text for ``stage_line`` plus its
rejected lines.

Lines past the 200-lines-per-user limit are mostly dropped here, before they cost a row of
COPY and of every statement after it: each parser counts the lines of each user ID it has
seen (:class:`UserLineCounts`), and a line whose user ID already had 200 is over the limit
in the batch. The SQL of :mod:`partners.inbound.apply` still applies the limit exactly to
the lines staged, so the figures are the same either way.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, NamedTuple

from partners.inbound.lines import (
    DEVICE_ID_TYPES,
    MAX_LINES_PER_USER,
    LineBlock,
    LineFormatError,
    decode_lines,
    parse_device_line,
    read_line_blocks,
    split_inbound_line,
    user_id_problem,
)
from partners.inbound.matching import LineOutcome, TraitCatalog
from partners.inbound.proportion import LineCounts

MAX_STORED_ERRORS = 100_000
OVER_LIMIT = "over_line_limit"
OVER_LIMIT_REASON = f"more than {MAX_LINES_PER_USER} lines for this user ID in the file: discarded"


@dataclass(frozen=True)
class IDSource:
    """How the user IDs of a file are read: the data source and its ID type."""

    dpid: int
    inbound_id_type: str
    device_id_format: str


@dataclass
class ParseTally:
    """Lines read, lines rejected while reading, lines dropped while reading as over the
    per-user limit (their rows kept up to MAX_STORED_ERRORS with the rejected ones)."""

    received: int = 0
    rejected: int = 0
    over_limit: int = 0
    errors: list[tuple[int, int, str, str, str]] = field(default_factory=list)

    def reject(self, file_no: int, line_no: int, kind: str, reason: str, start: str) -> None:
        if kind == OVER_LIMIT:
            self.over_limit += 1
        else:
            self.rejected += 1
        if len(self.errors) < MAX_STORED_ERRORS:
            self.errors.append((file_no, line_no, kind, reason, start))

    @property
    def room(self) -> int:
        """How many more rejected lines are kept."""
        return MAX_STORED_ERRORS - len(self.errors)


class UserLineCounts:
    """Per data source, the lines counted so far of the user IDs that have many (well-formed
    lines only: a format error does not count towards the limit).

    Each count is a lower bound of the lines the user ID had before in the batch: a parse
    process sees some of the blocks, in file order; a user ID is counted here from the end
    of a block that held at least ``PROMOTED_AT`` of its lines (with that many), and counts
    forgotten to stay within ``max_ids`` start again from 0. So a line whose count is
    already at the limit is over it, whatever the other processes saw. Within a block every
    user ID is counted (a small dictionary, cheap to keep per line; a dictionary of every
    user ID of a big file would cost a lookup in a big table per line, about 10 % of the
    parse), so a block of one user ID is cut at the limit however it starts."""

    PROMOTED_AT = 16  # user IDs repeated with a period under gzip's 32 KB window get here

    def __init__(self, max_ids: int = 100_000) -> None:
        self.max_ids = max_ids
        self.by_source: dict[int, dict[str, int]] = {}

    def of(self, dpid: int) -> dict[str, int]:
        counts = self.by_source.get(dpid)
        if counts is None:
            counts = self.by_source[dpid] = {}
        return counts

    def block_counted(self, dpid: int, block_counts: dict[str, int]) -> None:
        """Keep counting the user IDs with many lines in a block just parsed."""
        promoted = self.PROMOTED_AT
        counts = self.of(dpid)
        for user_id, count in block_counts.items():
            if count >= promoted:
                counts[user_id] = count
        self._trim()

    def _trim(self) -> None:
        """Forget the smallest counts until at most half of ``max_ids`` are kept: user IDs
        with many lines (the ones the limit is about) stay."""
        if sum(map(len, self.by_source.values())) <= self.max_ids:
            return
        floor = self.PROMOTED_AT
        while sum(map(len, self.by_source.values())) > self.max_ids // 2:
            for dpid, counts in self.by_source.items():
                self.by_source[dpid] = {u: n for u, n in counts.items() if n > floor}
            floor *= 2


READ_AHEAD_BLOCKS = 8  # blocks handed to the parse processes before waiting for the first
_NULL = "\\N"


@dataclass(frozen=True)
class LineContext:
    """How the lines of one file are read (sent with each block to a parse process)."""

    file_no: int
    device_file: bool
    id_source: IDSource
    device_sources: dict[int, IDSource]
    overwrite: bool


class BlockResult(NamedTuple):
    copy_text: str  # stage_line rows in COPY text format
    received: int  # lines (not blank)
    # The rejected lines (format errors, lines over the limit) in order, as many as the
    # tally had room for: (file_no, line_no, kind, reason, start)
    rejected: list[tuple[int, int, str, str, str]]
    device_type: str | None  # the ID type of a legacy device file, once seen
    last_line: int  # the number of the block's last line
    format_errors: int
    over_limit: int  # lines dropped as over the per-user limit
    invalid_ids: int  # lines staged whose user ID is not valid
    no_trait: int  # lines staged that realize or remove nothing


def ord_of(file_no: int, line_no: int) -> int:
    """A batch-wide line order (``stage_line.ord``): files in batch order, lines in file order."""
    return (file_no << 40) | line_no


def _copy_escaped(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


def line_parse(
    text: str, *, context: LineContext, catalog: TraitCatalog, device_type: str | None
) -> tuple[str, IDSource, LineOutcome, str | None]:
    """One line: its user ID, whose ID it is, what it realizes and removes, and the ID type
    of a legacy device file (set by its first line). Raises :class:`LineFormatError`."""
    if not context.device_file:
        user_id, signals_text = split_inbound_line(text)
        outcome = catalog.match_text(signals_text, overwrite=context.overwrite)
        return user_id, context.id_source, outcome, device_type
    id_type, user_id, signals = parse_device_line(text)
    if device_type is None:
        device_type = id_type
    elif id_type != device_type:
        raise LineFormatError(f"'{id_type}' after '{device_type}': one file holds one ID type")
    source = context.device_sources[DEVICE_ID_TYPES[id_type]]
    return user_id, source, catalog.match(signals, overwrite=context.overwrite), device_type


def _line_staged(
    out: list[str],
    ord_: int,
    file_no: int,
    number: int,
    source: IDSource,
    user_id: str,
    outcome: LineOutcome,
    start: str,
) -> str | None:
    """Append a line within the per-user limit to ``out`` as a row of COPY text
    (``stage_line``'s columns); return why its user ID is not valid (None: it is)."""
    problem = user_id_problem(
        user_id,
        inbound_id_type=source.inbound_id_type,
        device_id_format=source.device_id_format,
    )
    adds, removes, signal_count, unused, failed = outcome
    # The hottest lines of the import: a line start always holds its tab, user IDs
    # rarely need escaping, and removals are rare.
    start = _copy_escaped(start) if "\\" in start or "\r" in start else start.replace("\t", "\\t")
    out.append(
        f"{ord_}\t{file_no}\t{number}\t{source.dpid}"
        f"\t{_copy_escaped(user_id)}\t{_NULL if problem is None else problem}"
        f"\t{signal_count}\t{unused}\t{failed}\t{{{','.join(map(str, adds))}}}"
        f"\t{{{','.join(map(str, removes)) if removes else ''}}}\t{start}\n"
    )
    return problem


def line_block_parse(
    block: LineBlock,
    *,
    context: LineContext,
    catalog: TraitCatalog,
    user_lines: UserLineCounts,
    device_type: str | None = None,
    room: int = MAX_STORED_ERRORS,
) -> BlockResult:
    """Decode, parse and match a block of a file's lines; lines over the per-user limit are
    only checked for their format. At most ``room`` rejected lines are returned (counted all
    the same). Pure, but for ``user_lines``, which it updates."""
    file_no = context.file_no
    ord_base = ord_of(file_no, 0)
    received = format_errors = over_limit = invalid_ids = no_trait = 0
    rejected: list[tuple[int, int, str, str, str]] = []
    out: list[str] = []
    cap = MAX_LINES_PER_USER
    device_file, overwrite, source = context.device_file, context.overwrite, context.id_source
    many = user_lines.of(source.dpid)  # a device file: per line, below
    in_block: dict[int, dict[str, int]] = {source.dpid: {}}
    block_counts = in_block[source.dpid]
    for number, text, error, start in decode_lines(*block):
        received += 1
        try:
            if text is None:
                raise LineFormatError(error or "unreadable line")
            if device_file:
                user_id, source, outcome, device_type = line_parse(
                    text, context=context, catalog=catalog, device_type=device_type
                )
                many = user_lines.of(source.dpid)
                block_counts = in_block.setdefault(source.dpid, {})
                known = many.get(user_id)
                count = known if known is not None else block_counts.get(user_id, 0)
            else:
                user_id, signals_text = split_inbound_line(text)
                known = many.get(user_id)
                count = known if known is not None else block_counts.get(user_id, 0)
                if count >= cap:  # over the limit: only its format matters (SPEC §4)
                    catalog.text_check(signals_text)
                else:
                    outcome = catalog.match_text(signals_text, overwrite=overwrite)
        except LineFormatError as exc:
            format_errors += 1
            if len(rejected) < room:
                rejected.append((file_no, number, "format_error", str(exc), start))
            continue
        if count >= cap:
            over_limit += 1
            if len(rejected) < room:
                rejected.append((file_no, number, OVER_LIMIT, OVER_LIMIT_REASON, start))
            continue
        if known is None:
            block_counts[user_id] = count + 1
        else:
            many[user_id] = count + 1
        problem = _line_staged(
            out, ord_base | number, file_no, number, source, user_id, outcome, start
        )
        if problem is not None:
            invalid_ids += 1
        elif not outcome.adds and not outcome.removes:
            no_trait += 1
    for dpid, counts in in_block.items():
        user_lines.block_counted(dpid, counts)
    return BlockResult(
        "".join(out),
        received,
        rejected,
        device_type,
        block[0] + len(block[1]) - 1,
        format_errors,
        over_limit,
        invalid_ids,
        no_trait,
    )


# A parse process holds the batch's catalog (sent once, when the pool starts), and its
# memos of token effects and rule verdicts warm up over the blocks it parses; it counts the
# lines of each user ID it sees (the blocks it takes come in file order).
_process_catalog: TraitCatalog | None = None
_process_user_lines = UserLineCounts()


def _parse_process_init(catalog: TraitCatalog, parent: int) -> None:
    global _process_catalog, _process_user_lines
    _process_catalog = catalog
    _process_user_lines = UserLineCounts()
    _die_with(parent)


def _die_with(parent: int) -> None:
    """End this process when ``parent`` (the worker's work horse) dies, however it dies: a
    SIGKILL (OOM killer, RQ's timeout) runs no cleanup, and a pool process waiting on its
    queue would otherwise wait forever, holding its memory. Linux tells us (PR_SET_PDEATHSIG);
    elsewhere a thread watches for a new parent."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before we asked
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _parse_process_block(block: LineBlock, context: LineContext, room: int) -> BlockResult:
    assert _process_catalog is not None
    return line_block_parse(
        block, context=context, catalog=_process_catalog, user_lines=_process_user_lines, room=room
    )


@contextmanager
def line_parse_pool(catalog: TraitCatalog, *, processes: int) -> Iterator[Executor | None]:
    """Processes that parse blocks of lines in parallel (none when ``processes`` is 0).

    Started with ``spawn``: a forked copy of a process holding a database connection is a
    hazard, and the parse needs nothing but the catalog (this module and the ones it
    imports are pure: no Django in the parse processes, which stay small). A process that
    dies breaks the pool, and the batch fails with that error (RQ retries it) instead of
    waiting.
    """
    if processes <= 0:
        yield None
        return
    with ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_parse_process_init,
        initargs=(catalog, os.getpid()),
    ) as pool:
        yield pool


def staged_line_text(
    stream: IO[bytes],
    *,
    context: LineContext,
    catalog: TraitCatalog,
    tally: ParseTally,
    pool: Executor | None,
    user_lines: UserLineCounts,
    counts: LineCounts | None = None,
) -> Iterator[str]:
    """Yield ``stage_line`` rows as COPY text, block by block in file order; count and keep
    the rejected lines in ``tally``, and what the file's lines hold in ``counts``.

    The stream is cut into blocks of lines here (streaming, bounded); the blocks are decoded
    and parsed by ``pool`` when there is one, a few blocks ahead, so that the parse
    processes work while this one feeds COPY. Without a pool (small batches, and legacy
    device files, whose lines depend on the first one) they are parsed in process, with
    ``user_lines`` counting the lines of each user ID.
    """
    counts = counts if counts is not None else LineCounts()

    def taken(result: BlockResult) -> str:
        tally.received += result.received
        tally.rejected += result.format_errors
        tally.over_limit += result.over_limit
        tally.errors.extend(result.rejected[: tally.room])
        counts.lines = result.last_line
        counts.received += result.received
        counts.format_errors += result.format_errors
        counts.over_limit += result.over_limit
        counts.invalid_ids += result.invalid_ids
        counts.no_trait += result.no_trait
        counts.applying = (
            counts.received
            - counts.format_errors
            - counts.over_limit
            - counts.invalid_ids
            - counts.no_trait
        )
        return result.copy_text

    if pool is None or context.device_file:
        device_type: str | None = None
        for block in read_line_blocks(stream):
            if not block[1]:  # blank lines only (the caller may judge the file by them)
                counts.lines = block[0] - 1
                yield ""
                continue
            result = line_block_parse(
                block,
                context=context,
                catalog=catalog,
                user_lines=user_lines,
                device_type=device_type,
                room=tally.room,
            )
            device_type = result.device_type
            yield taken(result)
        return
    # Bounded read-ahead: memory stays flat however long the file is. A block is told how
    # many rejected lines the tally can still keep (it can only have fewer by the time the
    # block is taken), so a block of lines over the limit sends back counts, not rows.
    pending: deque[Future[BlockResult]] = deque()
    for block in read_line_blocks(stream):
        if not block[1]:  # blank lines only: the counts catch up with the reading
            while pending:
                yield taken(pending.popleft().result())
            counts.lines = block[0] - 1
            yield ""
            continue
        pending.append(pool.submit(_parse_process_block, block, context, tally.room))
        if len(pending) > READ_AHEAD_BLOCKS:
            yield taken(pending.popleft().result())
    while pending:
        yield taken(pending.popleft().result())
