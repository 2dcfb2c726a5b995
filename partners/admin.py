from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from partners.models import (
    DataSource,
    IDMapping,
    InboundBatch,
    InboundFile,
    LineError,
    Partner,
    PartnerUser,
    PendingRecord,
    Receipt,
    ReceiptRecipient,
)
from partners.selectors import (
    data_source_last_sync_expression,
    data_source_mapping_count_expression,
)
from portal.admin_site import ImmutableFieldsMixin, ViewOnlyAdminMixin


class DataSourceInline(admin.TabularInline):
    model = DataSource
    fk_name = "partner"
    fields = ("dpid", "name", "id_type", "inbound_id_type", "active")
    readonly_fields = fields  # edited on the data source's own page, where the DPID is guarded
    show_change_link = True
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PartnerUserInline(admin.TabularInline):
    model = PartnerUser
    autocomplete_fields = ("user",)
    extra = 0


class ReceiptRecipientInline(admin.TabularInline):
    model = ReceiptRecipient
    autocomplete_fields = ("data_source",)
    fields = ("email", "data_source", "enabled")
    extra = 0


@admin.register(Partner)
class PartnerAdmin(ImmutableFieldsMixin, admin.ModelAdmin):
    list_display = ("pid", "name", "slug", "active", "receipts_enabled", "contact_email")
    list_display_links = ("pid", "name")
    list_filter = ("active", "receipts_enabled")
    search_fields = ("=pid", "name", "slug", "contact_email")
    immutable_fields = ("pid",)
    readonly_fields = ("created_at", "updated_at")
    inlines = (DataSourceInline, PartnerUserInline, ReceiptRecipientInline)
    fieldsets = (
        (None, {"fields": ("pid", "name", "slug", "active", "contact_email")}),
        ("Receipts", {"fields": ("receipts_enabled",)}),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )


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
class DataSourceAdmin(ImmutableFieldsMixin, admin.ModelAdmin):
    list_display = (
        "dpid",
        "name",
        "partner",
        "id_type",
        "inbound_id_type",
        "active",
        "mapping_count",
        "last_sync",
    )
    list_display_links = ("dpid", "name")
    list_filter = (IsGlobalFilter, "id_type", "inbound_id_type", "active")
    list_select_related = ("partner",)
    search_fields = ("=dpid", "name", "partner__name", "=partner__pid", "integration_code")
    autocomplete_fields = ("partner", "shared_with")
    immutable_fields = ("dpid",)
    readonly_fields = ("mapping_count", "last_sync", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("dpid", "partner", "name", "active", "integration_code")}),
        ("IDs", {"fields": ("id_type", "inbound_id_type", "device_id_format")}),
        ("ID synchronization", {"fields": ("redirect_hosts", "idsync_url_template")}),
        ("Sharing", {"fields": ("shared_with",)}),
        ("Activity", {"fields": ("mapping_count", "last_sync", "created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[DataSource]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _mapping_count=data_source_mapping_count_expression(),
                _last_sync=data_source_last_sync_expression(),
            )
        )

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

    @admin.display(description="last ID sync", ordering="_last_sync")
    def last_sync(self, obj: Any) -> Any:
        return getattr(obj, "_last_sync", None)


@admin.register(ReceiptRecipient)
class ReceiptRecipientAdmin(admin.ModelAdmin):
    list_display = ("email", "partner", "data_source", "enabled")
    list_filter = ("enabled",)
    list_select_related = ("partner", "data_source")
    search_fields = ("email", "partner__name", "=partner__pid")
    autocomplete_fields = ("partner", "data_source")


@admin.register(PartnerUser)
class PartnerUserAdmin(admin.ModelAdmin):
    list_display = ("user", "partner")
    list_select_related = ("user", "partner")
    search_fields = ("user__username", "user__email", "partner__name")
    autocomplete_fields = ("user", "partner")


@admin.register(IDMapping)
class IDMappingAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("data_source", "dpuuid", "profile", "first_seen_at", "last_seen_at")
    list_select_related = ("data_source", "profile")
    # Exact matches only: these tables are large, and a support question names an exact ID.
    search_fields = ("=dpuuid", "=profile__uuid")
    search_help_text = "Look up a mapping by its exact DPUUID or platform UUID."
    list_filter = ("last_seen_at",)
    show_full_result_count = False


# --------------------------------------------------------------------------- the exchange


class InboundFileInline(ViewOnlyAdminMixin, admin.TabularInline):
    model = InboundFile
    fields = ("name", "split", "size", "sha256", "status", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(InboundBatch)
class InboundBatchAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("key", "partner", "target", "kind", "status", "created_at", "finished_at")
    list_filter = ("status", "kind", "overwrite")
    list_select_related = ("partner", "target")
    search_fields = ("key", "=partner__pid", "=target__dpid")
    date_hierarchy = "created_at"
    inlines = (InboundFileInline,)


@admin.register(InboundFile)
class InboundFileAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("name", "partner", "batch", "size", "status", "received_at")
    list_filter = ("status",)
    list_select_related = ("partner", "batch")
    search_fields = ("name", "sha256", "=partner__pid")


@admin.register(Receipt)
class ReceiptAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "batch",
        "records_received",
        "stored_records",
        "format_errors",
        "no_matching_ids",
        "job_end",
    )
    list_select_related = ("batch",)
    search_fields = ("batch__key", "=batch__partner__pid")
    date_hierarchy = "job_end"


@admin.register(LineError)
class LineErrorAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("batch", "file_name", "line_number", "kind", "reason", "line_start")
    list_filter = ("kind",)
    list_select_related = ("batch",)
    search_fields = ("file_name", "batch__key")
    show_full_result_count = False


@admin.register(PendingRecord)
class PendingRecordAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("data_source", "dpuuid", "target", "adds", "realized_at")
    list_select_related = ("data_source", "target")
    search_fields = ("=dpuuid",)
    show_full_result_count = False
