"""Partner-scoped reads of the portal and its API."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import django_rq
import redis
from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet
from django.utils import timezone
from rq.job import Job

from partners.inbound.errors import InboundRejected
from partners.inbound.name_checks import idsync_name_check, traits_name_check
from partners.inbound.names import FileKind, PartsSummary, parse_inbound_file_name
from partners.inbound.queueing import inbound_batch_job_id
from partners.inbound.split_parts import split_parts_summaries
from partners.models import ChannelObject, DataSource, InboundBatch, InboundFile, Partner, Receipt
from partners.portal.uploads import problem_without_name, upload_name_problem

logger = logging.getLogger(__name__)

SEEN_LABEL = "Seen, waiting for its size to hold"


# A page must not hang on Redis: the progress read gives up after this long (seconds).
PROGRESS_REDIS_TIMEOUT = 1.0


def _progress_redis() -> redis.Redis:
    """The inbound queue's Redis (django-rq's own connection, a fresh pool) with short
    timeouts, so an unreachable Redis costs a page a second at most, not a hang."""
    connection = django_rq.get_connection("inbound")
    connection.connection_pool.connection_kwargs.update(
        socket_connect_timeout=PROGRESS_REDIS_TIMEOUT, socket_timeout=PROGRESS_REDIS_TIMEOUT
    )
    return connection


def batches_progress(batch_ids: Iterable[int]) -> dict[int, int] | None:
    """How far each running batch is, in percent, as its RQ job last told (one Redis call:
    the batch's own rows stay uncommitted until it ends). None when Redis cannot be reached:
    the progress is unknown, and the pages still answer from PostgreSQL."""
    ids = list(batch_ids)
    if not ids:
        return {}
    try:
        jobs = Job.fetch_many(
            [inbound_batch_job_id(batch_id) for batch_id in ids], connection=_progress_redis()
        )
    except redis.exceptions.RedisError as exc:
        logger.warning("progress of batches %s unknown: Redis unreachable (%s)", ids, exc)
        return None
    return {
        batch_id: int(job.meta.get("progress", 0))
        for batch_id, job in zip(ids, jobs, strict=True)
        if job is not None
    }


def batch_parts_json(batch: InboundBatch, parts: PartsSummary) -> dict[str, Any]:
    """A split batch as the answer to the upload of one of its parts sums it up (bounded:
    counts and the words of :class:`PartsSummary`, never every part)."""
    return {
        "key": batch.key,
        "status": batch.status,
        "status_label": batch.get_status_display(),
        "parts_here": parts.here,
        "lowest_part": parts.lowest,
        "highest_part": parts.highest,
        "parts_missing": parts.missing,
        "status_detail": parts.text,
    }


def file_status_rows(
    files: Iterable[InboundFile], *, parts: dict[int, PartsSummary] | None = None
) -> list[dict[str, Any]]:
    """What the portal and the API show of each file: where it is in its lifecycle
    (received, waiting for other parts, queued, processing with % done, processed, failed,
    duplicate), its batch and its receipt.

    Bounded work per row: the parts of the waiting batches are summed up once for all rows
    (one query; ``parts`` when the caller has them already), the progress of the running
    ones read in one Redis call (unknown, not an error, while Redis is down)."""
    files = list(files)
    batches = {f.batch.pk: f.batch for f in files if f.batch is not None}
    running = [b for b, batch in batches.items() if batch.status == InboundBatch.Status.PROCESSING]
    progress = batches_progress(running)
    if parts is None:
        waiting = [b for b, batch in batches.items() if batch.status == InboundBatch.Status.WAITING]
        parts = split_parts_summaries(waiting)
    rows = []
    for file in files:
        batch = file.batch
        receipt = getattr(batch, "receipt", None) if batch else None
        status, label, detail = file.status, file.get_status_display(), ""
        percent = None
        if status == InboundFile.Status.RECEIVED and batch is not None:
            # Received and batched: its batch tells how far it got (queued, processing, ...).
            status, label = batch.status, batch.get_status_display()
            if status == InboundBatch.Status.PROCESSING:
                if progress is None:
                    label = f"{label} · progress unknown"
                else:
                    percent = progress.get(batch.pk, 0)
                    label = f"{label} · {percent} %"
            elif status == InboundBatch.Status.WAITING and batch.pk in parts:
                detail = parts[batch.pk].text
        if batch is not None and batch.missing_parts:
            detail = f"processed without missing parts {batch.missing_parts}"
        rows.append(
            {
                "id": file.pk,
                "key": f"file-{file.pk}",
                "name": file.name,
                "size": file.size,
                "via": file.via,
                "via_label": file.get_via_display() if file.via else "",
                "status": status,
                "status_label": label,
                "status_detail": detail,
                "progress": percent,
                "received_at": file.received_at.isoformat(),
                "received": f"{file.received_at:%Y-%m-%d %H:%M} UTC",
                "batch": batch.key if batch else None,
                "receipt": receipt.pk if receipt else None,
                # The row names the file: its error does not name it again.
                "error": problem_without_name(file.name, file.error),
            }
        )
    return rows


def partner_seen_objects(partner: Partner, *, limit: int = 100) -> QuerySet[ChannelObject]:
    """Files in the partner's drop zones seen by a poll and not registered yet (their size
    has to hold between two polls), newest first."""
    return ChannelObject.objects.filter(
        channel__partner=partner, state=ChannelObject.State.SEEN
    ).order_by("-first_seen_at", "path")[:limit]


def seen_object_rows(objects: Iterable[ChannelObject]) -> list[dict[str, Any]]:
    """What *My files* shows of a drop-zone file before it is registered: its name and size
    as last listed, and that it waits (it becomes a file row at the poll that takes it)."""
    minutes = max(1, round(settings.INBOUND_POLL_SECONDS / 60))
    detail = f"we take it at our next look (every {minutes} min) if its size has not changed"
    return [
        {
            "id": None,
            "key": f"seen-{seen.pk}",
            "name": posixpath.basename(seen.path),
            "size": seen.size,
            "via": InboundFile.Via.DROPZONE.value,
            "via_label": InboundFile.Via.DROPZONE.label,
            "status": "seen",
            "status_label": SEEN_LABEL,
            "status_detail": detail,
            "progress": None,
            "received_at": seen.first_seen_at.isoformat(),
            "received": f"{seen.first_seen_at:%Y-%m-%d %H:%M} UTC",
            "batch": None,
            "receipt": None,
            "error": "",
        }
        for seen in objects
    ]


def partner_files(partner: Partner) -> QuerySet[InboundFile]:
    """The partner's files, newest first (every channel: upload, API, drop zone), in a total
    order (the ID breaks ties) so that pages and cursors neither repeat nor skip a row."""
    return (
        InboundFile.objects.filter(partner=partner)
        .select_related("batch__receipt")
        .order_by("-received_at", "-id")
    )


@dataclass(frozen=True)
class FilesPage:
    rows: list[dict[str, Any]]
    page: Page[InboundFile]


def partner_files_page(partner: Partner, *, page: str | None, per_page: int = 100) -> FilesPage:
    """*My files*, one page: on the first, the drop-zone files still being looked at; then
    the received files of that page (Django's Paginator; a page number that is not one, or
    out of range, gives the first or the last page)."""
    paginator = Paginator(partner_files(partner), per_page)
    chosen = paginator.get_page(page)
    seen = (
        seen_object_rows(partner_seen_objects(partner, limit=per_page))
        if chosen.number == 1
        else []
    )
    return FilesPage(rows=seen + file_status_rows(chosen.object_list), page=chosen)


def partner_files_after(
    partner: Partner, *, after: tuple[datetime, int] | None, limit: int
) -> list[InboundFile]:
    """Up to ``limit`` of the partner's files, newest first, after the file ``after`` names
    (its time received and ID: the API's cursor, which new files arriving on top do not
    shift), one more to tell whether there is a next page."""
    files = partner_files(partner)
    if after is not None:
        received, pk = after
        files = files.filter(Q(received_at__lt=received) | Q(received_at=received, id__lt=pk))
    return list(files[: limit + 1])


def upload_name_refusal(*, partner: Partner, name: str) -> str | None:
    """Why ``partner`` cannot deliver a file of this name (None when it can), before a byte
    is sent: the grammar, then the registration's own ownership checks (unknown, inactive or
    another partner's DPIDs), so the page says what the upload would say, in its words."""
    problem = upload_name_problem(name)
    if problem:
        return problem
    parsed = parse_inbound_file_name(name)
    try:
        if parsed.kind is FileKind.ID_SYNC:
            idsync_name_check(parsed, partner)
        else:
            traits_name_check(parsed, partner)
    except InboundRejected as exc:
        return exc.reason
    return None


def partner_data_sources(partner: Partner) -> list[dict[str, Any]]:
    """The active data sources the partner may send files for: its own, then those other
    partners share with it, by DPID."""
    own = DataSource.objects.filter(partner=partner, active=True)
    shared = (
        DataSource.objects.filter(shared_with=partner, active=True)
        .exclude(partner=partner)
        .select_related("partner")
    )
    rows = [
        {"dpid": s.dpid, "name": s.name, "owner": "", "user_ids": s.get_inbound_id_type_display()}
        for s in own.order_by("dpid")
    ]
    rows += [
        {
            "dpid": s.dpid,
            "name": s.name,
            "owner": s.partner.name if s.partner else "",
            "user_ids": s.get_inbound_id_type_display(),
        }
        for s in shared.order_by("dpid")
    ]
    return rows


@dataclass(frozen=True)
class ExampleName:
    kind: str
    names: tuple[str, ...]
    what: str


def upload_examples(partner: Partner, *, now: datetime | None = None) -> list[ExampleName]:
    """A file name of each kind the partner may send, made of its own DPIDs (its first data
    source, the first global device source for device IDs) and the current time: each is a
    name the upload accepts."""
    sources = partner_data_sources(partner)
    if not sources:
        return []
    dpid = sources[0]["dpid"]
    stamp = int((now or timezone.now()).timestamp())
    trait = f"ftp_dpm_{dpid}_{stamp}"
    examples = [
        ExampleName("Traits", (f"{trait}.sync",), "adds (and removes) the traits listed"),
        ExampleName(
            "Full replacement",
            (f"{trait}.overwrite",),
            "for each user ID in the file, its traits replace all the ones it had",
        ),
        ExampleName("Compressed", (f"{trait}.sync.gz",), "the same, gzipped"),
        ExampleName(
            "Split in parts",
            (f"{trait}.sync.1.gz", f"{trait}.sync.2.gz"),
            "the parts of one file, processed together once all are here",
        ),
    ]
    device = DataSource.objects.filter(partner__isnull=True, active=True).order_by("dpid").first()
    if device is not None:
        examples.append(
            ExampleName(
                "Device IDs",
                (f"ftp_dpm_{device.dpid}_{dpid}_{stamp}.sync",),
                f"user IDs are {device.name} device IDs (DPID {device.dpid}); the traits"
                f" are those of your data source {dpid}",
            )
        )
    examples.append(
        ExampleName(
            "ID sync",
            (f"adobe_id_0_{dpid}_{stamp}.sync",),
            f"each line: our user ID (UUID), a tab, your ID in data source {dpid}",
        )
    )
    return examples


@dataclass(frozen=True)
class APIExample:
    title: str
    command: str
    answer: str


def api_examples(partner: Partner, *, base_url: str) -> list[APIExample]:
    """The API help page's curl calls (the README's JSON API section) on the portal's own
    address, with a file name made of the partner's DPID and its latest receipt's ID."""
    examples = upload_examples(partner)
    name = next((e.names[0] for e in examples if e.kind == "Compressed"), None)
    name = name or "ftp_dpm_<DPID>_<TIMESTAMP>.sync.gz"
    dpid = partner_data_sources(partner)[0]["dpid"] if examples else "<DPID>"
    latest = Receipt.objects.filter(batch__partner=partner).order_by("-job_end").first()
    receipt = latest.pk if latest else 42
    api = f"{base_url}/api/v1"

    def curl(*lines: str) -> str:
        # One option per line (a shell's continuation), so a phone wraps none of them.
        return " \\\n  ".join(('curl -H "Authorization: Bearer $TOKEN"', *lines))

    return [
        APIExample(
            "Your files and where each one is",
            curl(f"{api}/files"),
            '{"files": [{"name", "status", "status_label", "status_detail", "progress",'
            ' "via", "batch", "receipt", "error", …}, …], "next": <the next page\'s link, or'
            " null>} — 100 a page (?limit= 1 to 500; more answers 400), newest first;"
            ' "progress" is the percent done while it is processed',
        ),
        APIExample(
            "A receipt",
            curl(f"{api}/receipts/{receipt}"),
            "every counter of the receipt, its files, missing parts and the sample of errors",
        ),
        APIExample(
            "Send a file",
            curl(f"-F file=@{name}", f"{api}/files"),
            "201 and the file, queued (a part of a split file waits for the others, and"
            ' "batch" says which parts are here and which are missing)',
        ),
        APIExample(
            "Check a file without applying anything",
            curl(f"-F file=@{name}", f"{api}/dry-run"),
            "what the receipt would say for its first lines, and a"
            ' "process": {"token", "name"} to send it without uploading it again',
        ),
        APIExample(
            "Send the file you checked",
            curl("-F token=<process.token>", "-F name=<process.name>", f"{api}/files"),
            "201 and the file, queued",
        ),
        APIExample(
            "Opt IDs out (at most 1000 a call)",
            curl(
                "-H 'Content-Type: application/json'",
                f"""-d '{{"ids": [{{"dpid": {dpid}, "dpuuid": "user-123"}}]}}'""",
                f"{api}/optouts",
            ),
            '{"opted_out", "mappings_deleted", "rejected": [{"index", "msg"}]}: each ID is'
            ' never mapped again, to anyone; "opted_out" counts those not opted out before',
        ),
    ]
