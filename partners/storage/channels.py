"""A partner's channel (its drop zone, where its exports go too) as a django-storages storage.

The storage (S3Storage, SFTPStorage, FileSystemStorage) is rooted at the channel's prefix,
so a file's name in it is ``<partner slug>/…``. Credentials come from the settings or the
environment, by a name in the credentials namespace only, never from the database.
"""

from __future__ import annotations

import os
import time

import paramiko
from botocore.config import Config
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


class ChannelTimeout(TimeoutError):
    """A drop zone's server that did not answer in time, said in words."""


class ChannelSFTPStorage(SFTPStorage):
    """SFTPStorage whose session gives up on a server silent for ``DROPZONE_READ_TIMEOUT``
    seconds (paramiko waits for ever by default: a server that accepts the connection and
    then stalls would hold the worker for good)."""

    def _connect(self) -> None:
        started = time.monotonic()
        try:
            super()._connect()
        except paramiko.AuthenticationException:
            raise
        except (paramiko.SSHException, OSError) as exc:
            # paramiko's words for a connection that ran out of time depend on the step it
            # was at ("No existing session" after a silent key exchange): said plainly.
            connect = settings.DROPZONE_CONNECT_TIMEOUT
            if time.monotonic() - started >= connect:
                raise ChannelTimeout(
                    f"the server did not finish connecting within {connect:g} s"
                    f" (DROPZONE_CONNECT_TIMEOUT): {exc or type(exc).__name__}"
                ) from exc
            raise
        if self._sftp is not None:
            self._sftp.get_channel().settimeout(settings.DROPZONE_READ_TIMEOUT)


def channel_storage(channel: InboundChannel) -> Storage:
    """The channel's drop zone as a django-storages storage, each network wait bounded
    (``DROPZONE_CONNECT_TIMEOUT``, ``DROPZONE_READ_TIMEOUT``)."""
    connect, read = settings.DROPZONE_CONNECT_TIMEOUT, settings.DROPZONE_READ_TIMEOUT
    if channel.kind == InboundChannel.Kind.S3:
        access, _, secret = _secret(channel).partition(":")
        storage = S3Storage(
            bucket_name=channel.bucket,
            location=channel.prefix.strip("/"),
            region_name=channel.region or None,
            endpoint_url=channel.endpoint_url or None,
            access_key=access or None,
            secret_key=secret or None,
            file_overwrite=True,
        )
        # On the storage's own configuration (addressing style, signature, proxies); the
        # client is made later, on first use.
        storage.client_config = storage.client_config.merge(
            Config(connect_timeout=connect, read_timeout=read)
        )
        return storage
    if channel.kind == InboundChannel.Kind.SFTP:
        params: dict[str, object] = {
            "port": channel.port,
            "username": channel.username,
            # paramiko's own, each a wait of its own: the TCP connection and key exchange,
            # the server's banner, authentication, opening the SFTP session.
            "timeout": connect,
            "banner_timeout": connect,
            "auth_timeout": connect,
            "channel_timeout": connect,
        }
        secret = _secret(channel)
        if secret.startswith("key:"):
            params["key_filename"] = secret.removeprefix("key:")
        elif secret:
            params["password"] = secret
        return ChannelSFTPStorage(
            host=channel.host,
            params=params,
            root_path=channel.prefix.rstrip("/") or ".",
            known_host_file=getattr(settings, "SFTP_KNOWN_HOST_FILE", None),
        )
    return FileSystemStorage(location=channel.prefix)
