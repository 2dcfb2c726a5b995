"""Reads of the outbound history (runs and their files), scoped to a partner for its portal."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, QuerySet

from partners.models import Destination, OutboundRun, Partner


def partner_destinations(partner: Partner) -> QuerySet[Destination]:
    """The partner's destinations, with their mapped segments counted."""
    return (
        Destination.objects.filter(partner=partner)
        .select_related("partner", "channel")
        .annotate(segment_count=Count("mapped"))
        .order_by("name", "pk")
    )


def partner_outbound_runs(partner: Partner) -> QuerySet[OutboundRun]:
    """Runs of the partner's destinations (another partner's answer nothing), newest first,
    each with its destination, its number of files and its duration."""
    return (
        OutboundRun.objects.filter(destination__partner=partner)
        .select_related("destination")
        .annotate(
            file_count=Count("files"),
            duration=ExpressionWrapper(
                F("finished_at") - F("started_at"), output_field=DurationField()
            ),
        )
        .order_by("-started_at", "-pk")
    )


def partner_outbound_history(
    partner: Partner, *, start: date, end: date, destination: Destination | None = None
) -> QuerySet[OutboundRun]:
    """The partner's runs started from ``start`` to ``end`` (UTC days, both included), of
    one destination or all of them (SPEC §6: per destination and date range)."""
    runs = partner_outbound_runs(partner).filter(
        started_at__gte=datetime.combine(start, time.min, tzinfo=UTC),
        started_at__lt=datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )
    return runs.filter(destination=destination) if destination is not None else runs
