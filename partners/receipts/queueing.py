"""Queueing receipt e-mails and alerts for the RQ ``notify`` workers: the layer above the
receipts' services and jobs (it imports the jobs it enqueues, by function; the services never
import it, nor a job)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django_rq
from django.conf import settings
from django.db import transaction
from rq import Retry

from partners.models import Receipt, ReceiptDelivery
from partners.receipts import jobs
from partners.receipts.services import receipt_delivery_record


def notify_enqueue(func: Callable[..., Any], *args: Any, description: str, **kwargs: Any) -> None:
    """Queue an e-mail job on the ``notify`` queue with RQ's retries (``NOTIFY_RETRY_*``).
    RQ reads its own options (``job_id``, ...) from ``kwargs``; the rest go to ``func``."""
    django_rq.get_queue("notify").enqueue(
        func,
        *args,
        retry=Retry(max=settings.NOTIFY_RETRY_MAX, interval=settings.NOTIFY_RETRY_INTERVALS),
        description=description[:200],
        **kwargs,
    )


def receipt_delivery_job_id(delivery_id: int) -> str:
    """The delivery's RQ job ID: one job per delivery, so a live one is found by its ID (the
    sweep looks)."""
    return f"receipt-delivery-{delivery_id}"


def receipt_delivery_enqueue(delivery_id: int, *, description: str = "") -> None:
    """Queue the sending of one delivery, now."""
    notify_enqueue(
        jobs.receipt_delivery_send_job,
        delivery_id,
        job_id=receipt_delivery_job_id(delivery_id),
        description=description or f"Send receipt e-mail #{delivery_id}",
    )


def receipt_delivery_request(
    *, receipt: Receipt, recipients: list[str] | None = None, requested_by: str = ""
) -> ReceiptDelivery:
    """Record a sending of the receipt and queue it for an RQ worker once the current
    transaction commits (a rolled-back batch sends nothing)."""
    delivery = receipt_delivery_record(
        receipt=receipt, recipients=recipients, requested_by=requested_by
    )
    # robust: Redis being down must not fail the committed batch; the delivery stays pending
    # on the receipt page, where it can be re-sent.
    transaction.on_commit(lambda: receipt_delivery_enqueue(delivery.pk), robust=True)
    return delivery
