"""Admin of destinations and outbound runs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from partners.models import (
    Destination,
    DestinationSegment,
    OutboundFile,
    OutboundRun,
)
from partners.outbound.preview import destination_preview
from partners.outbound.queueing import outbound_resends_request, outbound_runs_request
from portal.admin_site import (
    ViewOnlyAdminMixin,
    when_column,
)


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
