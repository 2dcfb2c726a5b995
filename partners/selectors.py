"""Non-trivial reads about partners and data sources."""

from __future__ import annotations

from django.db.models import Count, Expression, Max, OuterRef, Subquery
from django.db.models.functions import Coalesce

from partners.models import IDMapping


def data_source_mapping_count_expression() -> Expression:
    """Per data source row: its number of ID mappings (a subquery: only shown rows pay)."""
    mappings = (
        IDMapping.objects.filter(data_source=OuterRef("pk"))
        .order_by()
        .values("data_source")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(mappings), 0)


def data_source_last_sync_expression() -> Subquery:
    last = (
        IDMapping.objects.filter(data_source=OuterRef("pk"))
        .order_by()
        .values("data_source")
        .annotate(last=Max("last_seen_at"))
        .values("last")
    )
    return Subquery(last)
