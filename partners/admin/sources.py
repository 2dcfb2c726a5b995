"""Admin of data sources."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from redis.exceptions import RedisError

from partners.idsync.limits import refused_by_day
from partners.models import (
    DataSource,
)
from partners.selectors import (
    data_source_last_sync_expression,
    data_source_last_syncs,
    data_source_mapping_count_expression,
    data_source_mapping_counts,
    data_source_pending_count_expression,
    data_source_pending_counts,
)
from portal.admin_site import (
    ImmutableFieldsMixin,
    related_column,
    when,
)
from portal.admin_values import RowValue, RowValuesMixin


class IsGlobalFilter(admin.SimpleListFilter):
    title = "owner"
    parameter_name = "owner"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("partner", "A partner"), ("global", "Global device data source")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "global":
            return queryset.filter(partner__isnull=True)
        if self.value() == "partner":
            return queryset.filter(partner__isnull=False)
        return queryset


@admin.register(DataSource)
class DataSourceAdmin(RowValuesMixin, ImmutableFieldsMixin, admin.ModelAdmin):
    row_values = {
        "_mapping_count": RowValue(
            data_source_mapping_count_expression, data_source_mapping_counts
        ),
        "_pending_count": RowValue(
            data_source_pending_count_expression, data_source_pending_counts
        ),
        "_last_sync": RowValue(data_source_last_sync_expression, data_source_last_syncs, None),
    }
    list_display = (
        "dpid",
        "name",
        related_column("partner.name", "partner"),
        "id_type",
        "inbound_id_type",
        "active",
        "mapping_count",
        "pending_count",
        "last_sync",
    )
    list_display_links = ("dpid", "name")
    list_filter = (IsGlobalFilter, "id_type", "inbound_id_type", "active")
    list_select_related = ("partner",)
    search_fields = ("=dpid", "name", "partner__name", "=partner__pid", "integration_code")
    autocomplete_fields = ("partner", "shared_with")
    immutable_fields = ("dpid",)
    # What the data source did, computed or stamped: shown, never edited.
    activity_fields = (
        "mapping_count",
        "pending_count",
        "last_sync",
        "idsync_refused",
        "created_at",
        "updated_at",
    )
    readonly_fields = activity_fields
    fieldsets = (
        (None, {"fields": ("dpid", "partner", "name", "active", "integration_code")}),
        ("IDs", {"fields": ("id_type", "inbound_id_type", "device_id_format")}),
        ("ID synchronization", {"fields": ("redirect_hosts", "idsync_url_template")}),
        ("Sharing", {"fields": ("shared_with",)}),
        ("Activity", {"fields": activity_fields}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        return fieldsets if obj is not None else fieldsets[:-1]  # a new one has no activity

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = super().get_readonly_fields(request, obj)
        if obj is not None and obj.is_global:
            # The platform's global device sources are defined by the platform, not by staff.
            return (*readonly, "partner", "id_type", "inbound_id_type", "device_id_format")
        return readonly

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_global:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="ID mappings", ordering="_mapping_count")
    def mapping_count(self, obj: Any) -> int:
        return int(getattr(obj, "_mapping_count", 0))

    @admin.display(description="pending cross-device records", ordering="_pending_count")
    def pending_count(self, obj: Any) -> Any:
        # Records of unmapped DPUUIDs, realized once an ID sync maps them: a count that keeps
        # growing says the partner's ID sync is not reaching us.
        count = int(getattr(obj, "_pending_count", 0))
        if not count:
            return 0
        url = reverse("admin:partners_pendingrecord_changelist")
        return format_html('<a href="{}?data_source__dpid__exact={}">{}</a>', url, obj.dpid, count)

    @admin.display(description="last ID sync", ordering="_last_sync")
    def last_sync(self, obj: Any) -> Any:
        return when(getattr(obj, "_last_sync", None)) or self.get_empty_value_display()

    @admin.display(description="ID-sync calls over the limits (7 days, UTC)")
    def idsync_refused(self, obj: Any) -> Any:
        # Calls answered but not written: past IDSYNC_NEW_PER_ADDRESS (a flood from few
        # addresses) or IDSYNC_NEW_PER_DPID (this data source's new IDs at their ceiling).
        try:
            days = [
                d
                for d in refused_by_day(dpid=obj.dpid)
                if d.over_address_limit or d.over_data_source_limit
            ]
        except (RedisError, OSError):
            return "unknown: Redis cannot be reached"
        if not days:
            return "none"
        return format_html_join(
            mark_safe("<br>"),
            "{}: {} over a client address's limit, {} over this data source's limit",
            (
                (d.day.isoformat(), f"{d.over_address_limit:,}", f"{d.over_data_source_limit:,}")
                for d in days
            ),
        )
