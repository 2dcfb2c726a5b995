"""The staff's home: Django's admin, with the portal's own tools listed beside the models."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe


class PortalAdminSite(admin.AdminSite):
    site_header = "S2S Portal"
    site_title = "S2S Portal admin"
    index_title = "Partners, data sources, traits and segments"

    def get_urls(self) -> list[URLResolver | URLPattern]:
        from partners import admin_views as partners_views
        from partners.taxonomy import admin_views as taxonomy_views

        tools = [
            path(
                "tools/onboarding-report/",
                self.admin_view(partners_views.onboarding_report_view),
                name="onboarding_report",
            ),
            path(
                "tools/schedules/",
                self.admin_view(partners_views.schedules_view),
                name="schedules",
            ),
            path(
                "tools/taxonomy/",
                self.admin_view(taxonomy_views.taxonomy_view),
                name="taxonomy",
            ),
            path(
                "tools/taxonomy/export/",
                self.admin_view(taxonomy_views.taxonomy_export_view),
                name="taxonomy_export",
            ),
        ]
        return tools + super().get_urls()

    def get_app_list(
        self, request: HttpRequest, app_label: str | None = None
    ) -> list[dict[str, Any]]:
        app_list = super().get_app_list(request, app_label)
        tools = []
        if request.user.has_perm("segments.view_trait"):
            tools.append(("Taxonomy workbook (XLSX import / export)", "taxonomy"))
        if request.user.has_perm("partners.view_receipt"):
            tools.append(("Onboarding status report", "onboarding_report"))
        if request.user.has_perm("partners.view_schedulerun"):
            tools.append(("Schedules (last run, run now)", "schedules"))
        if app_label is None and tools:
            models = [
                {
                    "name": name,
                    "object_name": url_name,
                    "admin_url": reverse(f"admin:{url_name}", current_app=self.name),
                    "view_only": True,
                    "perms": {"view": True},
                }
                for name, url_name in tools
            ]
            app_list.append(
                {
                    "name": "Tools",
                    "app_label": "tools",
                    "app_url": models[0]["admin_url"],
                    "has_module_perms": True,
                    "models": models,
                }
            )
        return app_list


class ImmutableFieldsMixin:
    """Fields that identify a row (DPID, SID, …) may be set once, when the row is created."""

    immutable_fields: tuple[str, ...] = ()

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        readonly = tuple(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return readonly + self.immutable_fields if obj is not None else readonly


class ViewOnlyAdminMixin:
    """Rows the platform derives (realizations, memberships, mappings): look, never edit."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# --------------------------------------------------------------------------- list columns
# A list shows every column on a 1366 px screen beside the navigation and the filters: long
# names may wrap at their own separators, dates take two short lines.

# What list_display takes (django-stubs says a str or bool; None shows the empty value).
ListColumn = Callable[[Any], Any]


def breakable(text: str) -> SafeString:
    """``text`` (a file name, batch key, path) with a break opportunity (<wbr>, no character)
    after each / _ and ., so that it wraps there rather than anywhere, or not at all."""
    return mark_safe(re.sub(r"([/_.])", r"\1<wbr>", escape(text)))


def breakable_column(field: str, description: str) -> ListColumn:
    """A list column of ``field`` shown :func:`breakable`, sorted by it."""

    @admin.display(description=description, ordering=field)
    def column(obj: Any) -> SafeString:
        return breakable(str(getattr(obj, field)))

    column.__name__ = field  # its cells' class: field-<field>
    return column


def related_column(path: str, description: str) -> ListColumn:
    """A list column of a related row's attribute (``batch.partner.name``, ``data_source_id``),
    sorted by it: a partner's name, a data source's DPID, where the related row's whole
    name ("Acme web visitors (DPID 21)") would take a column of three lines."""

    @admin.display(description=description, ordering=path.replace(".", "__"))
    def column(obj: Any) -> Any:
        for step in path.split("."):
            obj = getattr(obj, step)
            if obj is None:
                return None  # the admin's empty value (a global data source has no partner)
        return obj

    column.__name__ = path.replace(".", "_")
    return column


def when_column(field: str, description: str) -> ListColumn:
    """A list column of a date and time, short ("2026-12-02 16:34", UTC: two lines in a
    narrow column) where Django's own "Dec. 2, 2026, 4:34 p.m." keeps to one line, wide."""

    @admin.display(description=description, ordering=field)
    def column(obj: Any) -> SafeString | None:
        return when(getattr(obj, field))

    column.__name__ = field
    return column


def when(moment: datetime | None) -> SafeString | None:
    """A list's date and time (None: the admin's empty value); it wraps between the day and
    the time, never inside the day (admin.css: .day)."""
    if moment is None:
        return None
    local = timezone.localtime(moment)
    return format_html('<span class="day">{}</span> {}', f"{local:%Y-%m-%d}", f"{local:%H:%M}")


def titled(base: type[admin.FieldListFilter], title: str) -> type[admin.FieldListFilter]:
    """Django's ``base`` list filter under its own title ("By data source", not "By target":
    Django titles a filter with its field's name)."""

    class Titled(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.title = title

    return Titled
