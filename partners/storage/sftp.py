"""Partners' SFTP drop zones."""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from django.core.files import File
from django.core.files.storage import Storage
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR
from paramiko.sftp_attr import SFTPAttributes
from storages.backends.sftpstorage import SFTPStorage

from partners.storage.base import ListedObject, StorageBackend


class SFTPBackend(StorageBackend):
    storage_class = SFTPStorage

    def stream(self, storage: Storage, name: str) -> IO[bytes]:
        sftp = cast(SFTPStorage, storage)
        remote = sftp.sftp.open(sftp._remote_path(name), "rb")
        remote.prefetch()  # pipelined reads: paramiko otherwise waits for every 32 KB
        return cast(IO[bytes], remote)

    def save_whole(self, storage: Storage, name: str, path: Path) -> None:
        # Written under a temporary name, then renamed (posix-rename: replaces atomically).
        sftp = cast(SFTPStorage, storage)
        temporary = name + ".partial"
        if sftp.exists(temporary):
            sftp.delete(temporary)
        with path.open("rb") as stream:
            sftp.save(temporary, File(stream))
        remote = sftp._remote_path
        if sftp.exists(name):
            sftp.delete(name)
        sftp.sftp.posix_rename(remote(temporary), remote(name))

    def walk(self, storage: Storage, folder: str) -> Iterator[ListedObject]:
        # One readdir per folder.
        sftp = cast(SFTPStorage, storage)
        pending = [folder]
        while pending:
            current = pending.pop()
            try:
                entries = _listdir(sftp, sftp._remote_path(current))
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


def _listdir(storage: SFTPStorage, path: str) -> list[SFTPAttributes]:
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


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
