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

import stat
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
    # Why the entry is not taken, for the partner (a link, a FIFO…); "" for a plain file.
    refusal: str = ""


class StorageReadError(OSError):
    """A stored file that cannot be opened; the message is for the partner."""


class StorageRefused(StorageReadError):
    """A path the storage does not go through: a link (the file itself, or a folder on its
    way), something that is not a plain file, a path with empty, ``.`` or ``..`` steps.
    Nothing is read, written or deleted there; the message says why, for the partner (or
    for staff, in an outbound run's error)."""


# The partner's words for what a drop zone may hold: its own files, nothing else.
PUT_THE_FILE = "put the file itself in the folder"
LINK = f"a symbolic link, not a file: {PUT_THE_FILE}"
FOLDER_LINK = "a folder on its way is a symbolic link: put the file itself in a plain folder"
HARD_LINK = (
    "a hard link (the same file has another name elsewhere): put a copy of the file itself"
    " in the folder"
)
PATH_STEPS = (
    "the path has an empty, '.' or '..' step: put the file in its folder under a plain name"
)
# Below a channel's folder, a drop zone needs two steps (<slug>/date=…/); deeper folders
# hold nothing that can be taken, and are not entered (a partner nesting thousands of them
# must not make every poll of its channel slow).
MAX_FOLDER_DEPTH = 16
TOO_DEEP = (
    f"a folder more than {MAX_FOLDER_DEPTH} folders deep, not entered: put the files in a"
    " date=YYYY-MM-DD folder"
)
_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFDIR: "a folder",
}


def entry_refusal(mode: int | None, links: int | None = None) -> str:
    """Why an entry whose (lstat) ``mode`` and link count are these is not taken, in the
    partner's words; "" for a plain file with one name. A regular file with another name
    (a hard link) may be any file of the same file system the partner could link to (another
    partner's upload): refused too."""
    if mode is None:
        return f"the server does not say what this entry is: {PUT_THE_FILE}"
    if stat.S_ISREG(mode):
        return HARD_LINK if links is not None and links > 1 else ""
    kind = _KINDS.get(stat.S_IFMT(mode), "not a plain file")
    return f"{kind}, not a file: {PUT_THE_FILE}"


def link_in_the_way(path: str) -> str:
    """Why nothing is written (or deleted) under ``path``: it is a symbolic link."""
    return (
        f"{path} is a symbolic link in the channel's folder: nothing is written through a"
        " link (make it a plain folder)"
    )


def plain_steps(name: str) -> list[str]:
    """The steps of ``name`` (``a/b/c``), or :class:`StorageRefused` when one is empty,
    ``.`` or ``..`` or it holds a NUL."""
    refusal = path_steps_refusal(name)
    if refusal or "\0" in name:
        raise StorageRefused(refusal or "the name holds a NUL character")
    return name.split("/")


def path_steps_refusal(path: str) -> str:
    """Why ``path`` (under a storage's root) is not a plain path: an empty, ``.`` or ``..``
    step (an S3 key may hold them; read through a normalized name it would land elsewhere);
    "" when it is one."""
    if any(step in ("", ".", "..") for step in path.split("/")):
        return PATH_STEPS
    return ""


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
        """Every file under ``folder``, at any depth, and every entry that is not a plain
        file (with its :attr:`ListedObject.refusal`), never following a link."""
        raise NotImplementedError(f"cannot list {type(storage).__name__}")

    def delete(self, storage: Storage, name: str) -> bool:
        """Delete ``name`` itself (a link, not what it points at; never through a link on its
        way); False when it is not there."""
        if not storage.exists(name):
            return False
        storage.delete(name)
        return True

    def close(self, storage: Storage) -> None:
        """Let go of what the storage holds open."""
        close = getattr(storage, "close", None)
        if callable(close):
            close()
