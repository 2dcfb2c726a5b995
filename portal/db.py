"""Small query helpers shared by the apps' selectors."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Expression, QuerySet, Subquery
from django.db.models.functions import Coalesce


def count_subquery(rows: QuerySet[Any], *, per: str) -> Expression:
    """Per outer row, how many of ``rows`` (already filtered on an ``OuterRef``) there are.

    A correlated subquery: a changelist pays for the rows it shows, not for the whole table.
    """
    counted = rows.order_by().values(per).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted), 0)


def aggregate_per(rows: QuerySet[Any], *, per: str, value: Any = None) -> dict[Any, Any]:
    """``{key of per: aggregate}`` over ``rows`` (already filtered to the keys wanted), in
    one grouped query: the same figure as :func:`count_subquery` (``value`` None: a count),
    for many outer rows at once where a correlated subquery cannot run (Citus)."""
    grouped = rows.order_by().values(per).annotate(v=value if value is not None else Count("*"))
    return dict(grouped.values_list(per, "v"))
