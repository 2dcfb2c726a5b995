"""Check a trait file without applying anything: the first lines of it, parsed and matched
as processing would, with an estimate of how many of its user IDs we know."""

from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.db import connection

from partners.inbound.lines import DEVICE_ID_TYPES, LineFormatError, read_lines, user_id_problem
from partners.inbound.names import FileKind, parse_inbound_file_name
from partners.inbound.parse import LineContext, line_parse
from partners.inbound.services import (
    InboundRejected,
    id_source_of,
    trait_catalog_load,
    traits_name_check,
)
from partners.inbound.sources import UnreadableFileError, open_plain
from partners.models import DataSource, Partner
from partners.reports import success_percent
from partners.storage import StoredFile

ERRORS_PER_KIND = 10


class _CheckBound(io.RawIOBase):
    """The plain bytes a check may read: at most ``max_bytes``, for at most ``seconds``.
    Blank lines count too (a small gzip of a gigabyte of them holds no record at all), and
    the check ends at the last whole line before the bound, so no line is cut in two."""

    def __init__(self, inner: IO[bytes], *, max_bytes: int, seconds: float) -> None:
        self.inner = inner
        self.left = max_bytes
        self.deadline = time.monotonic() + seconds
        self.started = time.monotonic()
        self.read_bytes = 0
        self.stopped = ""  # why the check stopped before the end of the file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.stopped:
            return 0
        data = self.inner.read(min(len(buffer), self.left + 1))
        if not data:
            return 0
        if len(data) > self.left:
            self.stopped = "bytes"
        elif time.monotonic() > self.deadline:
            self.stopped = "time"
        if self.stopped:
            data = data[: data.rfind(b"\n") + 1]  # up to the last whole line (maybe none)
        self.left -= len(data)
        self.read_bytes += len(data)
        buffer[: len(data)] = data
        return len(data)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class DryRunReport:
    name: str
    target_dpid: int
    lines: int = 0  # lines read (the sample)
    complete: bool = True  # the whole file was read (it had no more than the sample)
    bytes_read: int = 0  # plain (inflated, decrypted) bytes read
    seconds: float = 0.0  # how long the reading took
    stopped: str = ""  # "", or why the check stopped early: "lines", "bytes", "time"
    format_errors: int = 0
    invalid_ids: int = 0
    ids_checked: int = 0  # distinct valid user IDs of the sample
    ids_known: int = 0  # of those, known to us (a mapping, or a platform UUID)
    realized: Counter[int] = field(default_factory=Counter)  # SID -> lines realizing it
    removed: Counter[int] = field(default_factory=Counter)
    failed_validation: int = 0  # references to traits of other data sources
    unused_signals: int = 0
    errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sample_lines: int = 0
    max_bytes: int = 0
    max_seconds: float = 0.0

    @property
    def match_rate(self) -> float | None:
        return success_percent(self.ids_known, self.ids_checked)

    @property
    def realized_sids(self) -> list[tuple[int, int]]:
        return self.realized.most_common()  # (SID, lines), most frequent first

    @property
    def removed_sids(self) -> list[tuple[int, int]]:
        return self.removed.most_common()

    @property
    def error_sections(self) -> list[tuple[str, list[dict[str, Any]]]]:
        labels = {
            "format_error": "Format errors",
            "invalid_id": "Invalid IDs",
            "no_trait_realized": "No trait realized",
        }
        return [(labels[kind], shown) for kind, shown in self.errors.items()]

    @property
    def extent(self) -> str:
        """How far the check read, in the partner's words."""
        lines = f"{self.lines:,} line{'s' if self.lines != 1 else ''}"
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

    def reject(self, kind: str, line: int, reason: str, start: str) -> None:
        shown = self.errors.setdefault(kind, [])
        if len(shown) < ERRORS_PER_KIND:
            shown.append({"line": line, "reason": reason, "start": start})


def inbound_dry_run(
    *,
    file: StoredFile,
    partner: Partner,
    sample_lines: int,
    max_bytes: int | None = None,
    seconds: float | None = None,
) -> DryRunReport:
    """Check the first ``sample_lines`` records, reading at most ``max_bytes`` plain bytes
    for at most ``seconds`` (a check runs inside a web request: it must stay small, whatever
    the file inflates to). Raises :class:`InboundRejected` when the file cannot be processed
    at all (its name, its DPIDs, an unreadable file), exactly as a real delivery would.
    The bounds default to ``PORTAL_DRY_RUN_MAX_BYTES`` and ``PORTAL_DRY_RUN_SECONDS``."""
    max_bytes = settings.PORTAL_DRY_RUN_MAX_BYTES if max_bytes is None else max_bytes
    seconds = settings.PORTAL_DRY_RUN_SECONDS if seconds is None else seconds
    parsed = parse_inbound_file_name(file.name)
    if parsed.kind is FileKind.ID_SYNC:
        raise InboundRejected(file.name, "the check covers trait files; send ID-sync files as is")
    _, ids, target = traits_name_check(parsed, partner)
    catalog = trait_catalog_load(target)
    report = DryRunReport(
        name=file.name,
        target_dpid=target.dpid,
        sample_lines=sample_lines,
        max_bytes=max_bytes,
        max_seconds=seconds,
    )
    context = LineContext(
        file_no=0,
        device_file=parsed.kind is FileKind.DEVICE_TRAITS,
        id_source=id_source_of(ids),
        device_sources={
            s.dpid: id_source_of(s)
            for s in DataSource.objects.filter(dpid__in=DEVICE_ID_TYPES.values())
        },
        overwrite=parsed.overwrite,
    )
    device_type: str | None = None
    valid_ids: dict[int, set[str]] = {}
    try:
        with open_plain(file.storage, file.path, parsed.compression) as plain:
            bound = _CheckBound(plain, max_bytes=max_bytes, seconds=seconds)
            stream = io.BufferedReader(bound, 1 << 20)
            for raw in read_lines(stream):
                if report.lines >= sample_lines:
                    report.complete, report.stopped = False, "lines"
                    break
                report.lines += 1
                if raw.text is None:
                    report.format_errors += 1
                    report.reject("format_error", raw.number, raw.error or "", raw.start)
                    continue
                try:
                    user_id, line_source, outcome, device_type = line_parse(
                        raw.text, context=context, catalog=catalog, device_type=device_type
                    )
                except LineFormatError as exc:
                    report.format_errors += 1
                    report.reject("format_error", raw.number, str(exc), raw.start)
                    continue
                problem = user_id_problem(
                    user_id,
                    inbound_id_type=line_source.inbound_id_type,
                    device_id_format=line_source.device_id_format,
                )
                if problem:
                    report.invalid_ids += 1
                    report.reject("invalid_id", raw.number, problem, raw.start)
                    continue
                valid_ids.setdefault(line_source.dpid, set()).add(user_id)
                report.realized.update(outcome.adds)
                report.removed.update(outcome.removes)
                report.failed_validation += outcome.failed
                report.unused_signals += outcome.unused
                if not outcome.adds and not outcome.removes:
                    reason = f"no signal realizes or removes a trait of data source {target.dpid}"
                    report.reject("no_trait_realized", raw.number, reason, raw.start)
    except UnreadableFileError as exc:
        raise InboundRejected(file.name, str(exc)) from exc
    report.bytes_read, report.seconds = bound.read_bytes, bound.elapsed
    if bound.stopped and not report.stopped:
        report.complete, report.stopped = False, bound.stopped
    if report.lines == 0 and report.stopped:
        raise InboundRejected(
            file.name, f"no record in the first {report.bytes_read / 1024**2:,.1f} MB of the file"
        )
    if report.lines == 0:
        raise InboundRejected(file.name, "the file holds no records")
    report.ids_checked, report.ids_known = _known_ids(
        valid_ids, uuids=context.id_source.inbound_id_type == "uuid"
    )
    return report


def _known_ids(ids: dict[int, set[str]], *, uuids: bool) -> tuple[int, int]:
    """How many of the sample's user IDs we already know: one query per data source."""
    checked = known = 0
    with connection.cursor() as cursor:
        for dpid, values in ids.items():
            checked += len(values)
            if uuids:
                cursor.execute(
                    "SELECT count(*) FROM segments_profile WHERE uuid = ANY(%s)", [list(values)]
                )
            else:
                cursor.execute(
                    "SELECT count(DISTINCT dpuuid) FROM partners_idmapping"
                    " WHERE data_source_id = %s AND dpuuid = ANY(%s)",
                    [dpid, list(values)],
                )
            row = cursor.fetchone()
            known += int(row[0]) if row else 0
    return checked, known
