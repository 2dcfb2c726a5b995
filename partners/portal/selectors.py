"""Partner-scoped reads of the portal and its API."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from partners.models import InboundFile, Partner


def file_status_row(file: InboundFile) -> dict[str, Any]:
    receipt = getattr(file.batch, "receipt", None) if file.batch else None
    status, label = file.status, file.get_status_display()
    if status == InboundFile.Status.RECEIVED and file.batch is not None:
        # Received and batched: its batch tells how far it got (queued, processing, ...).
        status, label = file.batch.status, file.batch.get_status_display()
    return {
        "id": file.pk,
        "name": file.name,
        "size": file.size,
        "status": status,
        "status_label": label,
        "received_at": file.received_at.isoformat(),
        "received": f"{file.received_at:%Y-%m-%d %H:%M} UTC",
        "batch": file.batch.key if file.batch else None,
        "receipt": receipt.pk if receipt else None,
        "error": file.error,
    }


def partner_recent_files(partner: Partner, *, limit: int = 100) -> QuerySet[InboundFile]:
    """The partner's files, newest first (every channel: upload, API, drop zone)."""
    return (
        InboundFile.objects.filter(partner=partner)
        .select_related("batch__receipt")
        .order_by("-received_at", "name")[:limit]
    )
