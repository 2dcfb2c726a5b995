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
from partners.inbound.name_checks import traits_name_check
from partners.inbound.names import FileKind, parse_inbound_file_name
from partners.inbound.sources import UnreadableFileError
from partners.inbound.traits import trait_batch_apply
from partners.models import InboundBatch, InboundFile, Partner, Receipt
from partners.receipts.render import receipt_counter_rows, receipt_error_rows
from partners.reports import success_percent
from partners.storage import StoredFile
from segments.models import Trait

# How long the check waits for a row a running batch holds before saying it is busy: a
# check runs in a web request, which must not hang behind a batch of millions of lines.
CHECK_LOCK_WAIT_MS = 2000


class _CheckBound(io.RawIOBase):
    """The plain bytes a check may read: at most ``lines`` lines and ``max_bytes`` bytes, for
    at most ``seconds``. Blank lines count too (a small gzip of a gigabyte of them holds no
    record at all), and the check ends at the last whole line before the bound, so no line
    is cut in two."""

    def __init__(self, inner: IO[bytes], *, lines: int, max_bytes: int, deadline: float) -> None:
        self.inner = inner
        self.lines_left = lines
        self.left = max_bytes
        self.deadline = deadline
        self.read_bytes = 0
        self.stopped = ""  # why the check stopped before the end of the file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.stopped:
            return 0
        if self.lines_left == 0:
            if self.inner.read(1):  # more follows the last line the check may read
                self.stopped = "lines"
            return 0
        data = self.inner.read(min(len(buffer), self.left + 1))
        if not data:
            return 0
        more = False  # whether bytes the check will not read follow ``data``
        if len(data) > self.left:
            self.stopped, data, more = "bytes", data[: self.left], True
        elif time.monotonic() > self.deadline:
            self.stopped, more = "time", True
        end = -1
        for _ in range(min(self.lines_left, data.count(b"\n"))):
            end = data.index(b"\n", end + 1)
        self.lines_left -= min(self.lines_left, data.count(b"\n"))
        if self.lines_left == 0 and end + 1 < len(data):
            self.stopped, data = "lines", data[: end + 1]
        elif more:
            data = data[: data.rfind(b"\n") + 1]  # up to the last whole line (maybe none)
        self.left -= len(data)
        self.read_bytes += len(data)
        buffer[: len(data)] = data
        return len(data)


@dataclass
class DryRunReport:
    name: str
    target_dpid: int
    receipt: Receipt  # what processing the lines read gives (never saved)
    complete: bool = True  # the whole file was read
    bytes_read: int = 0  # plain (inflated, decrypted) bytes read
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
        amount = f"{self.bytes_read / 1024**2:,.1f} MB in {self.seconds:.1f} s"
        why = {
            "lines": f"the check reads at most {self.sample_lines:,} lines",
            "bytes": f"the check reads at most {self.max_bytes / 1024**2:,.0f} MB",
            "time": f"the check reads for at most {self.max_seconds:g} seconds",
        }[self.stopped]
        return (
            f"The first {lines} were checked ({amount}), then the check stopped: {why}."
            " Processing reads the whole file."
        )


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
    bounds: list[_CheckBound] = []

    def bounded(plain: IO[bytes]) -> IO[bytes]:
        bound = _CheckBound(
            plain, lines=sample_lines, max_bytes=max_bytes, deadline=started + seconds
        )
        bounds.append(bound)
        return io.BufferedReader(bound, 1 << 20)

    try:
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
            run = trait_batch_apply(batch, started=timezone.now(), check_stream=bounded)
            names = dict(
                Trait.objects.filter(
                    sid__in=[*run.applied.realized_by_trait, *run.applied.removed_by_trait]
                ).values_list("sid", "name")
            )
            transaction.set_rollback(True)  # a check keeps nothing
    except UnreadableFileError as exc:
        bound = bounds[0] if bounds else None
        if bound is not None and bound.stopped:
            read = (
                f"{sample_lines:,} lines"
                if bound.stopped == "lines"
                else f"{bound.read_bytes / 1024**2:,.1f} MB"
            )
            raise InboundRejected(file.name, f"no record in the first {read} of the file") from exc
        raise InboundRejected(file.name, str(exc).removeprefix(f"{file.name}: ")) from exc
    except OperationalError as exc:
        if isinstance(exc.__cause__, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
            raise InboundRejected(
                file.name,
                f"a batch of data source {target.dpid} is being processed right now:"
                " check the file again in a few minutes",
            ) from exc
        raise
    bound = bounds[0]
    return DryRunReport(
        name=file.name,
        target_dpid=target.dpid,
        receipt=run.receipt,
        complete=not bound.stopped,
        bytes_read=bound.read_bytes,
        seconds=time.monotonic() - started,
        stopped=bound.stopped,
        realized=run.applied.realized_by_trait,
        removed=run.applied.removed_by_trait,
        trait_names=names,
        user_ids_valid=run.applied.user_ids_valid,
        user_ids_matched=run.applied.user_ids_matched,
        sample_lines=sample_lines,
        max_bytes=max_bytes,
        max_seconds=seconds,
    )
