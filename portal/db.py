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
