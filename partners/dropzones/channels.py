"""A drop zone as a django-storages storage, and the listing of what a partner put there.

The storage (S3Storage, SFTPStorage, FileSystemStorage) is rooted at the channel's prefix,
so a file's name in it is ``<partner slug>/date=YYYY-MM-DD/<file name>``. Listing uses each
service's own cheap call (one S3 LIST per 1,000 keys, one SFTP readdir per folder), never a
request per file.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.files.storage import FileSystemStorage, Storage
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR
from paramiko.sftp_attr import SFTPAttributes
from storages.backends.s3 import S3Storage
from storages.backends.sftpstorage import SFTPStorage

from partners.models import CREDENTIALS_PREFIX, CREDENTIALS_REF, InboundChannel

STORAGE_PREFIX = "channel:"  # InboundFile.storage of a drop-zone file: "channel:<id>"
_DATE_FOLDER = re.compile(r"date=(\d{4})-(\d{2})-(\d{2})")


@dataclass(frozen=True)
class ListedObject:
    path: str  # under the channel's prefix: "<slug>/date=YYYY-MM-DD/<name>"
    size: int
    version: str  # S3: the ETag; SFTP / local: size and modification time


def channel_storage_alias(channel: InboundChannel) -> str:
    return f"{STORAGE_PREFIX}{channel.pk}"


def _secret(channel: InboundChannel) -> str:
    """The credentials the channel refers to (a setting, else an environment variable), by
    a name in the credentials namespace only, checked again here: a reference stored before
    the rule (or written around the model) must not read another setting."""
    ref = channel.credentials_ref
    if not ref:
        return ""
    try:
        CREDENTIALS_REF(ref)
    except ValidationError:
        raise ImproperlyConfigured(
            f"channel {channel.pk}: credentials reference {ref[:40]!r} is not a name starting"
            f" with {CREDENTIALS_PREFIX}; nothing was read"
        ) from None
    value = getattr(settings, ref, None) or os.environ.get(ref)
    if not value:
        raise ImproperlyConfigured(
            f"channel {channel.pk}: neither a setting nor an environment variable {ref} is set"
        )
    return str(value)


def channel_storage(channel: InboundChannel) -> Storage:
    """The channel's drop zone as a django-storages storage."""
    if channel.kind == InboundChannel.Kind.S3:
        access, _, secret = _secret(channel).partition(":")
        return S3Storage(
            bucket_name=channel.bucket,
            location=channel.prefix.strip("/"),
            region_name=channel.region or None,
            endpoint_url=channel.endpoint_url or None,
            access_key=access or None,
            secret_key=secret or None,
            file_overwrite=True,
        )
    if channel.kind == InboundChannel.Kind.SFTP:
        params: dict[str, object] = {"port": channel.port, "username": channel.username}
        secret = _secret(channel)
        if secret.startswith("key:"):
            params["key_filename"] = secret.removeprefix("key:")
        elif secret:
            params["password"] = secret
        return SFTPStorage(
            host=channel.host,
            params=params,
            root_path=channel.prefix.rstrip("/") or ".",
            known_host_file=getattr(settings, "SFTP_KNOWN_HOST_FILE", None),
        )
    return FileSystemStorage(location=channel.prefix)


def channel_list(channel: InboundChannel, storage: Storage) -> Iterator[ListedObject]:
    """Every file under the partner's folder of the channel (any depth; the layout is
    checked by the poller, which says what is wrong with a misplaced file)."""
    folder = channel.partner.slug
    if isinstance(storage, S3Storage):
        prefix = f"{storage.location}/{folder}/" if storage.location else f"{folder}/"
        pages = storage.connection.meta.client.get_paginator("list_objects_v2").paginate(
            Bucket=storage.bucket_name, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a "folder" marker
                yield ListedObject(key[len(prefix) - len(folder) - 1 :], item["Size"], item["ETag"])
    elif isinstance(storage, SFTPStorage):
        yield from _sftp_walk(storage, folder)
    elif isinstance(storage, FileSystemStorage):
        root = storage.path("")
        for current, _, names in os.walk(os.path.join(root, folder)):
            for name in names:
                full = os.path.join(current, name)
                info = os.stat(full)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                yield ListedObject(rel, info.st_size, f"{info.st_size}:{info.st_mtime_ns}")
    else:  # pragma: no cover - the three kinds above are all there is
        raise ImproperlyConfigured(f"cannot list {type(storage).__name__}")


def _sftp_listdir(storage: SFTPStorage, path: str) -> list[SFTPAttributes]:
    """paramiko's ``listdir_attr``, except that a name which is not UTF-8 comes back with
    its bytes as lone surrogates (as ``os.listdir`` gives them) instead of failing the
    whole folder: one such name must not hide the good files beside it."""
    sftp = storage.sftp
    kind, message = sftp._request(CMD_OPENDIR, path)
    if kind != CMD_HANDLE:
        raise OSError(f"cannot open the folder {path}")
    handle = message.get_binary()
    entries = []
    try:
        while True:
            try:
                kind, message = sftp._request(CMD_READDIR, handle)
            except EOFError:
                break
            if kind != CMD_NAME:
                raise OSError(f"cannot read the folder {path}")
            for _ in range(message.get_int()):
                name = message.get_string().decode("utf-8", "surrogateescape")
                longname = message.get_string().decode("utf-8", "replace")
                entry = SFTPAttributes._from_msg(message, name, longname)  # type: ignore[attr-defined]
                if name not in (".", ".."):
                    entries.append(entry)
    finally:
        sftp._request(CMD_CLOSE, handle)
    return entries


def _sftp_walk(storage: SFTPStorage, folder: str) -> Iterator[ListedObject]:
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = _sftp_listdir(storage, storage._remote_path(current))
        except FileNotFoundError:
            continue
        for entry in entries:
            path = posixpath.join(current, entry.filename)
            if stat.S_ISDIR(entry.st_mode or 0):
                if not _utf8(path):
                    continue  # a folder whose name is not UTF-8 cannot be opened by name
                pending.append(path)
            elif stat.S_ISREG(entry.st_mode or 0):
                size = entry.st_size or 0
                yield ListedObject(path, size, f"{size}:{entry.st_mtime}")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def delivery_date(path: str, slug: str) -> date | None:
    """The date of the ``date=YYYY-MM-DD`` folder a file is in (None: not in the layout)."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != slug:
        return None
    match = _DATE_FOLDER.fullmatch(parts[1])
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None
