"""A partner's channel (its drop zone, where its exports go too) as a django-storages storage.

The storage (S3Storage, SFTPStorage, FileSystemStorage) is rooted at the channel's prefix,
so a file's name in it is ``<partner slug>/…``. Credentials come from the settings or the
environment, by a name in the credentials namespace only, never from the database.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.files.storage import FileSystemStorage, Storage
from storages.backends.s3 import S3Storage
from storages.backends.sftpstorage import SFTPStorage

from partners.models import CREDENTIALS_PREFIX, CREDENTIALS_REF, InboundChannel

CHANNEL_ALIAS_PREFIX = "channel:"  # InboundFile.storage of a drop-zone file: "channel:<id>"


def channel_storage_alias(channel: InboundChannel) -> str:
    return f"{CHANNEL_ALIAS_PREFIX}{channel.pk}"


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
