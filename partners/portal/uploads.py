"""Files uploaded through the portal: streamed to disk with a size limit, checked by name
and ownership, registered and queued like any other delivery."""

from __future__ import annotations

import functools
import secrets
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.db import transaction
from django.http import HttpRequest

from partners.inbound.names import FileNameError, parse_inbound_file_name
from partners.inbound.services import (
    InboundRejected,
    Registration,
    inbound_batch_enqueue,
    inbound_files_register,
)
from partners.models import Partner


class UploadLimitHandler(FileUploadHandler):
    """Stops an upload as soon as it passes PORTAL_UPLOAD_MAX_BYTES (checked while the bytes
    arrive, before the rest is read); the view then says so. Django's own handlers after it
    stream the file to a temporary file, never into memory whole."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.too_big = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > settings.PORTAL_UPLOAD_MAX_BYTES:
            self.too_big = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> Any:
        return None


def upload_limit_install(request: HttpRequest) -> UploadLimitHandler:
    """Put the limit first among the request's upload handlers (before its body is read)."""
    limit = UploadLimitHandler(request)
    request.upload_handlers = [limit, *request.upload_handlers]
    return limit


def upload_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be delivered (None when it can): the file-name grammar of SPEC §3.1
    and §2.2, in the same words as everywhere else. (Django already keeps only the last path
    component of an uploaded name and drops control characters.)"""
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        return "give the file's own name, without folders"
    try:
        parse_inbound_file_name(name)
    except FileNameError as exc:
        return str(exc)
    return None


def _spool_folder(partner: Partner, token: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "uploads" / str(partner.pk) / token


def upload_spool(*, partner: Partner, upload: UploadedFile) -> Path:
    """Keep an uploaded file in the partner's spool (checked by name first)."""
    name = upload.name or ""
    problem = upload_name_problem(name)
    if problem:
        raise InboundRejected(name, problem)
    folder = _spool_folder(partner, secrets.token_hex(8))
    folder.mkdir(parents=True)
    path = folder / name
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return path


def spooled_path(*, partner: Partner, token: str, name: str) -> Path:
    """A file this partner spooled before (a checked file to process now), or why not."""
    if len(token) != 16 or not all(c in "0123456789abcdef" for c in token):
        raise InboundRejected(name, "this checked file is no longer available: upload it again")
    if upload_name_problem(name):
        raise InboundRejected(name, "this checked file is no longer available: upload it again")
    path = _spool_folder(partner, token) / name
    if not path.is_file():
        raise InboundRejected(name, "this checked file is no longer available: upload it again")
    return path


def spooled_accept(*, partner: Partner, path: Path) -> Registration:
    """Register a spooled file for ``partner`` (its DPIDs must be the partner's) and queue
    its batch once this transaction commits. On :class:`InboundRejected` nothing is kept."""
    try:
        with transaction.atomic():
            registration = inbound_files_register(paths=[path], partner=partner)
            for batch in registration.batches:
                transaction.on_commit(functools.partial(inbound_batch_enqueue, batch=batch))
    except InboundRejected:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    return registration


def upload_accept(*, partner: Partner, upload: UploadedFile) -> Registration:
    """An uploaded file, spooled, registered and queued (see :func:`spooled_accept`)."""
    return spooled_accept(partner=partner, path=upload_spool(partner=partner, upload=upload))
