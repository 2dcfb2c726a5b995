"""Partners' SFTP drop zones.

The server lists entries as ``lstat`` sees them (OpenSSH, asyncssh), so a link is seen for
what it is and refused, never followed into; but it follows links when asked to open a path,
and the protocol has no open-without-following. So before a file is opened each step of its
path is looked at with ``lstat`` (a link refused), a file is created with ``O_EXCL`` (which
never goes through a link), and what was opened is checked against what was looked at. A
link swapped in between the look and the open of the same step is the one thing this cannot
rule out (only a server-side check can); anything this account can read there, the partner's
own account on the same server could read too.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast

from django.core.files.storage import Storage
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR
from paramiko.sftp_attr import SFTPAttributes
from storages.backends.sftpstorage import SFTPStorage

from partners.storage.base import (
    FOLDER_LINK,
    MAX_FOLDER_DEPTH,
    TOO_DEEP,
    ListedObject,
    StorageBackend,
    StorageReadError,
    StorageRefused,
    entry_refusal,
    link_in_the_way,
    plain_steps,
)

# The link count in a listing's long name (``ls -l``: "-rw-r--r--    2 user group …"), the
# one place SFTP v3 tells it; absent (None) when the server writes something else.
_LONG_NAME_LINKS = re.compile(r"[-a-zA-Z?][-rwxsStTlL]{9}\S*\s+(\d+)\s")


class SFTPBackend(StorageBackend):
    storage_class = SFTPStorage

    def stream(self, storage: Storage, name: str) -> IO[bytes]:
        sftp = cast(SFTPStorage, storage)
        steps = plain_steps(name)
        _folders_looked_at(sftp, steps[:-1], link=lambda _: FOLDER_LINK)
        looked = sftp.sftp.lstat(sftp._remote_path(name))
        refusal = entry_refusal(looked.st_mode)
        if refusal:
            raise StorageRefused(refusal)
        remote = sftp.sftp.open(sftp._remote_path(name), "rb")
        try:
            opened = remote.stat()
            if not stat.S_ISREG(opened.st_mode or 0) or (opened.st_size, opened.st_mtime) != (
                looked.st_size,
                looked.st_mtime,
            ):
                raise StorageReadError("the file was replaced while it was being opened")
        except BaseException:
            remote.close()
            raise
        remote.prefetch()  # pipelined reads: paramiko otherwise waits for every 32 KB
        return cast(IO[bytes], remote)

    def save_whole(self, storage: Storage, name: str, path: Path) -> None:
        # Written under a temporary name, then renamed (posix-rename: replaces atomically,
        # a link at the final name included, never writing through it). Whatever is at the
        # temporary name (a killed run's leftover, a planted link) is removed first, itself,
        # and the file is made new (O_EXCL: never through a link).
        sftp = cast(SFTPStorage, storage)
        steps = plain_steps(name)
        _folders_looked_at(sftp, steps[:-1], link=link_in_the_way, create=True)
        client, remote = sftp.sftp, sftp._remote_path
        temporary = remote(name + ".partial")
        if _entry_mode(sftp, temporary) is not None:
            client.remove(temporary)
        try:
            with client.open(temporary, "wx") as out, path.open("rb") as source:
                out.set_pipelined(True)
                shutil.copyfileobj(source, out, 1024 * 1024)
            if _entry_mode(sftp, remote(name)) is not None:
                client.remove(remote(name))
            client.posix_rename(temporary, remote(name))
        except Exception:  # a failed run leaves no half-written file behind
            with contextlib.suppress(OSError):
                client.remove(temporary)
            raise

    def delete(self, storage: Storage, name: str) -> bool:
        sftp = cast(SFTPStorage, storage)
        steps = plain_steps(name)
        try:
            _folders_looked_at(sftp, steps[:-1], link=link_in_the_way)
            sftp.sftp.remove(sftp._remote_path(name))  # a link itself, not what it points at
        except FileNotFoundError:
            return False
        return True

    def walk(self, storage: Storage, folder: str) -> Iterator[ListedObject]:
        # One readdir per folder, in name order, each folder's files then its folders. The
        # listing's attributes are lstat's: a link is refused, never entered.
        sftp = cast(SFTPStorage, storage)
        try:
            top = sftp.sftp.lstat(sftp._remote_path(folder))
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(top.st_mode or 0):  # the partner's folder made a link, a file…
            yield _listed(folder, top)
            return
        pending = [folder]
        while pending:
            current = pending.pop()
            try:
                entries = _listdir(sftp, sftp._remote_path(current))
            except FileNotFoundError:
                continue
            folders = []
            for entry in sorted(entries, key=lambda e: e.filename):
                path = posixpath.join(current, entry.filename)
                mode = entry.st_mode
                if mode is not None and stat.S_ISDIR(mode):
                    if path.count("/") >= MAX_FOLDER_DEPTH:
                        yield ListedObject(path, 0, f"d:0:{entry.st_mtime}", TOO_DEEP)
                    elif _utf8(path):  # a folder whose name is not UTF-8 cannot be opened
                        folders.append(path)
                    continue
                yield _listed(path, entry)
            pending.extend(reversed(folders))


def _listed(path: str, entry: SFTPAttributes) -> ListedObject:
    mode = entry.st_mode
    refusal = entry_refusal(mode, _links(entry))
    if mode is not None and stat.S_ISREG(mode):
        size = entry.st_size or 0
        return ListedObject(path, size, f"{size}:{entry.st_mtime}", refusal)
    # Its kind in its version: a file made a link is a new object.
    return ListedObject(path, 0, f"{stat.filemode(mode or 0)[0]}:0:{entry.st_mtime}", refusal)


def _links(entry: SFTPAttributes) -> int | None:
    match = _LONG_NAME_LINKS.match(getattr(entry, "longname", None) or "")
    return int(match[1]) if match else None


def _entry_mode(storage: SFTPStorage, path: str) -> int | None:
    """The lstat mode of ``path`` (None: nothing there)."""
    try:
        return storage.sftp.lstat(path).st_mode or 0
    except FileNotFoundError:
        return None


def _folders_looked_at(
    storage: SFTPStorage, steps: list[str], *, link: Callable[[str], str], create: bool = False
) -> None:
    """Each folder of ``steps`` under the storage's root is a plain folder (made first with
    ``create``): a link raises :class:`StorageRefused` with ``link(its path)``, anything else
    that is not a folder :class:`NotADirectoryError`, a missing one FileNotFoundError."""
    for number in range(len(steps)):
        path = "/".join(steps[: number + 1])
        mode = _entry_mode(storage, storage._remote_path(path))
        if mode is None and create:
            storage.sftp.mkdir(storage._remote_path(path))
            mode = _entry_mode(storage, storage._remote_path(path))
        if mode is None:
            raise FileNotFoundError(f"no folder {path}")
        if stat.S_ISLNK(mode):
            raise StorageRefused(link(path))
        if not stat.S_ISDIR(mode):
            raise NotADirectoryError(f"{path} is not a folder")


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
