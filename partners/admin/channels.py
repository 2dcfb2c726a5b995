"""Admin of drop zones (inbound channels), the objects seen in them, and schedule runs."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from partners.dropzones.queueing import inbound_polls_queue
from partners.models import (
    ChannelObject,
    InboundChannel,
    ScheduleRun,
)
from portal.admin_site import (
    ViewOnlyAdminMixin,
    breakable_column,
    when_column,
)


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
