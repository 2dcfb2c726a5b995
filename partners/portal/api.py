"""The partners' JSON API (their own automation): files, receipts, upload, dry run.
Authenticated by the partner's API token (``Authorization: Bearer <token>``), not by a
session, so CSRF does not apply; every read is scoped to the token's partner."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from partners.idsync.optouts import MAX_OPT_OUTS_PER_CALL, optouts_record
from partners.inbound.errors import InboundRejected
from partners.models import InboundFile, Partner, PartnerAPIToken, Receipt
from partners.portal.selectors import file_status_rows, partner_recent_files
from partners.portal.uploads import (
    upload_accept,
    upload_check,
    upload_checked,
    upload_handler_install,
    upload_register,
    upload_token,
)
from partners.receipts.render import receipt_counters_json, receipt_json

TOKEN_PREFIX = "s2s_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def api_token_rotate(*, partner: Partner, by: str) -> str:
    """A new token for ``partner`` (returned once); the previous one stops working."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    PartnerAPIToken.objects.update_or_create(
        partner=partner,
        defaults={"key_sha256": _digest(token), "prefix": token[:12], "created_by": by},
    )
    return token


def api_partner(request: HttpRequest) -> Partner | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    token = header[len("Bearer ") :].strip()
    found = PartnerAPIToken.objects.select_related("partner").filter(key_sha256=_digest(token))
    row = found.first()
    return row.partner if row and row.partner.active else None


def _error(status: int, msg: str, field: str | None = None) -> JsonResponse:
    error: dict[str, Any] = {"msg": msg}
    if field:
        error["field"] = field
    return JsonResponse({"errors": [error]}, status=status)


def token_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        partner = api_partner(request)
        if partner is None:
            response = _error(401, "give a valid API token: Authorization: Bearer <token>")
            response["WWW-Authenticate"] = "Bearer"
            return response
        request.partner = partner  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapped)


@token_required
@require_http_methods(["GET", "POST"])
def files_api(request: HttpRequest) -> HttpResponse:
    """GET: the partner's files and their status. POST: a delivery, either the multipart
    ``file``, or the ``token`` and ``name`` a dry run gave (the checked file, processed)."""
    partner: Partner = request.partner  # type: ignore[attr-defined]
    if request.method == "POST":
        handler = upload_handler_install(request)
        upload = request.FILES.get("file")
        if handler.too_big:
            return _error(
                413,
                f"the file is larger than the {settings.PORTAL_UPLOAD_MAX_BYTES} byte limit",
                "file",
            )
        token, name = request.POST.get("token"), request.POST.get("name", "")
        if upload is None and not token:
            return _error(
                400, "send the file as the multipart field 'file' (or a dry run's token)", "file"
            )
        try:
            if upload is not None:
                registration = upload_accept(
                    partner=partner, upload=upload, via=InboundFile.Via.API
                )
            else:
                stored = upload_checked(partner=partner, token=token or "", name=name)
                registration = upload_register(
                    partner=partner, stored=stored, via=InboundFile.Via.API
                )
        except InboundRejected as exc:
            return _error(400, exc.reason, "file" if upload is not None else "token")
        batches = registration.batches + registration.waiting
        files = InboundFile.objects.filter(batch__in=batches) | InboundFile.objects.filter(
            pk__in=[f.pk for f in registration.duplicates]
        )
        return JsonResponse({"files": file_status_rows(files.select_related("batch"))}, status=201)
    files = partner_recent_files(partner, limit=500)
    return JsonResponse({"files": file_status_rows(files)})


@token_required
@require_http_methods(["GET"])
def receipt_api(request: HttpRequest, pk: int) -> HttpResponse:
    partner: Partner = request.partner  # type: ignore[attr-defined]
    receipt = Receipt.objects.select_related("batch").filter(pk=pk, batch__partner=partner).first()
    if receipt is None:
        return _error(404, "no such receipt")
    return JsonResponse({"id": receipt.pk, "batch": receipt.batch.key, **receipt_json(receipt)})


@token_required
@require_http_methods(["POST"])
def dry_run_api(request: HttpRequest) -> HttpResponse:
    """POST (multipart ``file``): the check of a trait file; nothing applied."""
    partner: Partner = request.partner  # type: ignore[attr-defined]
    handler = upload_handler_install(request)
    upload = request.FILES.get("file")
    if handler.too_big or upload is None:
        return _error(
            400, "send the file (within the upload limit) as the multipart field 'file'", "file"
        )
    try:
        stored, report = upload_check(partner=partner, upload=upload)
    except InboundRejected as exc:
        return _error(400, exc.reason, "file")
    return JsonResponse(
        {
            "name": report.name,
            "target_dpid": report.target_dpid,
            "complete": report.complete,
            "stopped": report.stopped,  # "", "lines", "bytes" or "time"
            "bytes_read": report.bytes_read,  # plain bytes (inflated, decrypted)
            "stored_bytes_read": report.stored_bytes_read,  # of the file as delivered
            "extent": report.extent,
            # What processing the lines read gives: the receipt's counters, by the same names.
            "lines": report.lines,
            **receipt_counters_json(report.receipt),
            "user_ids_valid": report.user_ids_valid,
            "user_ids_matched": report.user_ids_matched,
            "match_rate": report.match_rate,
            "realized": {str(sid): n for sid, _, n in report.realized_traits},
            "removed": {str(sid): n for sid, _, n in report.removed_traits},
            "errors": report.receipt.errors_sample,
            "process": {"token": upload_token(stored), "name": report.name},
        }
    )


@token_required
@require_http_methods(["POST"])
def optouts_api(request: HttpRequest) -> HttpResponse:
    """POST ``{"ids": [{"dpid": 21, "dpuuid": "u1"}, …]}``: the data source's opt-outs; each
    ID is never mapped again, to anyone, and its mappings go. Bad items are listed by index in
    ``rejected``; the others are recorded."""
    partner: Partner = request.partner  # type: ignore[attr-defined]
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the body is not JSON", "ids")
    items = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        return _error(400, 'send {"ids": [{"dpid": <DPID>, "dpuuid": "<DPUUID>"}, …]}', "ids")
    if len(items) > MAX_OPT_OUTS_PER_CALL:
        return _error(400, f"at most {MAX_OPT_OUTS_PER_CALL} IDs in one call", "ids")
    result = optouts_record(partner=partner, items=items)
    return JsonResponse(
        {
            "opted_out": result.opted_out,
            "mappings_deleted": result.mappings_deleted,
            "rejected": result.rejected,
        }
    )
