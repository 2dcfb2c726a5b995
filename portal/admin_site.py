"""The staff's home: Django's admin, with the portal's own tools listed beside the models."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.urls import URLPattern, URLResolver, path, reverse


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
