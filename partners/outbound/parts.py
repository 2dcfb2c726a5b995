"""Rendering a destination's members into part files (SPEC §6): the rows, by PostgreSQL when
the row template compiles to SQL, else in Python (both byte for byte alike), in parts of at
most the destination's maximum size, each counting its lines; and the file names, checked."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from django.db import transaction

from partners.inbound.lines import CONTROL_CHARACTER
from partners.models import Destination, OutboundRun
from partners.outbound.export import (
    MemberQuery,
    MemberRow,
    destination_lines,
    destination_rows,
)
from partners.outbound.templates import (
    SEGMENT_TYPE,
    Template,
    compile_file_name_template,
    compile_row_template,
    file_name_refusal,
)
from segments.models import Segment, Trait

# A header line is rendered with the row macros of nobody: empty IDs, empty lists.
_NO_MEMBER: dict[str, Any] = {
    "UUID": "",
    "DP_UUID": "",
    "DP_UUID_LIST": [],
    "SEGMENT_LIST": [],
    "REMOVED_SEGMENT_LIST": [],
    "TRAIT_LIST": [],
}
TRAIT_TYPES: dict[str, int] = {Trait.Kind.ONBOARDED: 10, Trait.Kind.RULE_BASED: 3}


@dataclass
class Part:
    path: Path
    stream: IO[bytes]
    lines: int = 0  # every line written to it, its header included
    size: int = 0


@dataclass
class Parts:
    folder: Path
    max_bytes: int
    header: bytes
    done: list[Part] = field(default_factory=list)
    current: Part | None = None

    def write(self, line: bytes) -> None:
        if self.current is not None and self.current.size + len(line) > self.max_bytes:
            self.close()
        if self.current is None:
            path = self.folder / f"part-{len(self.done) + 1}"
            self.current = Part(path, path.open("wb"))
            if self.header:
                self.current.stream.write(self.header)
                self.current.size += len(self.header)
                # The .info counts every line of the file as written (SPEC §6): the header too.
                self.current.lines += self.header.count(b"\n")
        self.current.stream.write(line)
        self.current.lines += line.count(b"\n")  # a row template may make several lines
        self.current.size += len(line)

    def close(self) -> None:
        if self.current is not None:
            self.current.stream.close()
            self.done.append(self.current)
            self.current = None


def mapped_segments(destination: Destination, day: date) -> dict[int, str]:
    """SID -> the destination value, for the mappings in force today of segments that
    export (active: a paused segment exports nothing; a deleted one has no members)."""
    mapped = destination.mapped.filter(
        start_date__lte=day, segment__status=Segment.Status.ACTIVE
    ).exclude(end_date__lt=day)
    return {
        sid: _without_controls(value) for sid, value in mapped.values_list("segment_id", "value")
    }


# Partner-controlled values never put a control character (C0, DEL, C1) into a file: only the
# template's own text does (its TAB, ASCII_SOH, newlines between rows). Both render paths get
# these values from here or through the checks below, so they agree byte for byte.
# - The row's user IDs (UUID, DPUUID, DP_UUID_LIST): the row is *dropped* and counted as
#   failed (records_failed), and a DP_UUID_LIST item left out. Stripping would change an ID
#   into another ID ("a\x07b" into "ab", maybe somebody else's): better no line than a wrong
#   one. They are refused wherever they enter; this guards the rows that predate that.
# - Text that only labels (a segment's destination value, the PID alias): the characters are
#   *stripped*, since dropping every member of a segment for its label would be worse.
def _without_controls(text: str) -> str:
    return CONTROL_CHARACTER.sub("", text)


def _control_in_ids(row: MemberRow) -> bool:
    return bool(CONTROL_CHARACTER.search(row.uuid) or CONTROL_CHARACTER.search(row.dpuuid))


def file_name_context(destination: Destination, *, mode: str, moment: datetime) -> dict[str, Any]:
    return {
        "SYNC_TYPE": destination.sync_type,
        "ORDER_ID": destination.pk,
        "DPID": destination_dpid(destination),
        "MASTER_DPID": destination.id_data_source_id or 0,
        "PID_ALIAS": destination.pid_alias,
        "SYNC_MODE": mode,
        "TIMESTAMP": moment,
    }


def row_constants(destination: Destination) -> dict[str, Any]:
    return {
        "PID": destination.partner_id,
        "PIDALIAS": _without_controls(destination.pid_alias),
        "DPID": destination_dpid(destination),
        "ORDER_ID": destination.pk,
    }


def member_query(
    destination: Destination, mapped: dict[int, str], *, since: datetime | None, until: datetime
) -> MemberQuery:
    return MemberQuery(
        segment_sids=sorted(mapped),
        id_dpid=destination.id_data_source_id,
        by_dpuuid=destination.id_column == Destination.IDColumn.DPUUID,
        since=since,
        until=until,
    )


def member_rows(query: MemberQuery, template: Template) -> Generator[MemberRow, None, None]:
    return destination_rows(
        query,
        with_dpuuids="DP_UUID_LIST" in template.uses,
        with_traits="TRAIT_LIST" in template.uses,
    )


def destination_dpid(destination: Destination) -> int:
    if destination.id_data_source_id:
        return destination.id_data_source_id
    first = destination.partner.data_sources.order_by("dpid").values_list("dpid", flat=True)
    return first.first() or 0


class OutboundFileNameRefused(ValueError):
    """A rendered file name that is not a plain name in the destination's folder."""


def plain_file_name(name: str) -> str:
    """``name`` when it is a plain file name, else the run fails with the reason. Checked on
    every rendered name, before anything is written: the template was checked when saved,
    but a stored one may predate the check and PID_ALIAS is free text."""
    refusal = file_name_refusal(name)
    if refusal:
        raise OutboundFileNameRefused(f"nothing was delivered: {refusal}")
    return name


def parts_render(
    destination: Destination, run: OutboundRun, folder: Path, *, force_python: bool = False
) -> tuple[Template, list[Part]]:
    """Render the run's rows into part files in ``folder``; the file-name template and the
    parts, in order. Nothing is delivered yet."""
    name_template = compile_file_name_template(destination.file_name_template)
    names = file_name_context(destination, mode=run.mode, moment=run.started_at)
    for splitnum in ("", "001"):  # the part number is digits: these are every shape of name
        plain_file_name(name_template.render({**names, "SPLITNUM": splitnum}))
    row_template = compile_row_template(destination.row_template)
    header = (
        compile_row_template(destination.header_template) if destination.header_template else None
    )
    mapped = mapped_segments(destination, run.started_at.date())
    trait_types = (
        {str(sid): TRAIT_TYPES[kind] for sid, kind in Trait.objects.values_list("sid", "kind")}
        if "TRAIT_LIST" in row_template.uses
        else {}
    )
    run.records_failed = 0
    constants = row_constants(destination)
    parts = Parts(
        folder,
        destination.max_part_bytes,
        (header.render({**constants, **_NO_MEMBER}) + "\n").encode() if header else b"",
    )
    query = member_query(
        destination,
        mapped,
        since=run.since if run.mode == Destination.Mode.ITER else None,
        until=run.until or run.started_at,
    )
    with transaction.atomic():  # one snapshot of the memberships
        if row_template.sql is not None and not force_python:
            # PostgreSQL renders the rows (every row has a segment, joined or left).
            for line in destination_lines(
                query, template=row_template, constants=constants, aliases=mapped
            ):
                run.records_received += 1
                if line is None:  # its ID holds a control character
                    run.records_failed += 1
                    continue
                parts.write(line)
                run.records_successful += 1
        else:
            for row in member_rows(query, row_template):
                run.records_received += 1
                if _control_in_ids(row):
                    run.records_failed += 1
                    continue
                if not row.sids and not row.removed:
                    continue  # nothing to send: skipped
                context = row_context(row, constants, mapped, trait_types)
                parts.write((row_template.render(context) + "\n").encode())
                run.records_successful += 1
    parts.close()
    return name_template, parts.done


def row_context(
    row: MemberRow, constants: dict[str, Any], mapped: dict[int, str], trait_types: dict[str, int]
) -> dict[str, Any]:
    def segments(sids: list[int], times: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "sid": sid,
                "alias": mapped.get(sid, ""),
                "type": SEGMENT_TYPE,
                "lastUpdateTime": at,
                "lastRealizationTime": at,
            }
            for sid, at in zip(sids, times, strict=True)
        ]

    return {
        **constants,
        "UUID": row.uuid,
        "DP_UUID": row.dpuuid,
        "DP_UUID_LIST": [
            {"value": value} for value in row.dpuuids if not CONTROL_CHARACTER.search(value)
        ],
        "SEGMENT_LIST": segments(row.sids, row.times),
        "REMOVED_SEGMENT_LIST": segments(row.removed, row.removed_times),
        "TRAIT_LIST": [
            {"traitId": int(sid), "type": trait_types.get(sid, 10), "lastRealized": at}
            for sid, at in sorted(row.traits.items(), key=lambda item: int(item[0]))
        ],
    }
