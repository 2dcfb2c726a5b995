"""Staff tools of the partners app in the admin: the onboarding status report, schedules."""

from __future__ import annotations

from datetime import date, timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone

from partners.jobs import schedule_run_request
from partners.models import DataSource
from partners.reports import (
    REPORT_COUNTERS,
    onboarding_report_days,
    onboarding_report_rows,
    onboarding_report_xlsx,
)
from partners.schedules import schedule_get, schedule_last_runs, schedules

MAX_DAYS = 366


class ReportForm(forms.Form):
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    data_sources = forms.ModelMultipleChoiceField(
        queryset=DataSource.objects.filter(partner__isnull=False).order_by("dpid"),
        required=False,
        help_text="None chosen: every data source.",
    )

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        days_range_check(data.get("start"), data.get("end"))
        return data


def days_range_check(start: date | None, end: date | None) -> None:
    """The rule of every report's days (admin and portal): in order, at most MAX_DAYS."""
    if start and end:
        if start > end:
            raise forms.ValidationError("The first day is after the last day.")
        if (end - start).days >= MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")


def _export_query(start: date, end: date, dpids: list[int]) -> str:
    """The export link's query: the report as shown, its days and data sources spelled out,
    so it exports what the page shows, from a first visit (the defaults) or after midnight."""
    query = QueryDict(mutable=True)
    query["start"], query["end"] = start.isoformat(), end.isoformat()
    query.setlist("data_sources", [str(dpid) for dpid in dpids])
    query["format"] = "xlsx"
    return query.urlencode()


def onboarding_report_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("partners.view_receipt"):
        raise PermissionDenied
    today = timezone.now().date()
    export = request.GET.get("format") == "xlsx"
    chosen = request.GET.copy()
    chosen.pop("format", None)
    # Nothing chosen yet (a first visit, or a bare ?format=xlsx): the last 7 days.
    form = ReportForm(chosen or {"start": today - timedelta(days=6), "end": today})
    context = {
        **admin.site.each_context(request),
        "title": "Onboarding status report",
        "form": form,
        "counters": REPORT_COUNTERS,
    }
    if form.is_valid():
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        dpids = [source.dpid for source in form.cleaned_data["data_sources"]]
        rows = onboarding_report_rows(start=start, end=end, dpids=dpids)
        if export:
            response = HttpResponse(
                onboarding_report_xlsx(rows),
                content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )
            name = f"onboarding-{start:%Y%m%d}-{end:%Y%m%d}.xlsx"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        context["rows"] = rows
        context["days"] = onboarding_report_days(rows, start=start, end=end)
        context["xlsx_query"] = _export_query(start, end, dpids)
    return TemplateResponse(request, "admin/onboarding_report.html", context)


def schedules_view(request: HttpRequest) -> HttpResponse:
    """Every schedule: when it runs, its last run and result; *Run now* queues it."""
    if not request.user.has_perm("partners.view_schedulerun"):
        raise PermissionDenied
    if request.method == "POST":
        if not request.user.has_perm("partners.add_schedulerun"):
            raise PermissionDenied
        schedule = schedule_get(request.POST.get("name", ""))
        schedule_run_request(schedule=schedule)
        messages.success(request, f"{schedule.title}: queued.")
        return redirect("admin:schedules")
    last = schedule_last_runs()
    rows = [
        {
            "schedule": schedule,
            "when": f"every {schedule.interval} s"
            if schedule.interval
            else f"cron {schedule.cron} UTC",
            "last": last.get(schedule.name),
        }
        for schedule in schedules()
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Schedules",
        "rows": rows,
        "can_run": request.user.has_perm("partners.add_schedulerun"),
    }
    return TemplateResponse(request, "admin/schedules.html", context)
