"""The destination's preview in the admin: its first file name and rows."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from partners.models import Destination
from partners.outbound.export import (
    MemberRow,
)
from partners.outbound.parts import (
    file_name_context,
    mapped_segments,
    member_query,
    member_rows,
    row_constants,
    row_context,
)
from partners.outbound.templates import (
    compile_file_name_template,
    compile_row_template,
)


@dataclass(frozen=True)
class DestinationPreview:
    text: str  # the first file name, then its first rows
    members: int  # how many real members the rows show (0: one made-up member instead)


def destination_preview(destination: Destination, *, rows: int = 3) -> DestinationPreview:
    """The first file name and rows the destination's templates make, from its own first
    members when it has some (else one made-up member): what staff check after saving."""
    name_template = compile_file_name_template(destination.file_name_template)
    row_template = compile_row_template(destination.row_template)
    now = timezone.now()
    mapped = mapped_segments(destination, now.date()) or {0: "example"}
    context = file_name_context(destination, mode=destination.mode, moment=now)
    lines = [
        name_template.render({**context, "SPLITNUM": ""}) + (".gz" if destination.gzip else "")
    ]
    constants = row_constants(destination)
    with transaction.atomic():
        found = member_rows(member_query(destination, mapped, since=None, until=now), row_template)
        sample = list(itertools.islice(found, rows))
        found.close()  # the server-side cursor, now
    members = len(sample)
    if not sample:
        first = sorted(mapped)[0]
        sample = [
            MemberRow("1" * 38, "dpuuid-1", [first], [int(now.timestamp())], [], [], [], {}),
        ]
    for row in sample:
        lines.append(row_template.render(row_context(row, constants, mapped, {})))
    return DestinationPreview("\n".join(lines), members)
