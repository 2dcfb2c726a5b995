"""Non-trivial reads about partners and data sources."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Expression, Max, OuterRef, Subquery

from partners.models import IDMapping, PendingRecord
from portal.db import aggregate_per, count_subquery


def data_source_mapping_count_expression() -> Expression:
    """Per data source row: its number of ID mappings (a subquery: only shown rows pay)."""
    return count_subquery(IDMapping.objects.filter(data_source=OuterRef("pk")), per="data_source")


def data_source_mapping_counts(pks: list[int]) -> dict[int, int]:
    """The same per data source ``pks``, in one grouped query (for Citus: portal.admin_values)."""
    return _counts(IDMapping, pks)


def data_source_pending_count_expression() -> Expression:
    """Per data source row: its cross-device records still waiting for an ID mapping of
    their DPUUID (a subquery on the pending_lookup index: only shown rows pay)."""
    return count_subquery(
        PendingRecord.objects.filter(data_source=OuterRef("pk")), per="data_source"
    )


def data_source_pending_counts(pks: list[int]) -> dict[int, int]:
    return _counts(PendingRecord, pks)


def data_source_last_sync_expression() -> Subquery:
    last = (
        IDMapping.objects.filter(data_source=OuterRef("pk"))
        .order_by()
        .values("data_source")
        .annotate(last=Max("last_seen_at"))
        .values("last")
    )
    return Subquery(last)


def data_source_last_syncs(pks: list[int]) -> dict[int, datetime]:
    rows = IDMapping.objects.filter(data_source__in=pks)
    return aggregate_per(rows, per="data_source", value=Max("last_seen_at"))


def _counts(model: type[IDMapping] | type[PendingRecord], pks: list[int]) -> dict[int, int]:
    return aggregate_per(model.objects.filter(data_source__in=pks), per="data_source")
