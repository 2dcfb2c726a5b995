"""Where delivered files live, and how to read one as a stream.

A delivered file is either a path on the worker's disk (the ``ingest`` command) or a name in
a Django storage (portal uploads in the ``default`` storage: the local file system in
``make demo``, S3 in production). Storages come from django-storages; what is ours is only
reading them as streams: django-storages' S3 file downloads the whole object before the
first byte is read, and a partner file is gigabytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import FileSystemStorage, Storage, storages
from storages.backends.s3 import S3Storage
from storages.backends.sftpstorage import SFTPStorage
from storages.utils import clean_name

LOCAL = ""  # the storage alias of a plain path on the worker's disk
UPLOAD_STORAGE = "default"  # where portal uploads are kept (FILE_STORAGE)


@dataclass(frozen=True)
class StoredFile:
    """A delivered file: its own name, where it is (storage alias and path), its size, and
    its SHA-256 when the receiver already computed it while the bytes went by."""

    name: str
    storage: str
    path: str
    size: int
    sha256: str | None = None

    @classmethod
    def local(cls, path: Path) -> StoredFile:
        """A file on this machine's disk (its size is 0 when it does not exist)."""
        size = path.stat().st_size if path.is_file() else 0
        return cls(name=path.name, storage=LOCAL, path=str(path.resolve()), size=size)


class StorageReadError(OSError):
    """A stored file that cannot be opened; the message is for the partner."""


def storage_get(alias: str) -> Storage:
    """A STORAGES alias (``default``), or ``channel:<id>``: a partner's drop zone."""
    if alias.startswith("channel:"):
        from partners.dropzones.channels import channel_storage  # the models import this module
        from partners.models import InboundChannel

        return channel_storage(InboundChannel.objects.get(pk=int(alias.removeprefix("channel:"))))
    return storages[alias]


@contextlib.contextmanager
def stored_file_open(storage_alias: str, path: str) -> Iterator[IO[bytes]]:
    """The raw bytes of a stored file, as a stream read as it is consumed."""
    storage = None
    try:
        if storage_alias == LOCAL:
            stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed below
        else:
            storage = storage_get(storage_alias)
            stream = _storage_stream(storage, path)
    except FileNotFoundError as exc:
        raise StorageReadError("the file is no longer there") from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"NoSuchKey", "404"}:
            raise StorageReadError("the file is no longer there") from exc
        raise StorageReadError(f"the file cannot be read ({code or exc})") from exc
    except (OSError, BotoCoreError) as exc:
        raise StorageReadError(f"the file cannot be read ({exc})") from exc
    try:
        with contextlib.closing(stream):
            yield stream
    finally:
        if storage is not None:
            storage_close(storage)


def storage_close(storage: Storage) -> None:
    """Close what a storage holds open (an SFTP storage keeps its SSH connection)."""
    close = getattr(storage, "close", None)
    if callable(close):
        close()


def _storage_stream(storage: Storage, name: str) -> IO[bytes]:
    if isinstance(storage, FileSystemStorage):
        return open(storage.path(name), "rb")
    if isinstance(storage, S3Storage):
        # The response body streams from the socket (raw bytes: botocore does not undo a
        # Content-Encoding, so a .gz object is inflated once, by us).
        key = storage._normalize_name(clean_name(name))
        return cast(IO[bytes], storage.bucket.Object(key).get()["Body"])
    if isinstance(storage, SFTPStorage):
        remote = storage.sftp.open(storage._remote_path(name), "rb")
        remote.prefetch()  # pipelined reads: paramiko otherwise waits for every 32 KB
        return cast(IO[bytes], remote)
    return cast(IO[bytes], storage.open(name, "rb"))
