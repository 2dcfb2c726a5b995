"""Check a trait file without applying anything: the start of it, processed by the real
pipeline inside a transaction that is rolled back, so every figure of the check is what
processing those lines gives."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone
from psycopg import errors as pg_errors

from partners.inbound.errors import InboundRejected
from partners.inbound.lines import MAX_LINE_BYTES
from partners.inbound.name_checks import traits_name_check
from partners.inbound.names import FileKind, InboundFileName, parse_inbound_file_name
from partners.inbound.sources import ReadMeter, ReadStopped, UnreadableFileError
from partners.inbound.stage import NoRecordsError, StreamWrap
from partners.inbound.traits import TraitBatchResult, trait_batch_apply
from partners.models import DataSource, InboundBatch, InboundFile, Partner, Receipt
from partners.receipts.render import receipt_counter_rows, receipt_error_rows
from partners.reports import success_percent
from partners.storage import StoredFile
from segments.models import Trait

# How long the check waits for a row a running batch holds before saying it is busy: a
# check runs in a web request, which must not hang behind a batch of millions of lines.
CHECK_LOCK_WAIT_MS = 2000


class _CheckBound(io.RawIOBase):
    """The plain bytes a check may read: whole lines only, at most ``lines`` of them (blank
    lines count too: a small gzip of a gigabyte of them holds no record at all) and
    ``max_bytes`` bytes. The clock, and the stored bytes of a compressed file, are held by
    the reader's meter, which stops the reading wherever it is (:class:`ReadStopped`: a
    gzip member inflating nothing, gpg writing nothing); the line being read then is left
    out, so no line is cut in two."""

    def __init__(self, inner: IO[bytes], *, lines: int, max_bytes: int) -> None:
        self.inner = inner
        self.lines_left = lines
        self.left = max_bytes
        self.partial = b""  # the start of a line whose end is not read yet
        self.ready = memoryview(b"")  # whole lines within the bounds, not handed out yet
        self.read_bytes = 0
        self.stopped = ""  # why the check stopped before the end of the file
        self.ended = False  # the end of the file was read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.ready:
            self.ready = memoryview(self._whole_lines(len(buffer)))
        size = min(len(buffer), len(self.ready))
        buffer[:size] = self.ready[:size]
        self.ready = self.ready[size:]
        return size

    def _read(self, size: int) -> bytes | None:
        """The next bytes; None when the reader stopped at the meter's bounds."""
        try:
            return self.inner.read(size)
        except ReadStopped as stop:
            self.stopped = stop.why
            return None

    def _whole_lines(self, size: int) -> bytes:
        while not (self.stopped or self.ended):
            if self.lines_left == 0:  # every line the check reads is read: is there more?
                more = self.partial or self._read(1)
                if more:
                    self.stopped = "lines"
                elif more is not None:
                    self.ended = True
                return b""
            # (Not more than 256 KB at a time: lines may be one byte long, and a read
            # of a gzip of one-line members consumes 21 bytes per line.)
            data = self._read(min(size, self.left + 1, 256 * 1024))
            if data is None:
                return b""
            if not data:  # the end of the file: its last line may lack its newline
                self.ended = True
                return self._given(self.partial, last=True)
            chunk = self.partial + data if self.partial else data
            cut = chunk.rfind(b"\n") + 1
            if not cut and len(chunk) <= MAX_LINE_BYTES + 2:
                self.partial = chunk  # no line ends here yet
                continue
            # (No newline in a line too long to be one: it goes as it comes, and is skipped.)
            whole, self.partial = (chunk[:cut], chunk[cut:]) if cut else (chunk, b"")
            given = self._given(whole, last=False)
            if given:
                return given
        return b""

    def _given(self, data: bytes, *, last: bool) -> bytes:
        """``data`` (whole lines, or the file's last line) within the bounds left."""
        lines = data.count(b"\n") + (1 if last and data and not data.endswith(b"\n") else 0)
        if lines > self.lines_left:
            end = -1
            for _ in range(self.lines_left):
                end = data.index(b"\n", end + 1)
            self.stopped, data, lines = "lines", data[: end + 1], self.lines_left
        if len(data) > self.left:
            data = data[: data.rfind(b"\n", 0, self.left) + 1]
            self.stopped, lines = "bytes", data.count(b"\n")
        self.lines_left -= lines
        self.left -= len(data)
        self.read_bytes += len(data)
        return data


@dataclass
class DryRunReport:
    name: str
    target_dpid: int
    receipt: Receipt  # what processing the lines read gives (never saved)
    complete: bool = True  # the whole file was read
    bytes_read: int = 0  # plain (inflated, decrypted) bytes read
    stored_bytes_read: int = 0  # bytes of the file as delivered read (compressed, encrypted)
    compressed: bool = False
    seconds: float = 0.0  # how long the check took
    stopped: str = ""  # "", or why the check stopped early: "lines", "bytes", "time"
    realized: dict[int, int] = field(default_factory=dict)  # SID -> realizations
    removed: dict[int, int] = field(default_factory=dict)  # SID -> removals
    trait_names: dict[int, str] = field(default_factory=dict)
    user_ids_valid: int = 0  # distinct valid user IDs read
    user_ids_matched: int = 0  # of those, the ones that found a profile
    sample_lines: int = 0
    max_bytes: int = 0
    max_seconds: float = 0.0

    @property
    def lines(self) -> int:
        return self.receipt.records_received

    @property
    def counters(self) -> list[tuple[str, int]]:
        return receipt_counter_rows(self.receipt)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return receipt_error_rows(self.receipt)

    @property
    def match_rate(self) -> float | None:
        return success_percent(self.user_ids_matched, self.user_ids_valid)

    def _named(self, counts: dict[int, int]) -> list[tuple[int, str, int]]:
        """(SID, trait name, count), most frequent first."""
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [(sid, self.trait_names.get(sid, ""), n) for sid, n in ordered]

    @property
    def realized_traits(self) -> list[tuple[int, str, int]]:
        return self._named(self.realized)

    @property
    def removed_traits(self) -> list[tuple[int, str, int]]:
        return self._named(self.removed)

    @property
    def extent(self) -> str:
        """How far the check read, in the partner's words."""
        lines = f"{self.lines:,} record{'s' if self.lines != 1 else ''}"
        if self.complete:
            return f"The whole file was read: {lines}."
        amount = f"{self.bytes_read / 1024**2:,.1f} MB"
        if self.compressed:
            amount += f" from {self.stored_bytes_read / 1024**2:,.1f} MB as delivered"
        amount += f" in {self.seconds:.1f} s"
        why = {
            "lines": f"the check reads at most {self.sample_lines:,} lines",
            "bytes": f"the check reads at most {self.max_bytes / 1024**2:,.0f} MB",
            "time": f"the check reads for at most {self.max_seconds:g} seconds",
        }[self.stopped]
        if self.lines > 1:
            first = f"The first {lines} were checked ({amount})"
        elif self.lines == 1:
            first = f"The first record was checked ({amount})"
        else:
            first = f"No record in the first {amount}"
        return f"{first}, then the check stopped: {why}. Processing reads the whole file."


def inbound_dry_run(
    *,
    file: StoredFile,
    partner: Partner,
    sample_lines: int,
    max_bytes: int | None = None,
    seconds: float | None = None,
) -> DryRunReport:
    """Check the first ``sample_lines`` lines, reading at most ``max_bytes`` plain bytes for
    at most ``seconds`` (a check runs inside a web request: it must stay small, whatever the
    file inflates to), by processing them as a batch would, in a transaction that is then
    rolled back: nothing is kept. Raises :class:`InboundRejected` when the file cannot be
    processed at all (its name, its DPIDs, an unreadable file), exactly as a real delivery
    would. The bounds default to ``PORTAL_DRY_RUN_MAX_BYTES`` and ``PORTAL_DRY_RUN_SECONDS``."""
    max_bytes = settings.PORTAL_DRY_RUN_MAX_BYTES if max_bytes is None else max_bytes
    seconds = settings.PORTAL_DRY_RUN_SECONDS if seconds is None else seconds
    parsed = parse_inbound_file_name(file.name)
    if parsed.kind is FileKind.ID_SYNC:
        raise InboundRejected(file.name, "the check covers trait files; send ID-sync files as is")
    owner, ids, target = traits_name_check(parsed, partner)
    started = time.monotonic()
    bounds: list[tuple[_CheckBound, ReadMeter]] = []

    def bounded(plain: IO[bytes], meter: ReadMeter) -> IO[bytes]:
        meter.bound(deadline=started + seconds, max_stored=max_bytes)
        bound = _CheckBound(plain, lines=sample_lines, max_bytes=max_bytes)
        bounds.append((bound, meter))
        return io.BufferedReader(bound, 1 << 20)

    try:
        run, names = _check_rolled_back(
            file,
            parsed=parsed,
            owner=owner,
            ids=ids,
            target=target,
            seconds=seconds,
            bounded=bounded,
            bounds=bounds,
        )
    except UnreadableFileError as exc:
        raise InboundRejected(file.name, str(exc).removeprefix(f"{file.name}: ")) from exc
    except OperationalError as exc:
        if isinstance(exc.__cause__, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
            raise InboundRejected(
                file.name,
                f"a batch of data source {target.dpid} is being processed right now:"
                " check the file again in a few minutes",
            ) from exc
        raise
    bound, meter = bounds[0]
    return DryRunReport(
        name=file.name,
        target_dpid=target.dpid,
        # No record before the check stopped: the receipt's figures are all 0 so far.
        receipt=run.receipt if run else Receipt(batch=InboundBatch(kind=parsed.kind.value)),
        complete=not bound.stopped,
        bytes_read=bound.read_bytes,
        stored_bytes_read=meter.stored,
        compressed=meter.compressed,
        seconds=time.monotonic() - started,
        stopped=bound.stopped,
        realized=run.applied.realized_by_trait if run else {},
        removed=run.applied.removed_by_trait if run else {},
        trait_names=names,
        user_ids_valid=run.applied.user_ids_valid if run else 0,
        user_ids_matched=run.applied.user_ids_matched if run else 0,
        sample_lines=sample_lines,
        max_bytes=max_bytes,
        max_seconds=seconds,
    )


def _check_rolled_back(
    file: StoredFile,
    *,
    parsed: InboundFileName,
    owner: Partner,
    ids: DataSource,
    target: DataSource,
    seconds: float,
    bounded: StreamWrap,
    bounds: list[tuple[_CheckBound, ReadMeter]],
) -> tuple[TraitBatchResult | None, dict[int, str]]:
    """The file as a batch of its own, processed through ``bounded`` streams in a
    transaction rolled back; returns the run (None when no record came before the check
    stopped) and the names of the traits it realized or removed."""
    run: TraitBatchResult | None = None
    names: dict[int, str] = {}
    with transaction.atomic():
        with transaction.get_connection().cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = {CHECK_LOCK_WAIT_MS}")
            # The reading stops at ``seconds``; no statement may run far past it either.
            cursor.execute(f"SET LOCAL statement_timeout = {int(seconds * 1000) + 5000}")
        batch = InboundBatch.objects.create(
            key=parsed.batch_key,
            partner=owner,
            kind=parsed.kind.value,
            data_source=ids,
            target=target,
            overwrite=parsed.overwrite,
            status=InboundBatch.Status.PROCESSING,
        )
        InboundFile.objects.create(
            batch=batch,
            partner=owner,
            name=parsed.name,
            split=parsed.split,
            storage=file.storage,
            path=file.path,
            size=file.size,
            sha256=file.sha256 or "",
        )
        try:
            run = trait_batch_apply(batch, started=timezone.now(), check_stream=bounded)
        except NoRecordsError:
            if not bounds or not bounds[0][0].stopped:
                raise  # the whole file was read: processing would fail it too
        else:
            names = dict(
                Trait.objects.filter(
                    sid__in=[*run.applied.realized_by_trait, *run.applied.removed_by_trait]
                ).values_list("sid", "name")
            )
        transaction.set_rollback(True)  # a check keeps nothing
    return run, names
