"""The partners' JSON API (their own automation): files, receipts, upload, dry run.
Authenticated by the partner's API token (``Authorization: Bearer <token>``), not by a
session, so CSRF does not apply; every read is scoped to the token's partner."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from partners.idsync.optouts import MAX_OPT_OUTS_PER_CALL, optouts_record
from partners.inbound.errors import InboundRejected
from partners.inbound.registration import Registration
from partners.inbound.split_parts import split_parts_summaries
from partners.models import InboundFile, Partner, PartnerAPIToken, Receipt
from partners.portal.selectors import batch_parts_json, file_status_rows, partner_files_after
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
    """The API's views: the token's partner on the request; and a body Django refuses to
    read (past ``DATA_UPLOAD_MAX_MEMORY_SIZE``, too many fields or files) answered in the
    API's JSON error shape rather than Django's HTML 400."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        partner = api_partner(request)
        if partner is None:
            response = _error(401, "give a valid API token: Authorization: Bearer <token>")
            response["WWW-Authenticate"] = "Bearer"
            return response
        request.partner = partner  # type: ignore[attr-defined]
        field = "ids" if request.path.endswith("/optouts") else "file"
        try:
            return view(request, *args, **kwargs)
        except RequestDataTooBig:
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return _error(413, f"the body is larger than the {limit:,} byte limit", field)
        except (TooManyFieldsSent, TooManyFilesSent):
            return _error(400, "too many form fields or files in one call", field)

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
        return JsonResponse(_registration_answer(registration), status=201)
    return _files_list(request, partner)


def _files_list(request: HttpRequest, partner: Partner) -> HttpResponse:
    """GET /api/v1/files: a page of the partner's files and the ``next`` page's link."""
    try:
        after = _cursor_read(request.GET.get("cursor"))
    except ValueError:
        return _error(400, "this cursor is not one we gave: follow the 'next' link", "cursor")
    try:
        limit = _limit_read(request.GET.get("limit"))
    except ValueError:
        return _error(400, f"limit is a number of files, 1 to {FILES_PAGE_MAX}", "limit")
    files = partner_files_after(partner, after=after, limit=limit)
    next_url = None
    if len(files) > limit:
        files = files[:limit]
        query = QueryDict(mutable=True)
        query["cursor"] = _cursor_make(files[-1])
        if request.GET.get("limit"):
            query["limit"] = str(limit)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return JsonResponse({"files": file_status_rows(files), "next": next_url})


# GET /api/v1/files: files a page (``?limit=``, at most FILES_PAGE_MAX), newest first; the
# ``next`` link carries a cursor (the last file's time received and ID), so files arriving
# meanwhile neither repeat nor hide a row of the pages still to read.
FILES_PAGE = 100
FILES_PAGE_MAX = 500


def _limit_read(raw: str | None) -> int:
    if raw is None or raw == "":
        return FILES_PAGE
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= FILES_PAGE_MAX:
        raise ValueError(raw)  # past the most a page holds: said, never quietly fewer
    return int(raw)


def _cursor_make(file: InboundFile) -> str:
    text = f"{file.received_at.isoformat()}|{file.pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _cursor_read(raw: str | None) -> tuple[datetime, int] | None:
    """The file a cursor names (ValueError when it is not one :func:`_cursor_make` made)."""
    if raw is None:
        return None
    if len(raw) > 100:
        raise ValueError("too long")
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        stamp, _, pk = text.partition("|")
        received = datetime.fromisoformat(stamp)
        # In UTC, as we make them: PostgreSQL takes offsets of less than 16 hours only
        # (Python up to 24), and a time at either end of the calendar may not fit in UTC.
        if received.tzinfo is not None:
            received = received.astimezone(UTC)
    except (ValueError, binascii.Error, OverflowError) as exc:
        raise ValueError(raw) from exc
    if received.tzinfo is None or not (pk.isascii() and pk.isdigit()) or int(pk) > BIGINT_MAX:
        raise ValueError(raw)
    return received, int(pk)


BIGINT_MAX = 2**63 - 1  # the largest ID PostgreSQL holds


def _registration_answer(registration: Registration) -> dict[str, Any]:
    """The answer to a delivery: the file it made (a split part's own row, not every part's)
    and, for a part of a split file, its batch summed up in bounded words."""
    parts = split_parts_summaries([batch.pk for batch in registration.parts_of])
    files = [*registration.files, *registration.duplicates]
    answer: dict[str, Any] = {"files": file_status_rows(files, parts=parts)}
    for batch in registration.parts_of[:1]:  # an upload is one file: one batch at most
        answer["batch"] = batch_parts_json(batch, parts[batch.pk])
    return answer


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
    except RecursionError:  # arrays nested thousands deep: no list of IDs is
        return _error(400, "the body is JSON nested too deep", "ids")
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
