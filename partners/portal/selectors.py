"""Partner-scoped reads of the portal and its API."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import django_rq
from django.db.models import QuerySet
from rq.job import Job

from partners.inbound.errors import InboundRejected
from partners.inbound.name_checks import idsync_name_check, traits_name_check
from partners.inbound.names import FileKind, parse_inbound_file_name, parts_missing
from partners.inbound.queueing import inbound_batch_job_id
from partners.models import InboundBatch, InboundFile, Partner
from partners.portal.uploads import upload_name_problem


def batches_progress(batch_ids: Iterable[int]) -> dict[int, int]:
    """How far each running batch is, in percent, as its RQ job last told (one Redis call:
    the batch's own rows stay uncommitted until it ends)."""
    ids = list(batch_ids)
    if not ids:
        return {}
    jobs = Job.fetch_many(
        [inbound_batch_job_id(batch_id) for batch_id in ids],
        connection=django_rq.get_connection("inbound"),
    )
    return {
        batch_id: int(job.meta.get("progress", 0))
        for batch_id, job in zip(ids, jobs, strict=True)
        if job is not None
    }


def _parts_detail(batch: InboundBatch) -> str:
    parts = sorted(split or 0 for split in batch.files.values_list("split", flat=True))
    missing = parts_missing(parts)
    here = ", ".join(map(str, parts))
    return f"parts here: {here}" + (f"; missing: {', '.join(map(str, missing))}" if missing else "")


def file_status_rows(files: Iterable[InboundFile]) -> list[dict[str, Any]]:
    """What the portal and the API show of each file: where it is in its lifecycle
    (received, waiting for other parts, queued, processing with % done, processed, failed,
    duplicate), its batch and its receipt."""
    files = list(files)
    running = {
        f.batch_id
        for f in files
        if f.batch is not None and f.batch.status == InboundBatch.Status.PROCESSING
    }
    progress = batches_progress(b for b in running if b is not None)
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
                percent = progress.get(batch.pk, 0)
                label = f"{label} · {percent} %"
            elif status == InboundBatch.Status.WAITING:
                detail = _parts_detail(batch)
        if batch is not None and batch.missing_parts:
            detail = f"processed without missing parts {batch.missing_parts}"
        rows.append(
            {
                "id": file.pk,
                "name": file.name,
                "size": file.size,
                "status": status,
                "status_label": label,
                "status_detail": detail,
                "progress": percent,
                "received_at": file.received_at.isoformat(),
                "received": f"{file.received_at:%Y-%m-%d %H:%M} UTC",
                "batch": batch.key if batch else None,
                "receipt": receipt.pk if receipt else None,
                "error": file.error,
            }
        )
    return rows


def partner_recent_files(partner: Partner, *, limit: int = 100) -> QuerySet[InboundFile]:
    """The partner's files, newest first (every channel: upload, API, drop zone)."""
    return (
        InboundFile.objects.filter(partner=partner)
        .select_related("batch__receipt")
        .order_by("-received_at", "name")[:limit]
    )


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
