from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from portal.admin_site import ImmutableFieldsMixin, ViewOnlyAdminMixin, when_column
from portal.admin_values import RowValue, RowValuesMixin
from segments.models import Profile, Segment, SegmentMembership, Trait
from segments.queueing import segment_memberships_rebuild_enqueue
from segments.selectors import (
    profile_live_traits,
    segment_population_expression,
    segment_population_trend,
    segment_populations,
    trait_live_population_expression,
    trait_live_populations,
)


class MembershipInline(ViewOnlyAdminMixin, admin.TabularInline):
    model = SegmentMembership
    fields = ("segment", "joined_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Profile)
class ProfileAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("uuid", when_column("created_at", "created"))
    search_fields = ("=uuid", "=id_mappings__dpuuid")
    search_help_text = "Exact platform UUID, or a partner's exact DPUUID."
    # partners/admin.py adds the profile's ID mappings (partners' rows) in front.
    inlines = (MembershipInline,)
    readonly_fields = ("uuid", "created_at", "live_traits")
    show_full_result_count = False

    @admin.display(description="live traits")
    def live_traits(self, obj: Profile) -> str:
        rows = profile_live_traits(obj)
        if not rows:
            return "—"
        return format_html(
            "<table><tr><th>SID</th><th>trait</th><th>DPID</th><th>realized</th>"
            "<th>expires</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        t.sid,
                        t.name,
                        t.dpid,
                        f"{t.realized_at:%Y-%m-%d %H:%M} UTC",
                        f"{t.expires_at:%Y-%m-%d}" if t.expires_at else "never",
                    )
                    for t in rows
                ),
            ),
        )


@admin.register(Trait)
class TraitAdmin(RowValuesMixin, ImmutableFieldsMixin, admin.ModelAdmin):
    row_values = {"_population": RowValue(trait_live_population_expression, trait_live_populations)}
    list_display = ("sid", "name", "data_source", "kind", "ttl_days", "live_population")
    list_display_links = ("sid", "name")
    list_filter = ("kind", ("data_source", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("data_source",)
    search_fields = ("=sid", "name", "integration_code", "rule")
    autocomplete_fields = ("data_source",)
    immutable_fields = ("sid", "data_source")
    readonly_fields = ("live_population", "created_at", "updated_at")
    fields = (
        "sid",
        "data_source",
        "name",
        "kind",
        "rule",
        "integration_code",
        "ttl_days",
        "live_population",
        "created_at",
        "updated_at",
    )

    @admin.display(description="live population", ordering="_population")
    def live_population(self, obj: Any) -> int:
        return int(getattr(obj, "_population", 0))


@admin.register(Segment)
class SegmentAdmin(RowValuesMixin, ImmutableFieldsMixin, admin.ModelAdmin):
    row_values = {"_population": RowValue(segment_population_expression, segment_populations)}
    list_display = ("sid", "name", "data_source", "status", "population")
    list_display_links = ("sid", "name")
    list_filter = ("status", ("data_source", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("data_source",)
    search_fields = ("=sid", "name", "rule")
    autocomplete_fields = ("data_source",)
    immutable_fields = ("sid",)
    readonly_fields = ("population", "trend", "created_at", "updated_at")
    fields = (
        "sid",
        "data_source",
        "name",
        "rule",
        "status",
        "population",
        "trend",
        "created_at",
        "updated_at",
    )

    def save_model(self, request: HttpRequest, obj: Segment, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change or {"rule", "status"} & set(form.changed_data):
            segment_memberships_rebuild_enqueue(sids=[obj.sid])
            self.message_user(
                request, f"The membership of segment {obj.sid} is being brought up to date."
            )

    @admin.display(description="members", ordering="_population")
    def population(self, obj: Any) -> int:
        return int(getattr(obj, "_population", 0))

    @admin.display(description="last 14 days (UTC)")
    def trend(self, obj: Segment) -> str:
        if obj.pk is None:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>+{}</td><td>&minus;{}</td><td>{}</td></tr>",
            (
                (f"{d.day:%Y-%m-%d}", d.joined, d.left, d.population)
                for d in segment_population_trend(obj)
            ),
        )
        return format_html(
            '<table id="segment-trend"><thead><tr><th>day</th><th>joined</th><th>left</th>'
            "<th>members at the end</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(SegmentMembership)
class SegmentMembershipAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("profile", "segment", when_column("joined_at", "joined"))
    # The profiles by a second query (id IN the page's): on Citus, memberships and profiles
    # lie on different keys and cannot be joined beside a reference table in one statement.
    list_select_related = ("segment",)
    search_fields = ("=profile__uuid", "=segment__sid")
    search_help_text = "Exact platform UUID or segment SID."
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[SegmentMembership]:
        return super().get_queryset(request).prefetch_related("profile")
