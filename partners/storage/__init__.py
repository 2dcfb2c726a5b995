"""Where files live, and how we use them: one module per storage backend over a small base
(:mod:`partners.storage.base`), the laying out of Django's session backends.

A file is a path on the worker's disk (the ``ingest`` command, alias ``""``), a name in a
Django storage (portal uploads in ``default``: the local file system in ``make demo``, S3 in
production), or a name in a partner's channel (alias ``channel:<id>``). Everything that
touches one goes through the functions here, which pick the backend for the storage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import Storage, storages
from paramiko import SSHException

from partners.models import InboundChannel
from partners.storage.base import (
    LOCAL,
    UPLOAD_STORAGE,
    ListedObject,
    StorageBackend,
    StorageReadError,
    StorageRefused,
    StoredFile,
)
from partners.storage.channels import CHANNEL_ALIAS_PREFIX, channel_storage, channel_storage_alias
from partners.storage.filesystem import FileSystemBackend
from partners.storage.s3 import S3Backend
from partners.storage.sftp import SFTPBackend

__all__ = [
    "LOCAL",
    "STORAGE_ERRORS",
    "UPLOAD_STORAGE",
    "ListedObject",
    "StorageReadError",
    "StorageRefused",
    "StoredFile",
    "channel_storage",
    "channel_storage_alias",
    "storage_backend",
    "storage_delete",
    "storage_get",
    "storage_opened",
    "storage_save_whole",
    "storage_walk",
    "stored_file_open",
]

# What a storage raises when it fails (a file system's OSError: a folder where a file was,
# permission denied; SFTP's; S3's), for work that must go on past one failed file.
STORAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SSHException,
    ClientError,
    BotoCoreError,
    StorageReadError,
)

_BACKENDS = (S3Backend(), SFTPBackend(), FileSystemBackend())
_GENERIC = StorageBackend()


def storage_backend(storage: Storage) -> StorageBackend:
    """The backend that knows this kind of storage (the generic one for any other)."""
    return next((b for b in _BACKENDS if isinstance(storage, b.storage_class)), _GENERIC)


def storage_get(alias: str) -> Storage:
    """A STORAGES alias (``default``), or ``channel:<id>``: a partner's channel."""
    if alias.startswith(CHANNEL_ALIAS_PREFIX):
        pk = int(alias.removeprefix(CHANNEL_ALIAS_PREFIX))
        return channel_storage(InboundChannel.objects.get(pk=pk))
    return storages[alias]


@contextlib.contextmanager
def storage_opened(storage: Storage) -> Iterator[Storage]:
    """Use ``storage``, then close what it holds open (an SFTP connection), whatever happens."""
    try:
        yield storage
    finally:
        storage_backend(storage).close(storage)


def storage_save_whole(storage: Storage, name: str, path: Path) -> None:
    """Deliver the local file ``path`` so that ``name`` appears in the storage only once whole."""
    storage_backend(storage).save_whole(storage, name, path)


def storage_delete(storage: Storage, name: str) -> bool:
    """Delete ``name`` itself, never through a link on its way nor at a normalized name
    (:class:`StorageRefused` says why not); False when it was not there."""
    return storage_backend(storage).delete(storage, name)


def storage_walk(storage: Storage, folder: str) -> Iterator[ListedObject]:
    """Every file under ``folder``, at any depth, with the service's cheap listing; an entry
    that is not a plain file comes with its :attr:`ListedObject.refusal` (never followed)."""
    return storage_backend(storage).walk(storage, folder)


@contextlib.contextmanager
def stored_file_open(storage_alias: str, path: str) -> Iterator[IO[bytes]]:
    """The raw bytes of a stored file, as a stream read as it is consumed; a file that cannot
    be opened raises :class:`StorageReadError` with a reason for the partner."""
    with contextlib.ExitStack() as stack:
        try:
            if storage_alias == LOCAL:
                stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the stack
            else:
                storage = stack.enter_context(storage_opened(storage_get(storage_alias)))
                stream = storage_backend(storage).stream(storage, path)
        except StorageReadError:
            raise  # already said in the partner's words (a link, a path that climbs out)
        except (FileNotFoundError, NotADirectoryError) as exc:  # a folder on its way too
            raise StorageReadError("the file is no longer there") from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404"}:
                raise StorageReadError("the file is no longer there") from exc
            raise StorageReadError(f"the file cannot be read ({code or exc})") from exc
        except (OSError, BotoCoreError) as exc:
            raise StorageReadError(f"the file cannot be read ({exc})") from exc
        stack.enter_context(contextlib.closing(stream))
        yield stream
