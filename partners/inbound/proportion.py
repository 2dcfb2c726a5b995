"""Stopping a file whose reading is wildly out of proportion to what it could apply. Pure.

A batch holds its data source while it runs, and the SPEC's limits (5 GB uncompressed) let a
small gzip of blank lines, of one user ID repeated millions of times, or of millions of empty
gzip members hold a worker for an hour. Cheap rejects are cheap, but not free: so, once a file
has been read far enough to judge, it must keep at least one line that could apply something
(well formed, within the 200-lines-per-user limit, a valid ID, a trait realized or removed) in
every ``lines_per_line_applying`` lines, and in every ``bytes_per_line_applying`` bytes read
(stored or inflated, whichever is more: the compressed bytes of members that inflate to
nothing count). Otherwise the batch stops there, nothing applied, with a receipt saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from partners.inbound.lines import MAX_LINES_PER_USER

# The most a batch reads ahead of its parse (a 1 MB buffer, the block being cut, 8 blocks
# handed to the parse processes): bytes read whose lines may not be counted yet.
BYTES_IN_FLIGHT = 8 * 1024**2


@dataclass
class LineCounts:
    """What the lines of one file read so far hold (kept by whoever parses them)."""

    lines: int = 0  # physical lines read, blank ones included (the last line's number)
    received: int = 0  # lines not blank
    applying: int = 0  # lines that could apply something
    over_limit: int = 0  # lines known to be over the 200-lines-per-user limit
    format_errors: int = 0
    invalid_ids: int = 0
    no_trait: int = 0  # well-formed lines that realize or remove no trait

    @property
    def blank(self) -> int:
        return self.lines - self.received


@dataclass(frozen=True)
class ProportionRules:
    """``min_lines`` / ``min_bytes``: how far a file is read before it is judged; 0 in a
    ``…_per_line_applying`` turns that rule off."""

    min_lines: int
    lines_per_line_applying: int
    min_bytes: int
    bytes_per_line_applying: int


class OutOfProportionError(Exception):
    """Raised to stop a file; the message says why, for the partner."""


def _breakdown(counts: LineCounts) -> str:
    parts = [
        (counts.blank, "blank"),
        (counts.over_limit, f"over the {MAX_LINES_PER_USER}-lines-per-user limit"),
        (counts.format_errors, "format errors"),
        (counts.invalid_ids, "with an invalid ID"),
        (counts.no_trait, "realizing or removing no trait"),
    ]
    rest = counts.received - counts.applying - sum(n for n, _ in parts[1:])
    parts.append((rest, "rejected"))  # what the kind of file rejects otherwise (ID sync)
    named = [f"{n:,} {what}" for n, what in parts if n]
    return ", ".join(named) if named else "none could apply anything"


def proportion_check(counts: LineCounts, *, bytes_read: int, rules: ProportionRules) -> str | None:
    """Why the file must stop now (None while it is in proportion)."""
    per_lines = rules.lines_per_line_applying
    if per_lines and counts.lines >= rules.min_lines and counts.applying * per_lines < counts.lines:
        return (
            f"stopped at line {counts.lines:,}: of its {counts.lines:,} lines,"
            f" {_breakdown(counts)}; at most {counts.applying:,} could apply anything (fewer"
            f" than 1 in {per_lines:,}). Nothing was applied: remove those lines (or split"
            " the file) and send it again"
        )
    per_bytes = rules.bytes_per_line_applying
    if (
        per_bytes
        and bytes_read >= rules.min_bytes
        and counts.applying * per_bytes < bytes_read - BYTES_IN_FLIGHT
    ):
        held = (
            f"of its {counts.lines:,} lines, {_breakdown(counts)}; at most"
            f" {counts.applying:,} could apply anything"
            if counts.lines
            else "it holds no line at all"
        )
        return (
            f"stopped after {bytes_read / 1024**2:,.1f} MB read: {held} (one in every"
            f" {per_bytes / 1024**2:g} MB is needed). Nothing was applied: remove what"
            " applies nothing and send the file again"
        )
    return None


def proportion_watch(
    counts: LineCounts, *, bytes_read: Callable[[], int], rules: ProportionRules
) -> Callable[[], None]:
    """A reader's watch: raises :class:`OutOfProportionError` once the file must stop."""

    def watch() -> None:
        reason = proportion_check(counts, bytes_read=bytes_read(), rules=rules)
        if reason:
            raise OutOfProportionError(reason)

    return watch
