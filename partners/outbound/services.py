"""Outbound runs (SPEC §6): render a destination's membership into files, in parts of at most
the maximum size, deliver them to its channel, then the ``.info`` control file.

Nothing reaches the channel until every part is rendered (into local temporary files), and
each file is delivered under a temporary name and then renamed (an S3 object appears whole),
so a run that fails midway leaves no half-written file under a final name and no ``.info``;
the retry is a new run. An ``iter`` run sends the changes since the last *successful* run, so
a failed run loses nothing. One run per destination at a time: a PostgreSQL session lock,
which dies with its worker's connection, so the next run knows a "running" run was killed.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import shutil
import tempfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import django_rq
from django.conf import settings
from django.core.files.storage import Storage
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from partners.inbound.lines import CONTROL_CHARACTER
from partners.models import Destination, OutboundFile, OutboundRun
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
from partners.receipts.alerts import outbound_failure_alert
from partners.storage import channel_storage, storage_opened, storage_save_whole
from segments.models import Segment, Trait
from segments.services import membership_changes_horizon

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
class _Part:
    path: Path
    stream: IO[bytes]
    lines: int = 0  # every line written to it, its header included
    size: int = 0


@dataclass
class _Parts:
    folder: Path
    max_bytes: int
    header: bytes
    done: list[_Part] = field(default_factory=list)
    current: _Part | None = None

    def write(self, line: bytes) -> None:
        if self.current is not None and self.current.size + len(line) > self.max_bytes:
            self.close()
        if self.current is None:
            path = self.folder / f"part-{len(self.done) + 1}"
            self.current = _Part(path, path.open("wb"))
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


def _mapped_segments(destination: Destination, day: date) -> dict[int, str]:
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


def _file_name_context(destination: Destination, *, mode: str, moment: datetime) -> dict[str, Any]:
    return {
        "SYNC_TYPE": destination.sync_type,
        "ORDER_ID": destination.pk,
        "DPID": destination_dpid(destination),
        "MASTER_DPID": destination.id_data_source_id or 0,
        "PID_ALIAS": destination.pid_alias,
        "SYNC_MODE": mode,
        "TIMESTAMP": moment,
    }


def _row_constants(destination: Destination) -> dict[str, Any]:
    return {
        "PID": destination.partner_id,
        "PIDALIAS": _without_controls(destination.pid_alias),
        "DPID": destination_dpid(destination),
        "ORDER_ID": destination.pk,
    }


def _member_query(
    destination: Destination, mapped: dict[int, str], *, since: datetime | None, until: datetime
) -> MemberQuery:
    return MemberQuery(
        segment_sids=sorted(mapped),
        id_dpid=destination.id_data_source_id,
        by_dpuuid=destination.id_column == Destination.IDColumn.DPUUID,
        since=since,
        until=until,
    )


def _rows(query: MemberQuery, template: Template) -> Generator[MemberRow, None, None]:
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


# A run may export millions of members to a slow SFTP server.
OUTBOUND_JOB_TIMEOUT = 4 * 3600


def outbound_runs_request(*, destination_ids: list[int]) -> None:
    """Queue a run of each destination now, in the outbound workers (admin *Run now*)."""
    queue = django_rq.get_queue("outbound")
    for pk in destination_ids:
        queue.enqueue(
            "partners.outbound.jobs.outbound_run_job", pk, job_timeout=OUTBOUND_JOB_TIMEOUT
        )


def outbound_resends_request(*, run_ids: list[int]) -> None:
    """Queue each past run to be sent again, the same mode and window (admin *Send again*)."""
    queue = django_rq.get_queue("outbound")
    for pk in run_ids:
        queue.enqueue(
            "partners.outbound.jobs.outbound_run_resend_job", pk, job_timeout=OUTBOUND_JOB_TIMEOUT
        )


class OutboundFileNameRefused(ValueError):
    """A rendered file name that is not a plain name in the destination's folder."""


def _plain_name(name: str) -> str:
    """``name`` when it is a plain file name, else the run fails with the reason. Checked on
    every rendered name, before anything is written: the template was checked when saved,
    but a stored one may predate the check and PID_ALIAS is free text."""
    refusal = file_name_refusal(name)
    if refusal:
        raise OutboundFileNameRefused(f"nothing was delivered: {refusal}")
    return name


class OutboundRunInProgress(Exception):
    """Another run of the destination is going on (in a live worker)."""


_RUN_LOCK = 0x53324F55  # "S2OU": the advisory-lock namespace of outbound runs


@contextmanager
def _destination_held(destination: Destination) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_RUN_LOCK, destination.pk])
        (held,) = cursor.fetchone()
    if not held:
        raise OutboundRunInProgress(f"destination {destination.pk} is being exported right now")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_RUN_LOCK, destination.pk])


def outbound_run(
    *,
    destination: Destination,
    mode: str | None = None,
    window: tuple[datetime | None, datetime] | None = None,
) -> OutboundRun:
    """Export the destination now (``mode`` defaults to the destination's). ``window`` (a
    re-send) replays the changes of a past run instead of those since the last success.
    Raises :class:`OutboundRunInProgress` while another run of the destination goes on."""
    with _destination_held(destination):
        _interrupted_runs_close(destination)
        return _run(destination, mode=mode or destination.mode, window=window)


def _interrupted_runs_close(destination: Destination) -> None:
    """A run still "running" while we hold the destination was killed with its worker: say
    so in the history, and delete what it left under temporary names (its files were never
    renamed into place, or were complete; it wrote no .info)."""
    for killed in destination.runs.filter(status=OutboundRun.Status.RUNNING):
        killed.status = OutboundRun.Status.FAILED
        killed.error = "interrupted: the worker stopped before the run ended"
        killed.finished_at = timezone.now()
        killed.save(update_fields=["status", "error", "finished_at"])
        with storage_opened(channel_storage(destination.channel)) as storage:
            for name in _leftovers(destination, killed, storage):
                storage.delete(f"{destination.delivery_folder}/{name}")


def _leftovers(destination: Destination, run: OutboundRun, storage: Storage) -> list[str]:
    # The run's names, whatever its SPLITNUM: what comes before and after it.
    context = _file_name_context(destination, mode=run.mode, moment=run.started_at)
    rendered = compile_file_name_template(destination.file_name_template).render(
        {**context, "SPLITNUM": "\0"}
    )
    head, _, tail = rendered.partition("\0")
    try:
        _, names = storage.listdir(destination.delivery_folder)
    except FileNotFoundError:
        return []
    return [
        name
        for name in names
        if name.endswith(".partial")
        and name.startswith(head)
        and name.removesuffix(".partial").removesuffix(".gz").endswith(tail)
    ]


def _run(
    destination: Destination, *, mode: str, window: tuple[datetime | None, datetime] | None
) -> OutboundRun:
    started = timezone.now()
    last_ok = destination.runs.filter(status=OutboundRun.Status.SUCCEEDED).first()
    since = None
    if mode == Destination.Mode.ITER and last_ok is not None:
        since = last_ok.started_at
    until = started
    if window is not None:
        since, until = window
    if mode == Destination.Mode.ITER and since and since < membership_changes_horizon(now=started):
        # The change log no longer reaches back to the last success: everybody, as they are.
        mode, since = Destination.Mode.FULL, None
    run = OutboundRun.objects.create(
        destination=destination, mode=mode, since=since, until=until, started_at=started
    )
    try:
        with tempfile.TemporaryDirectory(prefix="s2s-outbound-") as folder:
            _render_and_deliver(destination, run, Path(folder))
    except Exception as exc:
        OutboundRun.objects.filter(pk=run.pk).update(
            status=OutboundRun.Status.FAILED, error=str(exc), finished_at=timezone.now()
        )
        raise
    run.status = OutboundRun.Status.SUCCEEDED
    run.finished_at = timezone.now()
    run.save()
    if destination.failures_in_a_row or destination.retry_after:  # the problem is over
        Destination.objects.filter(pk=destination.pk).update(failures_in_a_row=0, retry_after=None)
        destination.failures_in_a_row, destination.retry_after = 0, None
    return run


def _render_and_deliver(
    destination: Destination, run: OutboundRun, folder: Path, *, force_python: bool = False
) -> None:
    name_template = compile_file_name_template(destination.file_name_template)
    names = _file_name_context(destination, mode=run.mode, moment=run.started_at)
    for splitnum in ("", "001"):  # the part number is digits: these are every shape of name
        _plain_name(name_template.render({**names, "SPLITNUM": splitnum}))
    row_template = compile_row_template(destination.row_template)
    header = (
        compile_row_template(destination.header_template) if destination.header_template else None
    )
    mapped = _mapped_segments(destination, run.started_at.date())
    trait_types = (
        {str(sid): TRAIT_TYPES[kind] for sid, kind in Trait.objects.values_list("sid", "kind")}
        if "TRAIT_LIST" in row_template.uses
        else {}
    )
    run.records_failed = 0
    constants = _row_constants(destination)
    parts = _Parts(
        folder,
        destination.max_part_bytes,
        (header.render({**constants, **_NO_MEMBER}) + "\n").encode() if header else b"",
    )
    query = _member_query(
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
            for row in _rows(query, row_template):
                run.records_received += 1
                if _control_in_ids(row):
                    run.records_failed += 1
                    continue
                if not row.sids and not row.removed:
                    continue  # nothing to send: skipped
                context = _row_context(row, constants, mapped, trait_types)
                parts.write((row_template.render(context) + "\n").encode())
                run.records_successful += 1
    parts.close()
    _deliver(destination, run, name_template, parts.done, folder)


def _row_context(
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


def _deliver(
    destination: Destination,
    run: OutboundRun,
    name_template: Template,
    parts: list[_Part],
    folder: Path,
) -> None:
    context = _file_name_context(destination, mode=run.mode, moment=run.started_at)
    base = _plain_name(name_template.render({**context, "SPLITNUM": ""}))
    suffix = ".gz" if destination.gzip and not base.endswith(".gz") else ""
    target = destination.delivery_folder
    entries = []
    with storage_opened(channel_storage(destination.channel)) as storage:
        for number, part in enumerate(parts, start=1):
            splitnum = f"{number:03d}" if len(parts) > 1 else ""
            name = _plain_name(name_template.render({**context, "SPLITNUM": splitnum}) + suffix)
            delivered = part.path
            if destination.gzip:
                delivered = part.path.with_suffix(".gz")
                with part.path.open("rb") as plain, gzip.open(delivered, "wb") as packed:
                    shutil.copyfileobj(plain, packed, 1024 * 1024)
            size = delivered.stat().st_size
            digest = hashlib.md5(usedforsecurity=False)
            with delivered.open("rb") as stream:
                while chunk := stream.read(1024 * 1024):
                    digest.update(chunk)
            storage_save_whole(storage, f"{target}/{name}", delivered)
            OutboundFile.objects.create(
                run=run,
                name=name,
                sequence=number,
                lines=part.lines,
                bytes=size,
                md5=digest.hexdigest(),
            )
            entries.append(
                {
                    "FileName": name,
                    "FileSequenceNumber": number,
                    "FileLineCount": part.lines,
                    "FileByteSize": size,
                    "md5": digest.hexdigest(),
                }
            )
            run.lines += part.lines
            run.bytes += size
        info_name = _plain_name(_stem(base) + ".info")
        info = folder / "control.info"
        info.write_text(
            json.dumps(
                {
                    "Files": entries,
                    "Totals": {
                        "FileName": info_name,
                        "TotalNumberFiles": len(entries),
                        "TotalNumberLines": run.lines,
                        "TotalByteSize": run.bytes,
                    },
                },
                indent=2,
            )
        )
        storage_save_whole(storage, f"{target}/{info_name}", info)  # after the data files
        run.info_name = info_name


def _stem(name: str) -> str:
    """The name without its extensions: ``s3_7_21_full_123.sync.gz`` -> ``s3_7_21_full_123``."""
    return name.split(".", 1)[0]


def outbound_runs_due(*, now: datetime | None = None) -> list[OutboundRun]:
    """Run every active destination whose daily time has passed today and that has not run
    successfully since (the daily schedule calls this every few minutes). One that failed
    waits before its next try (:func:`_retry_later`), and alerts once a UTC day."""
    now = now or timezone.now()
    runs = []
    for destination in Destination.objects.filter(active=True).select_related("partner", "channel"):
        due = datetime.combine(now.date(), destination.daily_at, tzinfo=now.tzinfo)
        if now < due or due < destination.created_at:
            continue  # not yet today; or made after today's time: its first run is tomorrow's
        if destination.retry_after is not None and now < destination.retry_after:
            continue  # failed a moment ago: backing off
        if destination.runs.filter(
            status=OutboundRun.Status.SUCCEEDED, started_at__gte=due
        ).exists():
            continue
        try:
            runs.append(outbound_run(destination=destination))
        except OutboundRunInProgress:
            continue  # Run now, or a re-send, is exporting it at this moment
        except Exception:  # recorded on the run (failed, with its error); the others still go
            failed = destination.runs.first()
            retry_after = _retry_later(destination, now=now)
            if failed is not None:
                if _failure_alert_claim(destination, now=now):
                    outbound_failure_alert(run=failed, retry_after=retry_after)
                runs.append(failed)
    return runs


def _retry_later(destination: Destination, *, now: datetime) -> datetime:
    """Another failure in a row: the next try waits twice as long as the last, up to the cap.
    (Not RQ's Retry: the schedule itself comes back every few minutes and would run it
    anyway; this is what it honours.)"""
    failures = destination.failures_in_a_row + 1
    wait = min(
        settings.OUTBOUND_RETRY_SECONDS * 2 ** min(failures - 1, 30),
        settings.OUTBOUND_RETRY_MAX_SECONDS,
    )
    retry_after = now + timedelta(seconds=wait)
    Destination.objects.filter(pk=destination.pk).update(
        failures_in_a_row=failures, retry_after=retry_after
    )
    destination.failures_in_a_row, destination.retry_after = failures, retry_after
    return retry_after


def _failure_alert_claim(destination: Destination, *, now: datetime) -> bool:
    """Whether this failure alerts: the first of the destination's UTC day. One conditional
    UPDATE, so two schedulers polling at once still send one."""
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    claimed = (
        Destination.objects.filter(pk=destination.pk)
        .filter(Q(failure_alerted_at__isnull=True) | Q(failure_alerted_at__lt=day_start))
        .update(failure_alerted_at=now)
    )
    return claimed == 1


def outbound_purge(*, now: datetime | None = None) -> int:
    """Delete the files of runs older than ``OUTBOUND_RETENTION_DAYS`` (8) from the channels;
    the runs and their figures stay. Returns how many files went."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.OUTBOUND_RETENTION_DAYS)
    deleted = 0
    old = OutboundRun.objects.filter(started_at__lt=cutoff, purged_at__isnull=True)
    for run in old.select_related("destination__partner", "destination__channel"):
        destination = run.destination
        target = destination.delivery_folder
        names = [*run.files.values_list("name", flat=True), run.info_name]
        with storage_opened(channel_storage(destination.channel)) as storage:
            for name in filter(None, names):
                if storage.exists(f"{target}/{name}"):
                    storage.delete(f"{target}/{name}")
                    deleted += 1
        OutboundRun.objects.filter(pk=run.pk).update(purged_at=now)
    return deleted


def outbound_run_resend(*, run: OutboundRun) -> OutboundRun:
    """Send a past run again: the same mode and window of changes (``iter``: from its
    ``since`` to its start), rendered from the memberships as they are now for ``full``."""
    return outbound_run(
        destination=run.destination, mode=run.mode, window=(run.since, run.started_at)
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
    mapped = _mapped_segments(destination, now.date()) or {0: "example"}
    context = _file_name_context(destination, mode=destination.mode, moment=now)
    lines = [
        name_template.render({**context, "SPLITNUM": ""}) + (".gz" if destination.gzip else "")
    ]
    constants = _row_constants(destination)
    with transaction.atomic():
        found = _rows(_member_query(destination, mapped, since=None, until=now), row_template)
        sample = list(itertools.islice(found, rows))
        found.close()  # the server-side cursor, now
    members = len(sample)
    if not sample:
        first = sorted(mapped)[0]
        sample = [
            MemberRow("1" * 38, "dpuuid-1", [first], [int(now.timestamp())], [], [], [], {}),
        ]
    for row in sample:
        lines.append(row_template.render(_row_context(row, constants, mapped, {})))
    return DestinationPreview("\n".join(lines), members)
