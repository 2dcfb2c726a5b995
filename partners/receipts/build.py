"""Making a batch's receipt (SPEC §4) from what its processing counted: the one place that
says how the counters follow from each other (stored records, records processed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from partners.inbound.apply import ApplyResult
from partners.models import InboundBatch, Receipt


def trait_receipt_create(
    *,
    batch: InboundBatch,
    received: int,
    format_errors: int,
    applied: ApplyResult,
    started: datetime,
    errors_sample: list[dict[str, Any]],
) -> Receipt:
    """The receipt of a trait batch: ``received`` records, ``format_errors`` of them not
    parsed, the rest counted by the set-based apply."""
    processed = received - applied.over_line_limit
    return Receipt.objects.create(
        batch=batch,
        records_received=received,
        format_errors=format_errors,
        invalid_ids=applied.invalid_ids,
        no_matching_ids=applied.no_matching_ids,
        no_trait_realized=applied.no_trait_realized,
        records_processed=processed,
        stored_records=processed
        - format_errors
        - applied.invalid_ids
        - applied.no_matching_ids
        - applied.no_trait_realized,
        total_devices=applied.total_devices,
        total_signals=applied.total_signals,
        total_unused_signals=applied.total_unused_signals,
        total_realized_traits=applied.total_realized_traits,
        total_removed_traits=applied.total_removed_traits,
        total_traits_failed_validation=applied.total_traits_failed_validation,
        total_users_with_failed_traits=applied.total_users_with_failed_traits,
        over_line_limit=applied.over_line_limit,
        pending_records=applied.pending_records,
        job_start=started,
        job_end=timezone.now(),
        errors_sample=errors_sample,
    )


def idsync_receipt_create(
    *,
    batch: InboundBatch,
    received: int,
    created: int,
    refreshed: int,
    rejected: int,
    started: datetime,
    errors_sample: list[dict[str, Any]],
) -> Receipt:
    """The receipt of an ID-sync batch: lines received, mappings created and refreshed,
    lines rejected."""
    return Receipt.objects.create(
        batch=batch,
        records_received=received,
        records_processed=received,
        mappings_created=created,
        mappings_refreshed=refreshed,
        rejected=rejected,
        job_start=started,
        job_end=timezone.now(),
        errors_sample=errors_sample,
    )


def failure_receipt_create(*, batch: InboundBatch, started: datetime, ended: datetime) -> Receipt:
    """The receipt of a batch that could not be processed at all (nothing was applied; the
    batch's error says why)."""
    return Receipt.objects.create(batch=batch, job_start=started, job_end=ended)
