"""Admin pages for the taxonomy workbook (thin: parse the request, call the service)."""

from __future__ import annotations

import io

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone

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


@permission_required("segments.view_trait", raise_exception=True)
def taxonomy_view(request: HttpRequest) -> HttpResponse:
    errors: list[str] = []
    importable = sheets_importable(request.user)
    can_import = bool(importable)
    if request.method == "POST" and can_import:
        form = TaxonomyImportForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                result = taxonomy_import(workbook=form.cleaned_data["workbook"], user=request.user)
            except TaxonomyImportError as exc:
                errors = exc.errors
            else:
                messages.success(request, f"Taxonomy imported. {result.summary()}.")
                return redirect("admin:taxonomy")
    else:
        form = TaxonomyImportForm()
    context = {
        **admin.site.each_context(request),
        "title": "Taxonomy workbook",
        "form": form,
        "errors": errors,
        "can_import": can_import,
        "viewable": [sheet.name for sheet in sheets_viewable(request.user)],
        "importable": [sheet.name for sheet in importable],
        "all_sheets": len(importable) == len(sheets_viewable(None)),
    }
    return TemplateResponse(request, "admin/taxonomy.html", context)
