"""Admin pages for the taxonomy workbook (thin: parse the request, call the service)."""

from __future__ import annotations

import io

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.decorators import permission_required
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from partners.taxonomy import (
    TaxonomyImportError,
    sheets_importable,
    sheets_viewable,
    taxonomy_export,
    taxonomy_import,
)

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class TaxonomyImportForm(forms.Form):
    workbook = forms.FileField(
        label="Taxonomy workbook (.xlsx)",
        widget=forms.ClearableFileInput(attrs={"accept": ".xlsx"}),
    )


@permission_required("segments.view_trait", raise_exception=True)
def taxonomy_export_view(request: HttpRequest) -> HttpResponse:
    buffer = io.BytesIO()
    taxonomy_export(output=buffer, user=request.user)
    filename = f"taxonomy-{timezone.now():%Y%m%d-%H%M%S}.xlsx"
    response = HttpResponse(buffer.getvalue(), content_type=XLSX)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class WorkbookUploadHandler(TemporaryFileUploadHandler):
    """Streams the workbook to a temporary file and stops it as soon as it passes
    TAXONOMY_MAX_BYTES (the rest is not kept; the page then says so)."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.too_big = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > settings.TAXONOMY_MAX_BYTES:
            self.too_big = True
            raise StopUpload(connection_reset=False)
        return super().receive_data_chunk(raw_data, start)


@csrf_exempt  # the upload handler is set before the body is read; CSRF is checked below
@permission_required("segments.view_trait", raise_exception=True)
def taxonomy_view(request: HttpRequest) -> HttpResponse:
    handler = WorkbookUploadHandler(request)
    request.upload_handlers = [handler]
    return _taxonomy_page(request, handler)


def _problems(count: int) -> str:
    return f"{count:,} problem{'' if count == 1 else 's'}"


@csrf_protect
def _taxonomy_page(request: HttpRequest, handler: WorkbookUploadHandler) -> HttpResponse:
    refused: TaxonomyImportError | None = None
    importable = sheets_importable(request.user)
    can_import = bool(importable)
    if request.method == "POST" and can_import:
        form = TaxonomyImportForm(request.POST, request.FILES)
        if handler.too_big:
            limit = settings.TAXONOMY_MAX_BYTES
            refused = TaxonomyImportError(
                [f"the workbook is larger than {limit:,} bytes (TAXONOMY_MAX_BYTES)"]
            )
            # The upload was stopped, so the bound form would add "This field is required."
            # beside the one true reason.
            form = TaxonomyImportForm()
        elif form.is_valid():
            try:
                result = taxonomy_import(workbook=form.cleaned_data["workbook"], user=request.user)
            except TaxonomyImportError as exc:
                refused = exc
            else:
                messages.success(request, f"Taxonomy imported. {result.summary()}.")
                return redirect("admin:taxonomy")
    else:
        form = TaxonomyImportForm()
    context = {
        **admin.site.each_context(request),
        "title": "Taxonomy workbook",
        "form": form,
        "errors": refused.lines if refused else [],
        "problems": _problems(refused.count) if refused else "",
        "can_import": can_import,
        "viewable": [sheet.name for sheet in sheets_viewable(request.user)],
        "importable": [sheet.name for sheet in importable],
        "all_sheets": len(importable) == len(sheets_viewable(None)),
        "errors_shown": settings.TAXONOMY_ERRORS_SHOWN,
        "max_rows": f"{settings.TAXONOMY_MAX_ROWS:,}",
        "max_bytes": settings.TAXONOMY_MAX_BYTES,
    }
    return TemplateResponse(request, "admin/taxonomy.html", context)
