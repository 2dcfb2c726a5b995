"""Admin columns computed per shown row from a big table (a data source's ID mappings, a
segment's members), on plain PostgreSQL and on Citus (README "Scaling out").

On plain PostgreSQL each value is an annotation, a correlated subquery: only the rows shown
pay, and the column sorts. Citus cannot run a subquery correlated from a reference table
(data sources, traits, segments) into a distributed one, so there the values of the rows
shown are read once the page is cut, by one grouped query per column over those rows (pushed
down to every worker), and those columns do not sort. Both ways read the same selector
(``expression`` and ``of_rows`` side by side, compared by a test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.admin.views.main import ChangeList
from django.db import connection
from django.db.models import Model, QuerySet
from django.db.models.expressions import BaseExpression
from django.http import HttpRequest

from portal.citus import is_citus


@dataclass(frozen=True)
class RowValue:
    """One computed column: ``expression()`` annotates a queryset; ``of_rows(pks)`` gives
    the same values for the rows ``pks`` ({pk: value}, a row without any left out)."""

    expression: Callable[[], BaseExpression]
    of_rows: Callable[[list[Any]], dict[Any, Any]]
    default: Any = 0


class RowValuesMixin:
    """A ModelAdmin whose ``row_values`` ({attribute: RowValue}) are set on each object shown
    (list and change form), by annotation or after the page is cut (on Citus)."""

    row_values: dict[str, RowValue] = {}

    def _row_values_by_annotation(self) -> bool:
        return not is_citus(connection)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        if self._row_values_by_annotation():
            queryset = queryset.annotate(
                **{name: value.expression() for name, value in self.row_values.items()}
            )
        return queryset

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        if obj is not None and not self._row_values_by_annotation():
            set_row_values(self.row_values, [obj])
        return obj

    def get_sortable_by(self, request: HttpRequest) -> Any:
        sortable = super().get_sortable_by(request)  # type: ignore[misc]
        if self._row_values_by_annotation():
            return sortable
        return [column for column in sortable if not self._sorts_by_row_value(column)]

    def _sorts_by_row_value(self, column: Any) -> bool:
        method = getattr(self, column, None) if isinstance(column, str) else column
        return getattr(method, "admin_order_field", None) in self.row_values

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        base = super().get_changelist(request, **kwargs)  # type: ignore[misc]
        if self._row_values_by_annotation():
            return base
        row_values = self.row_values

        class RowValuesChangeList(base):  # type: ignore[valid-type, misc]
            def get_results(self, request: HttpRequest) -> None:
                super().get_results(request)
                shown = list(self.result_list)  # type: ignore[has-type]
                set_row_values(row_values, shown)
                self.result_list = shown

        return RowValuesChangeList


def set_row_values(row_values: dict[str, RowValue], objects: Iterable[Model]) -> None:
    """Set each of ``row_values`` on ``objects`` read by one grouped query per value."""
    objects = list(objects)
    pks = [obj.pk for obj in objects]
    for name, value in row_values.items():
        found = value.of_rows(pks) if pks else {}
        for obj in objects:
            setattr(obj, name, found.get(obj.pk, value.default))
