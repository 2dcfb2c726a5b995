"""From a file's plain bytes to staging rows: the per-line work, in Python, streaming."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from partners.inbound.lines import (
    DEVICE_ID_TYPES,
    LineFormatError,
    parse_device_line,
    read_lines,
    split_inbound_line,
    user_id_problem,
)
from partners.inbound.matching import TraitCatalog
from partners.inbound.stage import ord_of

MAX_STORED_ERRORS = 100_000


@dataclass(frozen=True)
class IDSource:
    """How the user IDs of a file are read: the data source and its ID type."""

    dpid: int
    inbound_id_type: str
    device_id_format: str


@dataclass
class ParseTally:
    """Lines read, and lines rejected while reading (kept up to MAX_STORED_ERRORS)."""

    received: int = 0
    rejected: int = 0
    errors: list[tuple[int, int, str, str, str]] = field(default_factory=list)

    def reject(self, file_no: int, line_no: int, kind: str, reason: str, start: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_STORED_ERRORS:
            self.errors.append((file_no, line_no, kind, reason, start))


def staged_line_rows(
    stream: IO[bytes],
    *,
    file_no: int,
    device_file: bool,
    id_source: IDSource,
    device_sources: dict[int, IDSource],
    catalog: TraitCatalog,
    overwrite: bool,
    tally: ParseTally,
) -> Iterator[tuple[Any, ...]]:
    """Yield one staging row per well-formed line; count and keep the malformed ones."""
    device_type: str | None = None
    for raw in read_lines(stream):
        tally.received += 1
        if raw.text is None:
            tally.reject(
                file_no, raw.number, "format_error", raw.error or "unreadable line", raw.start
            )
            continue
        source = id_source
        try:
            if device_file:
                id_type, user_id, signals = parse_device_line(raw.text)
                if device_type is None:
                    device_type = id_type
                elif id_type != device_type:
                    raise LineFormatError(
                        f"'{id_type}' after '{device_type}': one file holds one ID type"
                    )
                source = device_sources[DEVICE_ID_TYPES[id_type]]
                outcome = catalog.match(signals, overwrite=overwrite)
            else:
                user_id, text = split_inbound_line(raw.text)
                outcome = catalog.match_text(text, overwrite=overwrite)
        except LineFormatError as exc:
            tally.reject(file_no, raw.number, "format_error", str(exc), raw.start)
            continue
        problem = user_id_problem(
            user_id,
            inbound_id_type=source.inbound_id_type,
            device_id_format=source.device_id_format,
        )
        yield (
            ord_of(file_no, raw.number),
            file_no,
            raw.number,
            source.dpid,
            user_id,
            problem,
            outcome.signals,
            outcome.unused,
            outcome.failed,
            outcome.adds,
            outcome.removes,
            raw.start,
        )
