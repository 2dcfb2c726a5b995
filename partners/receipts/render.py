"""A receipt as text and as JSON (the e-mail, the CLI and the API show the same thing)."""

from __future__ import annotations

from typing import Any

from partners.models import InboundBatch, Receipt

# SPEC §4: the counters, in this order, with these names.
S2S_COUNTERS = (
    ("records_received", "Records received"),
    ("format_errors", "Format errors"),
    ("invalid_ids", "Invalid ID"),
    ("no_matching_ids", "No matching ID"),
    ("no_trait_realized", "No trait realized"),
    ("records_processed", "Records processed"),
    ("stored_records", "Stored records"),
    ("total_devices", "Total devices"),
    ("total_signals", "Total signals"),
    ("total_unused_signals", "Total unused signals"),
    ("total_realized_traits", "Total realized traits"),
    ("total_removed_traits", "Total removed traits"),
    ("total_traits_failed_validation", "Total traits failed validation"),
    ("total_users_with_failed_traits", "Total users with traits that failed validation"),
)
IDSYNC_COUNTERS = (
    ("records_received", "Records received"),
    ("mappings_created", "Mappings created"),
    ("mappings_refreshed", "Mappings refreshed"),
    ("rejected", "Rejected"),
)


def receipt_counters(receipt: Receipt) -> tuple[tuple[str, str], ...]:
    return IDSYNC_COUNTERS if receipt.batch.kind == InboundBatch.Kind.ID_SYNC else S2S_COUNTERS


def receipt_counter_rows(receipt: Receipt) -> list[tuple[str, int]]:
    """(label, value) of each counter, in the receipt's order: the receipt and the check show
    these rows alike."""
    return [(label, getattr(receipt, field)) for field, label in receipt_counters(receipt)]


def receipt_counters_json(receipt: Receipt) -> dict[str, int]:
    """The counters by field name, as the API gives them (receipt and check alike)."""
    return {field: getattr(receipt, field) for field, _ in receipt_counters(receipt)}


def receipt_error_rows(receipt: Receipt) -> list[dict[str, Any]]:
    """The sample of rejected lines, each with its kind in words."""
    return [{**e, "kind_label": e["kind"].replace("_", " ")} for e in receipt.errors_sample]


def receipt_failure(receipt: Receipt) -> str:
    """Why the receipt's batch was not processed at all ("" when it was)."""
    batch = receipt.batch
    return batch.error if batch.status == InboundBatch.Status.FAILED else ""


def receipt_context(receipt: Receipt) -> dict[str, Any]:
    """What a receipt page shows, as the e-mail and the portal lay it out."""
    batch = receipt.batch
    return {
        "failure": receipt_failure(receipt),
        "receipt": receipt,
        "batch": batch,
        "partner": batch.partner,
        "files": list(batch.files.order_by("split", "name").values_list("name", flat=True)),
        "counters": receipt_counter_rows(receipt),
        "errors": receipt_error_rows(receipt),
        "has_errors": batch.line_errors.exists(),
    }


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    files = list(receipt.batch.files.order_by("split", "name").values_list("name", flat=True))
    data: dict[str, Any] = {"files": files, "missing_parts": receipt.batch.missing_parts}
    if receipt_failure(receipt):
        data["failure"] = receipt_failure(receipt)  # the batch was not processed: why
    data |= receipt_counters_json(receipt)
    if receipt.batch.kind != InboundBatch.Kind.ID_SYNC:
        data["job_start"] = receipt.job_start.isoformat()
        data["job_end"] = receipt.job_end.isoformat()
    data["errors"] = receipt.errors_sample
    return data


def receipt_text(receipt: Receipt) -> str:
    batch = receipt.batch
    target = batch.target
    lines = [
        f"Server-to-Server processing result: {batch.partner.name} (DPID {target.dpid})",
        "",
        "Files processed together:",
        *(
            f"  {name}"
            for name in batch.files.order_by("split", "name").values_list("name", flat=True)
        ),
        *(
            [f"Missing parts (not received in time; processed without them): {batch.missing_parts}"]
            if batch.missing_parts
            else []
        ),
        *([f"Not processed: {receipt_failure(receipt)}"] if receipt_failure(receipt) else []),
        "",
    ]
    width = max(len(label) for _, label in receipt_counters(receipt))
    for field, label in receipt_counters(receipt):
        lines.append(f"{label:<{width}}  {getattr(receipt, field):>12,}")
    lines.append(f"{'Job start time':<{width}}  {receipt.job_start:%Y-%m-%d %H:%M:%S} UTC")
    lines.append(f"{'Job end time':<{width}}  {receipt.job_end:%Y-%m-%d %H:%M:%S} UTC")
    if receipt.errors_sample:
        lines += ["", "Errors (the first 10 of each kind):"]
        for error in receipt.errors_sample:
            lines.append(
                f"  {error['file']} line {error['line']}: {error['kind'].replace('_', ' ')}:"
                f" {error['reason']} | {error['start'][:60]}"
            )
    return "\n".join(lines)
