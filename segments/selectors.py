"""Non-trivial reads about traits and segments."""

from __future__ import annotations

from django.db.models import Count, DurationField, Expression, F, Func, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Now

from segments.models import SegmentMembership, TraitRealization


class DaysInterval(Func):
    """``make_interval(days => n)``: a PostgreSQL interval of ``n`` days."""

    template = "make_interval(days => %(expressions)s)"
    output_field = DurationField()


def live_realization_q() -> Q:
    """Realizations younger than their trait's TTL (a TTL of 0 never expires)."""
    return Q(trait__ttl_days=0) | Q(realized_at__gte=Now() - DaysInterval(F("trait__ttl_days")))


def trait_live_population_expression() -> Expression:
    """Per trait row: how many profiles hold it now. A subquery, so only shown rows pay."""
    live = (
        TraitRealization.objects.filter(live_realization_q(), trait=OuterRef("pk"))
        .order_by()
        .values("trait")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(live), 0)


def segment_population_expression() -> Expression:
    members = (
        SegmentMembership.objects.filter(segment=OuterRef("pk"))
        .order_by()
        .values("segment")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(members), 0)
