"""The onboarding status report (SPEC §4.1): receipts per data source and day. Reads only."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from openpyxl import Workbook

from partners.models import InboundBatch, Partner, Receipt
from partners.xlsx import text_row

REPORT_COUNTERS = (
    ("records_received", "Records received"),
    ("stored_records", "Stored"),
    ("format_errors", "Format errors"),
    ("invalid_ids", "Invalid ID"),
    ("no_matching_ids", "No matching ID"),
    ("no_trait_realized", "No trait realized"),
    ("total_realized_traits", "Realized traits"),
    ("total_unused_signals", "Unused signals"),
)


def success_percent(part: int, whole: int) -> float | None:
    """``part`` of ``whole`` in percent, one decimal (None when there is no whole)."""
    return round(100 * part / whole, 1) if whole else None


@dataclass(frozen=True)
class ReportRow:
    day: date
    dpid: int
    data_source: str
    batches: int
    counts: dict[str, int]

    @property
    def failed(self) -> int:
        return self.counts["records_received"] - self.counts["stored_records"]

    @property
    def success_percent(self) -> float | None:
        return success_percent(self.counts["stored_records"], self.counts["records_received"])


def onboarding_report_rows(
    *, start: date, end: date, dpids: list[int] | None = None
) -> list[ReportRow]:
    """Trait batches' receipts from ``start`` to ``end`` (UTC days, both included), summed
    per day and target data source, in day then DPID order."""
    receipts = Receipt.objects.exclude(batch__kind=InboundBatch.Kind.ID_SYNC).filter(
        job_end__gte=datetime.combine(start, time.min, tzinfo=UTC),
        job_end__lt=datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )
    if dpids:
        receipts = receipts.filter(batch__target_id__in=dpids)
    grouped = (
        receipts.annotate(day=TruncDate("job_end", tzinfo=UTC))
        .values("day", "batch__target_id", "batch__target__name")
        .annotate(batches=Count("pk"), **{field: Sum(field) for field, _ in REPORT_COUNTERS})
        .order_by("day", "batch__target_id")
    )
    return [
        ReportRow(
            day=g["day"],
            dpid=g["batch__target_id"],
            data_source=g["batch__target__name"],
            batches=g["batches"],
            counts={field: g[field] or 0 for field, _ in REPORT_COUNTERS},
        )
        for g in grouped
    ]


def onboarding_report_days(
    rows: list[ReportRow], *, start: date, end: date
) -> list[dict[str, object]]:
    """Every day of the range (empty ones too) with its stored and failed records."""
    days = {start + timedelta(days=n): [0, 0] for n in range((end - start).days + 1)}
    for row in rows:
        days[row.day][0] += row.counts["stored_records"]
        days[row.day][1] += row.failed
    return [{"day": d.isoformat(), "stored": s, "failed": f} for d, (s, f) in days.items()]


def onboarding_report_xlsx(rows: list[ReportRow]) -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("Onboarding status")
    sheet.append(
        [
            "Day",
            "DPID",
            "Data source",
            "Batches",
            *(label for _, label in REPORT_COUNTERS),
            "Success %",
        ]
    )
    for row in rows:
        sheet.append(
            text_row(
                sheet,
                [
                    row.day,
                    row.dpid,
                    row.data_source,  # a name staff typed: text, never a formula
                    row.batches,
                    *(row.counts[field] for field, _ in REPORT_COUNTERS),
                    row.success_percent,
                ],
            )
        )
    stream = io.BytesIO()
    book.save(stream)
    return stream.getvalue()


@dataclass(frozen=True)
class PartnerOnboardingSummary:
    last_receipt: Receipt | None
    received: int
    stored: int

    @property
    def success_percent(self) -> float | None:
        return success_percent(self.stored, self.received)


def partner_onboarding_summary(partner: Partner, *, days: int = 30) -> PartnerOnboardingSummary:
    """The partner's last trait batch and its records over the last ``days`` days."""
    receipts = Receipt.objects.filter(batch__partner=partner).exclude(
        batch__kind=InboundBatch.Kind.ID_SYNC
    )
    totals = receipts.filter(job_end__gte=timezone.now() - timedelta(days=days)).aggregate(
        received=Sum("records_received"), stored=Sum("stored_records")
    )
    return PartnerOnboardingSummary(
        last_receipt=receipts.select_related("batch").order_by("-job_end").first(),
        received=totals["received"] or 0,
        stored=totals["stored"] or 0,
    )


def partner_onboarding_report_rows(
    partner: Partner, *, start: date, end: date, dpids: list[int] | None = None
) -> list[ReportRow]:
    """The report's rows for the partner's own data sources only (of ``dpids``, or all of
    them): the admin's numbers for those DPIDs. A partner with no data source gets none
    (:func:`onboarding_report_rows` reads an empty choice as every data source)."""
    own = set(partner.data_sources.values_list("dpid", flat=True))
    chosen = sorted(own & set(dpids)) if dpids else sorted(own)
    if not chosen:
        return []
    return onboarding_report_rows(start=start, end=end, dpids=chosen)


def onboarding_report_totals(rows: list[ReportRow]) -> dict[str, object]:
    """The rows added up: each counter, the batches and the success rate of the whole."""
    counts = {field: sum(row.counts[field] for row in rows) for field, _ in REPORT_COUNTERS}
    return {
        "batches": sum(row.batches for row in rows),
        "counts": counts,
        "success_percent": success_percent(counts["stored_records"], counts["records_received"]),
    }
