"""Admin of ID mappings and opt-outs, and a profile's page with its mappings."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from partners.models import (
    IDMapping,
    IDSyncOptOut,
)
from portal.admin_site import (
    ViewOnlyAdminMixin,
    related_column,
    when_column,
)
from segments.admin import ProfileAdmin
from segments.models import Profile


@admin.register(IDMapping)
class IDMappingAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        related_column("data_source_id", "DPID"),
        "dpuuid",
        "profile",
        when_column("first_seen_at", "first seen"),
        when_column("last_seen_at", "last seen"),
    )
    list_select_related = ("profile",)
    # Exact matches only: these tables are large, and a support question names an exact ID.
    search_fields = ("=dpuuid", "=profile__uuid")
    search_help_text = "Look up a mapping by its exact DPUUID or platform UUID."
    list_filter = ("last_seen_at",)
    show_full_result_count = False


@admin.register(IDSyncOptOut)
class IDSyncOptOutAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        related_column("data_source_id", "DPID"),
        "dpuuid",
        when_column("created_at", "created"),
    )
    search_fields = ("=dpuuid",)
    list_filter = (("data_source", admin.RelatedOnlyFieldListFilter),)
    show_full_result_count = False


class IDMappingInline(ViewOnlyAdminMixin, admin.TabularInline):
    model = IDMapping
    fields = ("data_source", "dpuuid", "first_seen_at", "last_seen_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


# A profile's page shows its ID mappings first: they are partners' rows, so this app adds
# them to the segments app's profile admin (segments imports nothing from partners).
admin.site.unregister(Profile)


@admin.register(Profile)
class ProfileWithMappingsAdmin(ProfileAdmin):
    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return (IDMappingInline, *super().get_inlines(request, obj))
