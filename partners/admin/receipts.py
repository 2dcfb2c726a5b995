"""Admin of receipts, their deliveries, recipients, line errors and pending records."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import ngettext

from partners.models import (
    InboundBatch,
    LineError,
    PendingRecord,
    Receipt,
    ReceiptDelivery,
    ReceiptRecipient,
)
from partners.receipts.queueing import receipt_delivery_request
from partners.receipts.render import receipt_context, receipt_failure
from partners.receipts.services import receipt_recipients, receipt_subject
from partners.receipts.workbook import receipt_workbook_response
from portal.admin_site import (
    ViewOnlyAdminMixin,
    breakable_column,
    related_column,
    titled,
    when_column,
)


@admin.register(ReceiptRecipient)
class ReceiptRecipientAdmin(admin.ModelAdmin):
    list_display = ("email", "partner", "data_source", "enabled")
    list_filter = ("enabled",)
    list_select_related = ("partner", "data_source")
    search_fields = ("email", "partner__name", "=partner__pid")
    autocomplete_fields = ("partner", "data_source")


class ReceiptDeliveryInline(admin.TabularInline):
    model = ReceiptDelivery
    fields = (
        "created_at",
        "recipients",
        "sent_to",
        "status",
        "attempts",
        "requeued",
        "sent_at",
        "error",
        "requested_by",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class HasErrorsFilter(admin.SimpleListFilter):
    title = "has errors"
    parameter_name = "has_errors"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        rejected = (
            Q(format_errors__gt=0)
            | Q(invalid_ids__gt=0)
            | Q(no_matching_ids__gt=0)
            | Q(no_trait_realized__gt=0)
            | Q(rejected__gt=0)
        )
        if self.value() == "yes":
            return queryset.filter(rejected)
        if self.value() == "no":
            return queryset.exclude(rejected)
        return queryset


class ResendForm(forms.Form):
    email = forms.EmailField(
        required=False,
        help_text="One address; leave empty to send again to every recipient of the receipt.",
    )


@admin.register(Receipt)
class ReceiptAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        breakable_column("batch", "batch"),
        related_column("batch.partner.name", "partner"),
        "data_source",
        "received",
        "stored",
        "format_errors",
        "no_matching_ids",
        when_column("job_end", "processed"),
        "last_delivery",
    )
    list_filter = (
        ("batch__partner", admin.RelatedOnlyFieldListFilter),
        ("batch__target", titled(admin.RelatedOnlyFieldListFilter, "data source")),
        "batch__kind",
        ("deliveries__status", titled(admin.ChoicesFieldListFilter, "e-mail")),
        HasErrorsFilter,
        ("job_end", titled(admin.DateFieldListFilter, "processed")),
    )
    list_select_related = ("batch__partner",)
    search_fields = ("batch__key", "=batch__partner__pid")
    date_hierarchy = "job_end"
    inlines = (ReceiptDeliveryInline,)
    actions = ("resend_to_all",)
    change_form_template = "admin/partners/receipt/change_form.html"
    # The page says what the batch was; its template then shows the receipt's counters and
    # error sample from receipt_context, the rows the e-mail and the portal show (each
    # counter once, only those of the receipt's kind), not every column of the table.
    readonly_fields = (
        "subject",
        "batch",
        "partner",
        "target",
        "kind",
        "files",
        "missing_parts",
        "failure",
        "job_start",
        "job_end",
        "over_line_limit",
        "pending_records",
    )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        fields = ["subject", "batch", "partner", "target", "kind", "files"]
        fields += ["missing_parts"] if obj.batch.missing_parts else []
        fields += ["failure"] if receipt_failure(obj) else []
        fields += ["job_start", "job_end"]
        if obj.batch.kind != InboundBatch.Kind.ID_SYNC:
            fields += ["over_line_limit", "pending_records"]  # figures of trait batches only
        return fields

    @admin.display(description="e-mail subject")
    def subject(self, receipt: Receipt) -> str:
        return receipt_subject(receipt)

    @admin.display(ordering="batch__partner__name")
    def partner(self, receipt: Receipt) -> str:
        return str(receipt.batch.partner)

    @admin.display(description="data source")
    def target(self, receipt: Receipt) -> str:
        return str(receipt.batch.target)

    @admin.display(description="kind")
    def kind(self, receipt: Receipt) -> str:
        return receipt.batch.get_kind_display()

    @admin.display(description="files processed together")
    def files(self, receipt: Receipt) -> str:
        names = receipt.batch.files.order_by("split", "name").values_list("name", flat=True)
        return format_html_join(mark_safe("<br>"), "{}", ((name,) for name in names))

    @admin.display(description="missing parts (processed without them)")
    def missing_parts(self, receipt: Receipt) -> str:
        return receipt.batch.missing_parts

    @admin.display(description="not processed")
    def failure(self, receipt: Receipt) -> str:
        return receipt_failure(receipt)

    @admin.display(description="DPID", ordering="batch__target_id")
    def data_source(self, receipt: Receipt) -> int:
        return receipt.batch.target_id

    @admin.display(description="received", ordering="records_received")
    def received(self, receipt: Receipt) -> int:
        return receipt.records_received

    @admin.display(description="stored", ordering="stored_records")
    def stored(self, receipt: Receipt) -> int:
        return receipt.stored_records

    @admin.display(description="e-mail")
    def last_delivery(self, receipt: Receipt) -> str:
        delivery = receipt.deliveries.first()
        return delivery.get_status_display() if delivery else "—"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # read-only; the re-send and download actions are their own views

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<int:pk>/workbook/",
                self.admin_site.admin_view(self.workbook_view),
                name="partners_receipt_workbook",
            ),
            path(
                "<int:pk>/resend/",
                self.admin_site.admin_view(self.resend_view),
                name="partners_receipt_resend",
            ),
        ]
        return own + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        receipt = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if receipt is not None:
            # Its own name: the admin's template already reads "errors" (the form's).
            extra["receipt_page"] = receipt_context(receipt)
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def workbook_view(self, request: HttpRequest, pk: int) -> FileResponse:
        receipt = get_object_or_404(Receipt.objects.select_related("batch"), pk=pk)
        if not self.has_view_permission(request, receipt):
            raise PermissionDenied
        return receipt_workbook_response(receipt)

    def resend_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        receipt = get_object_or_404(Receipt.objects.select_related("batch"), pk=pk)
        if not self.has_view_permission(request, receipt):
            raise PermissionDenied
        form = ResendForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            email = form.cleaned_data["email"]
            delivery = receipt_delivery_request(
                receipt=receipt,
                recipients=[email] if email else None,
                requested_by=request.user.get_username(),
            )
            self.message_user(
                request, f"Receipt queued for {', '.join(delivery.recipients)}.", messages.SUCCESS
            )
            return redirect("admin:partners_receipt_change", receipt.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Re-send {receipt}",
            "receipt": receipt,
            "recipients": receipt_recipients(receipt),
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/partners/receipt/resend.html", context)

    @admin.action(description="Re-send the selected receipts to all their recipients")
    def resend_to_all(self, request: HttpRequest, queryset: QuerySet[Receipt]) -> None:
        receipts = list(queryset.select_related("batch"))
        for receipt in receipts:
            receipt_delivery_request(receipt=receipt, requested_by=request.user.get_username())
        count = len(receipts)
        self.message_user(
            request,
            ngettext("%(count)d receipt queued.", "%(count)d receipts queued.", count)
            % {"count": count},
            messages.SUCCESS,
        )


@admin.register(LineError)
class LineErrorAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        breakable_column("batch", "batch"),
        breakable_column("file_name", "file"),
        "line_number",
        "kind",
        "reason",
        "line_start",
    )
    list_filter = ("kind",)
    list_select_related = ("batch",)
    search_fields = ("file_name", "batch__key")
    show_full_result_count = False


@admin.register(PendingRecord)
class PendingRecordAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        related_column("data_source_id", "DPID"),
        "dpuuid",
        related_column("target_id", "target DPID"),
        "adds",
        when_column("realized_at", "realized"),
    )
    search_fields = ("=dpuuid",)
    show_full_result_count = False
