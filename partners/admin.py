from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Q, QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError

from partners.dropzones.services import inbound_polls_queue
from partners.idsync.limits import refused_by_day
from partners.models import (
    ChannelObject,
    DataSource,
    Destination,
    DestinationSegment,
    IDMapping,
    IDSyncOptOut,
    InboundBatch,
    InboundChannel,
    InboundFile,
    LineError,
    OutboundFile,
    OutboundRun,
    Partner,
    PartnerUser,
    PendingRecord,
    Receipt,
    ReceiptDelivery,
    ReceiptRecipient,
    ScheduleRun,
)
from partners.outbound.preview import destination_preview
from partners.outbound.runs import outbound_resends_request, outbound_runs_request
from partners.receipts.render import receipt_context, receipt_failure
from partners.receipts.services import (
    receipt_delivery_request,
    receipt_recipients,
    receipt_subject,
)
from partners.receipts.workbook import receipt_workbook_response
from partners.reports import PartnerOnboardingSummary, partner_onboarding_summary
from partners.selectors import (
    data_source_last_sync_expression,
    data_source_mapping_count_expression,
    data_source_pending_count_expression,
)
from portal.admin_site import (
    ImmutableFieldsMixin,
    ViewOnlyAdminMixin,
    breakable_column,
    related_column,
    titled,
    when,
    when_column,
)
from segments.admin import ProfileAdmin
from segments.models import Profile


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
    readonly_fields = (
        "mapping_count",
        "pending_count",
        "last_sync",
        "idsync_refused",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("dpid", "partner", "name", "active", "integration_code")}),
        ("IDs", {"fields": ("id_type", "inbound_id_type", "device_id_format")}),
        ("ID synchronization", {"fields": ("redirect_hosts", "idsync_url_template")}),
        ("Sharing", {"fields": ("shared_with",)}),
        (
            "Activity",
            {
                "fields": (
                    "mapping_count",
                    "pending_count",
                    "last_sync",
                    "idsync_refused",
                    "created_at",
                    "updated_at",
                )
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[DataSource]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _mapping_count=data_source_mapping_count_expression(),
                _pending_count=data_source_pending_count_expression(),
                _last_sync=data_source_last_sync_expression(),
            )
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


# --------------------------------------------------------------------------- the exchange


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


# --------------------------------------------------------------------------- drop zones


@admin.register(InboundChannel)
class InboundChannelAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "partner",
        "kind",
        "active",
        when_column("last_polled_at", "last polled"),
        "last_poll_result",
    )
    list_filter = ("kind", "active")
    list_select_related = ("partner",)
    search_fields = ("name", "=partner__pid", "partner__name", "bucket", "host")
    autocomplete_fields = ("partner",)
    readonly_fields = ("last_polled_at", "last_poll_result")
    # An endpoint typed without a scheme is https (Django 6's default, said now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = (
        (None, {"fields": ("partner", "name", "kind", "active", "prefix", "credentials_ref")}),
        ("Object storage (S3)", {"fields": ("bucket", "region", "endpoint_url")}),
        ("SFTP", {"fields": ("host", "port", "username")}),
        ("Last poll", {"fields": ("last_polled_at", "last_poll_result")}),
    )
    actions = ("poll_now",)

    @admin.action(description="Poll the selected drop zones now")
    def poll_now(self, request: HttpRequest, queryset: QuerySet[InboundChannel]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        queued = inbound_polls_queue(channel_ids=ids)
        if queued.queued:
            messages.success(
                request,
                ngettext(
                    "%(count)d drop zone queued for a poll.",
                    "%(count)d drop zones queued for a poll.",
                    len(queued.queued),
                )
                % {"count": len(queued.queued)},
            )
        if queued.busy:
            messages.warning(
                request,
                ngettext(
                    "%(count)d drop zone is still being polled (or waits for a worker): not"
                    " queued again.",
                    "%(count)d drop zones are still being polled (or wait for a worker): not"
                    " queued again.",
                    len(queued.busy),
                )
                % {"count": len(queued.busy)},
            )


@admin.register(ChannelObject)
class ChannelObjectAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    # Its file record is on its page (the same name as the path's last step).
    list_display = (
        breakable_column("path", "path"),
        "channel",
        "size",
        "state",
        when_column("first_seen_at", "first seen"),
        when_column("last_seen_at", "last seen"),
    )
    list_filter = ("state", "channel")
    list_select_related = ("channel",)
    search_fields = ("path",)
    date_hierarchy = "first_seen_at"


# --------------------------------------------------------------------------- outbound


class DestinationSegmentInline(admin.TabularInline):
    model = DestinationSegment
    autocomplete_fields = ("segment",)
    fields = ("segment", "value", "start_date", "end_date")
    extra = 0


class DestinationForm(forms.ModelForm):
    class Meta:
        model = Destination
        fields = "__all__"  # noqa: DJ007 (the admin's fieldsets choose and order them)
        # Django capitalizes only the first letter of a field's name ("Id column").
        labels = {"id_column": "ID column", "id_data_source": "ID data source"}


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    form = DestinationForm
    list_display = ("name", "partner", "mode", "id_column", "daily_at", "active", "last_run")
    list_filter = ("mode", "active", "sync_type")
    list_select_related = ("partner",)
    search_fields = ("name", "=partner__pid", "partner__name")
    autocomplete_fields = ("partner", "channel", "id_data_source")
    inlines = (DestinationSegmentInline,)
    readonly_fields = ("preview",)
    fieldsets = (
        (None, {"fields": ("partner", "name", "active", "channel", "folder", "daily_at")}),
        (
            "What is sent",
            {"fields": ("mode", "sync_type", "id_column", "id_data_source", "pid_alias")},
        ),
        (
            "Files",
            {
                "fields": (
                    "file_name_template",
                    "header_template",
                    "row_template",
                    "gzip",
                    "max_part_bytes",
                    "preview",
                )
            },
        ),
    )
    actions = ("run_now",)
    change_form_template = "admin/partners/destination/change_form.html"

    @admin.display(description="last run")
    def last_run(self, obj: Destination) -> str:
        run = obj.runs.first()
        return f"{run.started_at:%Y-%m-%d %H:%M} {run.status}" if run else "never"

    @admin.display(description="preview")
    def preview(self, obj: Destination) -> str:
        if obj.pk is None:
            return "-"
        preview = destination_preview(obj)
        if preview.members:
            source = ngettext(
                "The saved templates, rendered from %(count)d real member.",
                "The saved templates, rendered from %(count)d real members.",
                preview.members,
            ) % {"count": preview.members}
        else:
            source = (
                "The saved templates, rendered from a made-up member (a sample):"
                " no one is in its segments yet."
            )
        return format_html(
            '<p id="destination-preview-source">{}</p><pre id="destination-preview">{}</pre>',
            source,
            preview.text,
        )

    def _runs_queue(self, request: HttpRequest, ids: list[int]) -> None:
        """Run now, from the list (an action) or from a destination's page (its button)."""
        outbound_runs_request(destination_ids=ids)
        messages.success(
            request,
            ngettext("%(count)d destination queued.", "%(count)d destinations queued.", len(ids))
            % {"count": len(ids)},
        )

    @admin.action(description="Run the selected destinations now", permissions=("change",))
    def run_now(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        self._runs_queue(request, list(queryset.values_list("pk", flat=True)))

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<int:pk>/run-now/",
                self.admin_site.admin_view(require_POST(self.run_now_view)),
                name="partners_destination_run_now",
            )
        ]
        return own + super().get_urls()

    def run_now_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        destination = get_object_or_404(Destination, pk=pk)
        if not self.has_change_permission(request, destination):
            raise PermissionDenied
        self._runs_queue(request, [destination.pk])
        return redirect("admin:partners_destination_change", destination.pk)


class OutboundFileInline(ViewOnlyAdminMixin, admin.TabularInline):
    model = OutboundFile
    fields = ("sequence", "name", "lines", "bytes", "md5")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(OutboundRun)
class OutboundRunAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "destination",
        "mode_name",
        when_column("started_at", "started"),
        "status",
        "received",
        "successful",
        "failed",
        "size",
        "duration",
    )  # its lines (the .info's) are on its page
    list_filter = ("status", "mode", "destination")
    list_select_related = ("destination",)
    date_hierarchy = "started_at"
    inlines = (OutboundFileInline,)
    actions = ("resend",)

    @admin.action(description="Send the selected runs again (same mode and window)")
    def resend(self, request: HttpRequest, queryset: QuerySet[OutboundRun]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        outbound_resends_request(run_ids=ids)
        messages.success(
            request,
            ngettext(
                "%(count)d run queued to be sent again.",
                "%(count)d runs queued to be sent again.",
                len(ids),
            )
            % {"count": len(ids)},
        )

    @admin.display(description="mode", ordering="mode")
    def mode_name(self, obj: OutboundRun) -> str:
        return obj.mode  # full or iter: the choice's explanation is on the page

    @admin.display(description="records", ordering="records_received")
    def received(self, obj: OutboundRun) -> int:
        return obj.records_received

    @admin.display(description="sent", ordering="records_successful")
    def successful(self, obj: OutboundRun) -> int:
        return obj.records_successful

    @admin.display(description="failed", ordering="records_failed")
    def failed(self, obj: OutboundRun) -> int:
        return obj.records_failed

    @admin.display(description="size", ordering="bytes")
    def size(self, obj: OutboundRun) -> str:
        return filesizeformat(obj.bytes)

    @admin.display(description="took")
    def duration(self, obj: OutboundRun) -> str:
        if obj.finished_at is None:
            return "-"
        return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"


@admin.register(ScheduleRun)
class ScheduleRunAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "name",
        when_column("started_at", "started"),
        when_column("finished_at", "finished"),
        "ok",
        "result",
    )
    list_filter = ("name", "ok")
    date_hierarchy = "started_at"


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
