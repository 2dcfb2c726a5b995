"""Admin of inbound batches and files."""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from partners.models import (
    InboundBatch,
    InboundFile,
)
from portal.admin_site import (
    ViewOnlyAdminMixin,
    breakable_column,
    related_column,
    when_column,
)


class InboundFileInline(ViewOnlyAdminMixin, admin.TabularInline):
    model = InboundFile
    fields = ("name", "split", "size", "sha256", "status", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(InboundBatch)
class InboundBatchAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        breakable_column("key", "key"),
        related_column("partner.name", "partner"),
        "target_dpid",
        "kind",
        "status",
        when_column("created_at", "created"),
        when_column("finished_at", "finished"),
    )
    list_filter = ("status", "kind", "overwrite")
    list_select_related = ("partner",)
    search_fields = ("key", "=partner__pid", "=target__dpid")
    date_hierarchy = "created_at"
    inlines = (InboundFileInline,)

    @admin.display(description="DPID", ordering="target_id")
    def target_dpid(self, batch: InboundBatch) -> int:
        return batch.target_id


@admin.register(InboundFile)
class InboundFileAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    # Its batch is on its page (and named as the file is, without its part number).
    list_display = (
        breakable_column("name", "name"),
        related_column("partner.name", "partner"),
        "file_size",
        "status",
        "error",
        when_column("received_at", "received"),
    )
    list_filter = ("status", "storage")
    list_select_related = ("partner",)
    search_fields = ("name", "sha256", "=partner__pid")

    @admin.display(description="size", ordering="size")
    def file_size(self, obj: InboundFile) -> str:
        return filesizeformat(obj.size)
