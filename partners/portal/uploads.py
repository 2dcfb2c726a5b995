"""Files uploaded through the portal (web form and API): streamed with a size limit, kept in
the upload storage, checked by name and ownership, registered and queued like any other
delivery."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.core.files.storage import Storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.db import transaction
from django.http import HttpRequest

from partners.inbound.dryrun import DryRunReport, inbound_dry_run
from partners.inbound.errors import InboundRejected
from partners.inbound.names import FileNameError, parse_inbound_file_name
from partners.inbound.queueing import registration_enqueue
from partners.inbound.registration import Registration, inbound_files_register
from partners.models import InboundFile, Partner
from partners.storage import UPLOAD_STORAGE, StoredFile, storage_get


class PortalUploadHandler(TemporaryFileUploadHandler):
    """Streams an upload to a temporary file in chunks (never whole into memory), stops it as
    soon as it passes PORTAL_UPLOAD_MAX_BYTES (before the rest is read; the view then says
    so), and hashes it on the way, so the stored file is never read again to be checked."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.too_big = False
        self._digest = hashlib.sha256()

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self._digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > settings.PORTAL_UPLOAD_MAX_BYTES:
            self.too_big = True
            raise StopUpload(connection_reset=False)
        self._digest.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int) -> UploadedFile | None:
        upload = super().file_complete(file_size)
        if upload is not None:
            upload.sha256 = self._digest.hexdigest()  # type: ignore[attr-defined]
        return upload


def upload_handler_install(request: HttpRequest) -> PortalUploadHandler:
    """Make the request's uploads go through :class:`PortalUploadHandler` (before its body
    is read)."""
    handler = PortalUploadHandler(request)
    request.upload_handlers = [handler]
    return handler


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


def problem_without_name(name: str, problem: str) -> str:
    """``problem`` as said next to ``name``: without the name it may start with (a batch's
    reason names its file: ``x.sync: the file is corrupt``) and with "the name" for the
    name it may quote (``'x.tsv' does not start with ftp_dpm_…``), so the name is read once."""
    problem = problem.removeprefix(f"{name}: ")
    quoted = f"'{name}' "
    return "the name " + problem.removeprefix(quoted) if problem.startswith(quoted) else problem


def name_and_problem(name: str, problem: str) -> str:
    """``name: problem``, the name said once."""
    return f"{name}: {problem_without_name(name, problem)}"


def _upload_folder(partner: Partner, token: str) -> str:
    return f"uploads/{partner.pk}/{token}"


def _storage() -> Storage:
    return storage_get(UPLOAD_STORAGE)


def upload_store(*, partner: Partner, upload: UploadedFile) -> StoredFile:
    """Keep an uploaded file (checked by name first) in the upload storage: S3 in
    production, where django-storages sends it in parts; the local file system in a demo,
    where the temporary file is moved, not copied."""
    name = upload.name or ""
    problem = upload_name_problem(name)
    if problem:
        raise InboundRejected(name, problem)
    path = _storage().save(f"{_upload_folder(partner, secrets.token_hex(8))}/{name}", upload)
    return StoredFile(
        name=name,
        storage=UPLOAD_STORAGE,
        path=path,
        size=upload.size or 0,
        sha256=getattr(upload, "sha256", None),
    )


def upload_token(stored: StoredFile) -> str:
    """What the page keeps of a checked file to process it later (with its name)."""
    return PurePosixPath(stored.path).parent.name


def upload_checked(*, partner: Partner, token: str, name: str) -> StoredFile:
    """A file this partner uploaded to check (to process it now), or why not."""
    gone = InboundRejected(name, "this checked file is no longer available: upload it again")
    if len(token) != 16 or not all(c in "0123456789abcdef" for c in token):
        raise gone
    if upload_name_problem(name):
        raise gone
    path = f"{_upload_folder(partner, token)}/{name}"
    storage = _storage()
    if not storage.exists(path):
        raise gone
    return StoredFile(name=name, storage=UPLOAD_STORAGE, path=path, size=storage.size(path))


def upload_register(
    *, partner: Partner, stored: StoredFile, via: str = InboundFile.Via.UPLOAD
) -> Registration:
    """Register a stored upload for ``partner`` (its DPIDs must be the partner's) and queue
    it once this transaction commits (a split part waits for the others). ``via``: the
    portal's upload page, or the API. On :class:`InboundRejected` the stored file is deleted
    and nothing is kept."""
    try:
        with transaction.atomic():
            registration = inbound_files_register(
                files=[stored], partner=partner, complete=False, via=via
            )
            registration_enqueue(registration)
    except Exception:
        # Refused, or anything unforeseen: a delivery that was not registered leaves nothing
        # behind in the storage either.
        upload_discard(stored)
        raise
    return registration


def upload_discard(stored: StoredFile) -> None:
    _storage().delete(stored.path)


def upload_check(*, partner: Partner, upload: UploadedFile) -> tuple[StoredFile, DryRunReport]:
    """ "Check only": keep the upload (to process it later without sending it again) and
    check its first lines; a file that cannot be processed at all is not kept."""
    stored = upload_store(partner=partner, upload=upload)
    try:
        report = inbound_dry_run(
            file=stored, partner=partner, sample_lines=settings.PORTAL_DRY_RUN_LINES
        )
    except InboundRejected:
        upload_discard(stored)
        raise
    return stored, report


def registration_message(name: str, registration: Registration) -> str:
    """What the partner is told once a file is received."""
    if registration.duplicates:
        return f"{name}: {registration.duplicates[0].error}, so not applied again."
    if registration.waiting:
        return (
            f"{name}: received. It is a part of a split file: the parts are processed together"
            " once all of them are here."
        )
    return f"{name}: received, queued."


def upload_accept(
    *, partner: Partner, upload: UploadedFile, via: str = InboundFile.Via.UPLOAD
) -> Registration:
    """An uploaded file, stored, registered and queued (see :func:`upload_register`)."""
    stored = upload_store(partner=partner, upload=upload)
    return upload_register(partner=partner, stored=stored, via=via)
