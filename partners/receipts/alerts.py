"""Alerts to the internal partner-solutions list: a batch that mostly failed, and data
sources that went silent. Clearly marked in the subject, sent by RQ with retries."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max, Q
from django.urls import reverse
from django.utils import timezone

from partners.models import DataSource, InboundBatch, OutboundRun, Receipt
from partners.receipts.queueing import notify_enqueue

ALERT_PREFIX = "[S2S ALERT]"


def alert_send(*, subject: str, body: str) -> None:
    """Send one alert now (called by the RQ job)."""
    send_mail(f"{ALERT_PREFIX} {subject}", body, None, list(settings.PARTNER_SOLUTIONS_EMAILS))


def _alert_enqueue(*, subject: str, body: str) -> None:
    transaction.on_commit(
        functools.partial(
            notify_enqueue,
            alert_send,
            subject=subject,
            body=body,
            description=f"Alert: {subject}",
        ),
        robust=True,  # an alert that cannot be queued must not fail the committed batch
    )


def receipt_failure_alert(*, receipt: Receipt) -> bool:
    """Alert when more than ALERT_FAILED_SHARE of a trait batch's records failed."""
    batch = receipt.batch
    if batch.kind == InboundBatch.Kind.ID_SYNC or not receipt.records_received:
        return False
    failed = receipt.records_received - receipt.stored_records
    share = failed / receipt.records_received
    if share <= settings.ALERT_FAILED_SHARE:
        return False
    url = settings.PORTAL_BASE_URL + reverse("admin:partners_receipt_change", args=[receipt.pk])
    _alert_enqueue(
        subject=f"{share:.0%} of the records failed: {batch.partner.name} (DPID {batch.target_id})",
        body=(
            f"Batch {batch.key} of {batch.partner.name} (PID {batch.partner_id}) for data source"
            f" {batch.target_id}: {failed:,} of {receipt.records_received:,} records failed"
            f" ({share:.1%}; the alert threshold is {settings.ALERT_FAILED_SHARE:.0%}).\n\n"
            f"Format errors {receipt.format_errors:,}, invalid ID {receipt.invalid_ids:,},"
            f" no matching ID {receipt.no_matching_ids:,}, no trait realized"
            f" {receipt.no_trait_realized:,}.\n\nThe receipt: {url}\n"
        ),
    )
    return True


def silent_data_sources(*, days: int) -> list[tuple[DataSource, object]]:
    """Active partner data sources with no trait batch for ``days`` days (and older than
    that), with the time of their last batch (None: never)."""
    since = timezone.now() - timedelta(days=days)
    sources = (
        DataSource.objects.filter(active=True, partner__isnull=False, partner__active=True)
        .filter(created_at__lt=since)
        .annotate(
            last=Max(
                "inbound_batches__receipt__job_end",
                filter=~Q(inbound_batches__kind=InboundBatch.Kind.ID_SYNC),
            )
        )
        .filter(Q(last__isnull=True) | Q(last__lt=since))
        .select_related("partner")
        .order_by("partner__name", "dpid")
    )
    return [(source, source.last) for source in sources]


def silent_data_sources_alert(*, days: int) -> int:
    """One alert listing every silent data source; returns how many there are."""
    silent = silent_data_sources(days=days)
    if silent:
        lines = []
        for source, last in silent:
            when = f"last batch {last:%Y-%m-%d %H:%M} UTC" if last else "never sent a batch"
            partner = source.partner
            assert partner is not None
            lines.append(
                f"  {partner.name} (PID {partner.pk}), DPID {source.dpid} {source.name}: {when}"
            )
        _alert_enqueue(
            subject=f"{len(silent)} data source(s) sent nothing for {days} days",
            body="No trait file arrived from:\n" + "\n".join(lines) + "\n",
        )
    return len(silent)


def outbound_failure_alert(*, run: OutboundRun, retry_after: datetime | None = None) -> None:
    """A destination's daily run did not succeed: tell the internal list, with the error.
    The caller sends it once per destination and UTC day (the schedule retries meanwhile)."""
    destination = run.destination
    url = settings.PORTAL_BASE_URL + reverse("admin:partners_outboundrun_change", args=[run.pk])
    retry = (
        f"It is tried again from {retry_after:%Y-%m-%d %H:%M} UTC, less often after each"
        " failure; there is no other alert about this destination until tomorrow (UTC).\n\n"
        if retry_after is not None
        else ""
    )
    _alert_enqueue(
        subject=f"outbound run failed: {destination.partner.name}, destination {destination.pk}",
        body=(
            f"The {run.mode} run of destination {destination.name} (#{destination.pk}) of"
            f" {destination.partner.name} (PID {destination.partner_id}) started at"
            f" {run.started_at:%Y-%m-%d %H:%M} UTC failed:\n\n{run.error}\n\n{retry}"
            f"No .info was delivered; the next run covers every change since the last"
            f" successful one. The run: {url}\n"
        ),
    )
