"""The partner portal: a partner's own files and receipts. Views are thin: the partner comes
from :mod:`partners.portal.access`, rows are read scoped to it (404 otherwise)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import views as auth_views
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST
from django_ratelimit.decorators import ratelimit

from partners.inbound.errors import InboundRejected
from partners.models import InboundFile, Partner, PartnerAPIToken, Receipt
from partners.outbound.selectors import (
    partner_destinations,
    partner_outbound_history,
    partner_outbound_runs,
)
from partners.portal.access import VIEW_AS_SESSION_KEY, partner_required
from partners.portal.api import api_token_rotate
from partners.portal.forms import OutboundHistoryForm, PartnerReportForm
from partners.portal.selectors import (
    api_examples,
    partner_data_sources,
    partner_files_page,
    upload_examples,
    upload_name_refusal,
)
from partners.portal.uploads import (
    PortalUploadHandler,
    name_and_problem,
    registration_message,
    upload_accept,
    upload_check,
    upload_checked,
    upload_handler_install,
    upload_register,
    upload_token,
)
from partners.receipts.render import receipt_context
from partners.receipts.workbook import receipt_workbook_response
from partners.reports import (
    REPORT_COUNTERS,
    onboarding_report_days,
    onboarding_report_totals,
    onboarding_report_xlsx,
    partner_onboarding_report_rows,
    success_percent,
)
from portal.auth import client_address

PAGE = 100
FAVICON = Path(__file__).resolve().parents[1] / "static" / "partners" / "favicon.ico"


def _partner(request: HttpRequest) -> Partner:
    return request.partner  # type: ignore[attr-defined]


def _receipt(request: HttpRequest, pk: int) -> Receipt:
    return get_object_or_404(
        Receipt.objects.select_related("batch__partner", "batch__target"),
        pk=pk,
        batch__partner=_partner(request),
    )


@partner_required
def files_view(request: HttpRequest) -> HttpResponse:
    """*My files*, a page at a time (``?page=``)."""
    files = partner_files_page(_partner(request), page=request.GET.get("page"), per_page=PAGE)
    context = {"files": files.rows, "page": files.page, "nav": "files"}
    return render(request, "portal/files.html", context)


@partner_required
def files_status_view(request: HttpRequest) -> JsonResponse:
    """A page's rows as JSON (``?page=`` as the page's), polled by it while something is on
    its way."""
    files = partner_files_page(_partner(request), page=request.GET.get("page"), per_page=PAGE)
    page = files.page
    return JsonResponse(
        {
            "files": files.rows,
            "page": page.number,
            "pages": page.paginator.num_pages,
            "count": page.paginator.count,
        }
    )


@partner_required
def receipts_view(request: HttpRequest) -> HttpResponse:
    partner = _partner(request)
    receipts = (
        Receipt.objects.filter(batch__partner=partner)
        .select_related("batch__target")
        .order_by("-job_end")[:PAGE]
    )
    today = timezone.now().date()
    rows = partner_onboarding_report_rows(partner, start=today - timedelta(days=29), end=today)
    summary: dict[int, dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault(
            row.dpid, {"dpid": row.dpid, "name": row.data_source, "received": 0, "stored": 0}
        )
        entry["received"] += row.counts["records_received"]
        entry["stored"] += row.counts["stored_records"]
    for entry in summary.values():
        entry["success"] = success_percent(entry["stored"], entry["received"])
    return render(
        request,
        "portal/receipts.html",
        {
            "receipts": receipts,
            "summary": sorted(summary.values(), key=lambda e: e["dpid"]),
            "nav": "receipts",
        },
    )


@partner_required
def receipt_view(request: HttpRequest, pk: int) -> HttpResponse:
    context = receipt_context(_receipt(request, pk)) | {"nav": "receipts"}
    return render(request, "portal/receipt.html", context)


@partner_required
def receipt_workbook_view(request: HttpRequest, pk: int) -> FileResponse:
    return receipt_workbook_response(_receipt(request, pk))


@staff_member_required
def view_as_view(request: HttpRequest, pid: int) -> HttpResponse:
    """Staff: see the portal as this partner sees it (until they pick another)."""
    partner = get_object_or_404(Partner, pk=pid)
    request.session[VIEW_AS_SESSION_KEY] = partner.pk
    return redirect("portal:files")


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text="An inbound file (ftp_dpm_…, .sync or .overwrite, optionally .gz or .pgp) or"
        " an ID-sync file (adobe_id_… / c2c_id_…), named as it would be on the drop zone."
    )


@csrf_exempt  # the upload handlers are set before the body is read; CSRF checked below
@partner_required
def upload_view(request: HttpRequest) -> HttpResponse:
    handler = upload_handler_install(request)
    return _upload(request, handler)


@csrf_protect
def _upload(request: HttpRequest, handler: PortalUploadHandler) -> HttpResponse:
    partner = _partner(request)
    form = UploadForm()
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if handler.too_big:
            form.add_error(
                "file",
                f"the file is larger than the {filesizeformat(settings.PORTAL_UPLOAD_MAX_BYTES)}"
                " upload limit",
            )
        elif form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                if "check" in request.POST:
                    stored, report = upload_check(partner=partner, upload=upload)
                    return render(
                        request,
                        "portal/dry_run.html",
                        {"report": report, "token": upload_token(stored), "nav": "upload"},
                    )
                registration = upload_accept(
                    partner=partner, upload=upload, via=InboundFile.Via.UPLOAD
                )
            except InboundRejected as exc:
                form.add_error("file", exc.reason)
            else:
                messages.success(request, registration_message(upload.name or "", registration))
                return redirect("portal:files")
    context = {
        "form": form,
        "sources": partner_data_sources(partner),
        "examples": upload_examples(partner),
        "nav": "upload",
    }
    return render(request, "portal/upload.html", context)


@require_POST
@partner_required
def process_checked_view(request: HttpRequest) -> HttpResponse:
    """ "Process this file": the checked file becomes a real delivery, without a new upload."""
    partner = _partner(request)
    name = request.POST.get("name", "")
    try:
        stored = upload_checked(partner=partner, token=request.POST.get("token", ""), name=name)
        registration = upload_register(partner=partner, stored=stored, via=InboundFile.Via.UPLOAD)
    except InboundRejected as exc:
        messages.error(request, name_and_problem(name, exc.reason))
        return redirect("portal:upload")
    messages.success(request, registration_message(name, registration))
    return redirect("portal:files")


def _reset_rate(group: str, request: HttpRequest) -> str:
    return str(settings.PASSWORD_RESET_RATE)


def _reset_address_rate(group: str, request: HttpRequest) -> str:
    return str(settings.PASSWORD_RESET_ADDRESS_RATE)


def _reset_pair(group: str, request: HttpRequest) -> str:
    """The pair (e-mail address typed, client address). The typed address is compared as
    Django's reset form compares it to the accounts' (NFKC, case folded, stripped), so every
    spelling that reaches one account counts as one."""
    typed = unicodedata.normalize("NFKC", request.POST.get("email", "")).strip().casefold()
    return f"{typed}|{client_address(request)}"


class PasswordResetView(auth_views.PasswordResetView):
    """Django's, with the link on the configured base URL (as every e-mailed link is), not
    on whatever host the request named."""

    def form_valid(self, form: Any) -> HttpResponse:
        self.extra_email_context = {"base_url": settings.PORTAL_BASE_URL}
        return super().form_valid(form)


def reset_rate_limited(view: Callable[..., Any]) -> Callable[..., Any]:
    """At most PASSWORD_RESET_RATE reset requests per pair (address typed, client address),
    and PASSWORD_RESET_ADDRESS_RATE per client address: a stranger asking for someone's
    resets uses up only their own pair, never the owner's. The same for every address typed,
    so it tells nothing of which ones have an account."""
    view = ratelimit(key=_reset_pair, rate=_reset_rate, method="POST", block=True)(view)
    view = ratelimit(key="ip", rate=_reset_address_rate, method="POST", block=True)(view)
    return view


def rate_limited_view(request: HttpRequest, exception: Exception) -> HttpResponse:
    """RATELIMIT_VIEW: a request over its rate limit (password resets)."""
    message = (
        "There were too many password reset requests from your network, for this e-mail"
        " address or for all addresses together. Try again in an hour; a link sent earlier"
        " still works."
    )
    return render(request, "portal/message.html", {"message": message}, status=429)


@partner_required
def upload_name_check_view(request: HttpRequest) -> JsonResponse:
    """The server's verdict on a file name, asked by the upload page as soon as a file is
    chosen (one grammar, one set of ownership checks, one wording)."""
    name = request.GET.get("name", "")
    problem = upload_name_refusal(partner=_partner(request), name=name)
    message = name_and_problem(name, problem) if problem else None
    return JsonResponse({"problem": problem, "message": message})


@partner_required
def api_token_view(request: HttpRequest) -> HttpResponse:
    """The partner's API token: when it was made, and a button to make a new one (shown
    once; the old one, if there was one, stops working)."""
    partner = _partner(request)
    token, replaced = None, False
    if request.method == "POST":
        replaced = PartnerAPIToken.objects.filter(partner=partner).exists()
        token = api_token_rotate(partner=partner, by=request.user.get_username())
    current = PartnerAPIToken.objects.filter(partner=partner).first()
    context = {"token": token, "replaced": replaced, "current": current, "nav": "api_token"}
    return render(request, "portal/api_token.html", context)


@partner_required
def api_help_view(request: HttpRequest) -> HttpResponse:
    """What the API does and how to call it (partners never see the README)."""
    partner = _partner(request)
    context = {
        "base_url": settings.PORTAL_BASE_URL,
        "examples": api_examples(partner, base_url=settings.PORTAL_BASE_URL),
        "has_token": PartnerAPIToken.objects.filter(partner=partner).exists(),
        "nav": "api_help",
    }
    return render(request, "portal/api_help.html", context)


REPORT_DEFAULT_DAYS = 30
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _default_range() -> dict[str, Any]:
    today = timezone.now().date()
    return {"start": today - timedelta(days=REPORT_DEFAULT_DAYS - 1), "end": today}


@partner_required
def onboarding_report_view(request: HttpRequest) -> HttpResponse:
    """The admin's onboarding status report (the same rows, chart and XLSX), for the
    partner's own data sources."""
    partner = _partner(request)
    export = request.GET.get("format") == "xlsx"
    chosen = request.GET.copy()
    chosen.pop("format", None)
    # Nothing chosen yet (a first visit, or a bare ?format=xlsx): the last 30 days.
    form = PartnerReportForm(chosen or _default_range(), partner=partner)
    context: dict[str, Any] = {"form": form, "counters": REPORT_COUNTERS, "nav": "report"}
    if form.is_valid():
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        dpids = [source.dpid for source in form.cleaned_data["data_sources"]]
        rows = partner_onboarding_report_rows(partner, start=start, end=end, dpids=dpids)
        if export:
            response = HttpResponse(onboarding_report_xlsx(rows), content_type=XLSX)
            name = f"onboarding-{partner.pk}-{start:%Y%m%d}-{end:%Y%m%d}.xlsx"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        # The export link spells out the days and data sources shown, so it exports them.
        query = QueryDict(mutable=True)
        query["start"], query["end"] = start.isoformat(), end.isoformat()
        query.setlist("data_sources", [str(dpid) for dpid in dpids])
        query["format"] = "xlsx"
        context |= {
            "rows": rows,
            # Each row's counters with their labels (a phone shows them as labelled lines).
            "table": [
                (row, [(label, row.counts[field]) for field, label in REPORT_COUNTERS])
                for row in rows
            ],
            "totals": onboarding_report_totals(rows),
            "days": onboarding_report_days(rows, start=start, end=end),
            "xlsx_query": query.urlencode(),
        }
    return render(request, "portal/report.html", context)


@partner_required
def outbound_view(request: HttpRequest) -> HttpResponse:
    """The outbound history: the partner's destinations, and their runs in a date range."""
    partner = _partner(request)
    destinations = partner_destinations(partner)
    form = OutboundHistoryForm(request.GET or _default_range(), partner=partner)
    runs = None
    if destinations and form.is_valid():
        runs = partner_outbound_history(
            partner,
            start=form.cleaned_data["start"],
            end=form.cleaned_data["end"],
            destination=form.cleaned_data["destination"],
        )[:PAGE]
    context = {
        "destinations": destinations,
        "form": form,
        "runs": runs,
        "retention_days": settings.OUTBOUND_RETENTION_DAYS,
        "nav": "outbound",
    }
    return render(request, "portal/outbound.html", context)


@partner_required
def outbound_run_view(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(partner_outbound_runs(_partner(request)), pk=pk)
    context = {
        "run": run,
        "files": run.files.order_by("sequence"),
        "retention_days": settings.OUTBOUND_RETENTION_DAYS,
        "nav": "outbound",
    }
    return render(request, "portal/outbound_run.html", context)


def favicon_view(request: HttpRequest) -> FileResponse:
    """/favicon.ico, which browsers ask every site for (the admin's pages have no icon link):
    served from the app itself, so it answers wherever the static files are served."""
    response = FileResponse(FAVICON.open("rb"), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
