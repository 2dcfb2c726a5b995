"""Admin of partners and their people."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from partners.models import (
    DataSource,
    Partner,
    PartnerUser,
    ReceiptRecipient,
)
from partners.reports import PartnerOnboardingSummary, partner_onboarding_summary
from portal.admin_site import (
    ImmutableFieldsMixin,
)


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
    readonly_fields = (
        "created_at",
        "updated_at",
        "last_batch",
        "success_last_30_days",
        "portal_link",
    )
    inlines = (DataSourceInline, PartnerUserInline, ReceiptRecipientInline)
    fieldsets = (
        (None, {"fields": ("pid", "name", "slug", "active", "contact_email")}),
        ("Receipts", {"fields": ("receipts_enabled", "last_batch", "success_last_30_days")}),
        ("Partner portal", {"fields": ("portal_link",)}),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    @staticmethod
    def _summary(partner: Partner) -> PartnerOnboardingSummary:
        """Read once per page: two fields show it."""
        cached = getattr(partner, "_onboarding_summary", None)
        if cached is None:
            cached = partner_onboarding_summary(partner)
            partner._onboarding_summary = cached  # type: ignore[attr-defined]
        return cached

    @admin.display(description="Portal")
    def portal_link(self, partner: Partner) -> str:
        if partner.pk is None:
            return "—"
        url = reverse("portal:view_as", args=[partner.pk])
        return format_html('<a href="{}">View the portal as this partner</a>', url)

    @admin.display(description="Last batch")
    def last_batch(self, partner: Partner) -> str:
        receipt = self._summary(partner).last_receipt
        if receipt is None:
            return "—"
        url = reverse("admin:partners_receipt_change", args=[receipt.pk])
        # format_html escapes its arguments first (to text): the date is formatted here.
        return format_html(
            '<a href="{}">{}</a> — {} UTC, {} of {} records stored',
            url,
            receipt.batch.key,
            f"{receipt.job_end:%Y-%m-%d %H:%M}",
            receipt.stored_records,
            receipt.records_received,
        )

    @admin.display(description="Success, last 30 days")
    def success_last_30_days(self, partner: Partner) -> str:
        summary = self._summary(partner)
        if summary.success_percent is None:
            return "no records in the last 30 days"
        return (
            f"{summary.success_percent} % ({summary.stored:,} of {summary.received:,}"
            " records stored)"
        )


@admin.register(PartnerUser)
class PartnerUserAdmin(admin.ModelAdmin):
    list_display = ("user", "partner")
    list_select_related = ("user", "partner")
    search_fields = ("user__username", "user__email", "partner__name")
    autocomplete_fields = ("user", "partner")
