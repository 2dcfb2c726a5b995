"""What every storage backend does for us beyond django-storages, and the types around it.

django-storages gives each service a ``Storage``; what is ours is four things it does not do
the way a partner's gigabyte files need: read a file as a stream (its S3 file downloads the
whole object first), save a file so that it appears only once whole, list a folder with one
cheap call per page or folder (never a request per file), and close what a storage holds
open (an SFTP storage keeps its SSH connection). One module per backend implements them
(:mod:`partners.storage.filesystem`, :mod:`~partners.storage.s3`, :mod:`~partners.storage.sftp`)
over :class:`StorageBackend`, whose own methods are the generic fallbacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from django.core.files import File
from django.core.files.storage import Storage

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


@dataclass(frozen=True)
class ListedObject:
    path: str  # under the storage's root: "<folder>/…/<name>"
    size: int
    version: str  # S3: the ETag; SFTP / local: size and modification time


class StorageReadError(OSError):
    """A stored file that cannot be opened; the message is for the partner."""


class StorageBackend:
    """The operations, for one kind of ``Storage``; these defaults use the Storage API only."""

    def stream(self, storage: Storage, name: str) -> IO[bytes]:
        """The raw bytes of ``name``, read as they are consumed."""
        return cast(IO[bytes], storage.open(name, "rb"))

    def save_whole(self, storage: Storage, name: str, path: Path) -> None:
        """Deliver the local file ``path`` so that ``name`` appears only once it is whole."""
        if storage.exists(name):
            storage.delete(name)
        with path.open("rb") as stream:
            storage.save(name, File(stream))

    def walk(self, storage: Storage, folder: str) -> Iterator[ListedObject]:
        """Every file under ``folder``, at any depth."""
        raise NotImplementedError(f"cannot list {type(storage).__name__}")

    def close(self, storage: Storage) -> None:
        """Let go of what the storage holds open."""
        close = getattr(storage, "close", None)
        if callable(close):
            close()
