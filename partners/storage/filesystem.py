"""A folder on this machine (``make demo``'s uploads and drop zone, local channels).

Whoever writes in a local channel's folder (a partner's SFTP account, a client renaming its
uploads) may leave links and other odd entries there, and the worker reads, writes and
deletes with rights that reach much further (the deployment's environment file, the other
partners' folders). So nothing here goes through a link: a path is opened from the channel's
folder one step at a time, each step relative to the one before and with ``O_NOFOLLOW``
(``openat``), and a file is read only if what was opened is the plain file that was looked
at. No path that resolves outside the folder is read, written or deleted, whatever changes
in the folder meanwhile. The channel's folder itself (the prefix staff typed) may be a link.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import IO, cast

from django.core.files.storage import FileSystemStorage, Storage

from partners.storage.base import (
    FOLDER_LINK,
    LINK,
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

logger = logging.getLogger(__name__)
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the look must not hang the open (it is refused after).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_WRITE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class FileSystemBackend(StorageBackend):
    storage_class = FileSystemStorage

    def stream(self, storage: Storage, name: str) -> IO[bytes]:
        steps = plain_steps(name)
        with _folder_opened(storage, steps[:-1], link=lambda _: FOLDER_LINK) as folder:
            return _file_opened(folder, steps[-1])

    def save_whole(self, storage: Storage, name: str, path: Path) -> None:
        # Written beside, then renamed: a rename within a folder is atomic. Whatever is at
        # the temporary name (a killed run's leftover, a link planted there) is removed
        # first, itself, and the file is made new there (O_EXCL: never through a link); a
        # link at the final name is replaced by the file, never written through.
        steps = plain_steps(name)
        with _folder_opened(storage, steps[:-1], link=link_in_the_way, create=True) as folder:
            partial = steps[-1] + ".partial"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial, dir_fd=folder)
            descriptor = os.open(partial, _WRITE_NEW, 0o666, dir_fd=folder)
            try:
                with os.fdopen(descriptor, "wb") as out, path.open("rb") as source:
                    shutil.copyfileobj(source, out, 1024 * 1024)
                os.replace(partial, steps[-1], src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:  # a failed run leaves no half-written file behind
                with contextlib.suppress(OSError):
                    os.unlink(partial, dir_fd=folder)
                raise

    def delete(self, storage: Storage, name: str) -> bool:
        steps = plain_steps(name)
        try:
            with _folder_opened(storage, steps[:-1], link=link_in_the_way) as folder:
                os.unlink(steps[-1], dir_fd=folder)  # a link itself, not what it points at
        except FileNotFoundError:
            return False
        return True

    def walk(self, storage: Storage, folder: str) -> Iterator[ListedObject]:
        try:
            root = _root_opened(storage)
        except FileNotFoundError:
            return
        try:
            yield from _walk(root, folder)
        finally:
            os.close(root)


def _walk(root: int, folder: str) -> Iterator[ListedObject]:
    """Every entry under ``folder`` (below the descriptor ``root``) but folders, in name
    order, each folder's entries then its folders'; a folder is entered only as a plain
    folder, never through a link."""
    try:
        top = os.stat(folder, dir_fd=root, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        yield _listed(folder, top)
        return
    pending = [folder]
    while pending:
        folders = yield from _folder_listed(root, pending.pop())
        pending.extend(reversed(folders))


def _folder_listed(root: int, folder: str) -> Generator[ListedObject, None, list[str]]:
    """The entries of one folder but folders, in name order; returns its folders. An entry
    that vanishes between the listing and its lstat (a client renaming ``x.filepart``) is
    skipped: it shows up under its new name."""
    try:
        opened = _steps_opened(root, folder.split("/"), link=lambda _: LINK)
    except (FileNotFoundError, NotADirectoryError, StorageRefused):
        return []  # gone, or swapped since its parent was listed: the next poll says
    except OSError:  # one folder we cannot read must not stop the others
        logger.warning("cannot open the folder %r", folder, exc_info=True)
        return []
    folders = []
    try:
        try:
            entries = sorted(os.scandir(opened), key=lambda entry: entry.name)
        except OSError:
            logger.warning("cannot list the folder %r", folder, exc_info=True)
            return []
        for entry in entries:
            path = f"{folder}/{entry.name}"
            is_folder = entry.is_dir(follow_symlinks=False)
            if is_folder and path.count("/") < MAX_FOLDER_DEPTH:
                folders.append(path)
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if is_folder:
                yield ListedObject(path, 0, f"d:0:{info.st_mtime_ns}", TOO_DEEP)
            else:
                yield _listed(path, info)
    finally:
        os.close(opened)
    return folders


def _listed(path: str, info: os.stat_result) -> ListedObject:
    refusal = entry_refusal(info.st_mode, info.st_nlink)
    version = f"{info.st_size}:{info.st_mtime_ns}"
    if not stat.S_ISREG(info.st_mode):  # its kind in its version: a file made a link is new
        return ListedObject(path, 0, f"{stat.filemode(info.st_mode)[0]}:{version}", refusal)
    return ListedObject(path, info.st_size, version, refusal)


def _root_opened(storage: Storage, *, create: bool = False) -> int:
    root = cast(FileSystemStorage, storage).location
    if create:
        os.makedirs(root, exist_ok=True)
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _steps_opened(
    root: int, steps: list[str], *, link: Callable[[str], str], create: bool = False
) -> int:
    """The folder ``steps`` below the descriptor ``root`` (each made first with ``create``),
    each step opened without following a link: a link raises :class:`StorageRefused` with
    ``link(its path)``."""
    current = os.dup(root)
    try:
        for number, step in enumerate(steps):
            if create:
                with contextlib.suppress(FileExistsError):  # whatever is there: checked next
                    os.mkdir(step, dir_fd=current)
            try:
                opened = os.open(step, _FOLDER, dir_fd=current)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                mode = os.stat(step, dir_fd=current, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise StorageRefused(link("/".join(steps[: number + 1]))) from exc
                where = "/".join(steps[: number + 1])
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), where) from exc
            os.close(current)
            current = opened
    except BaseException:
        os.close(current)
        raise
    return current


@contextlib.contextmanager
def _folder_opened(
    storage: Storage, steps: list[str], *, link: Callable[[str], str], create: bool = False
) -> Iterator[int]:
    """A descriptor of the folder ``steps`` under the storage's folder, reached without
    following a link."""
    root = _root_opened(storage, create=create)
    try:
        current = _steps_opened(root, steps, link=link, create=create)
    finally:
        os.close(root)
    try:
        yield current
    finally:
        os.close(current)


def _file_opened(folder: int, name: str) -> IO[bytes]:
    """The plain file ``name`` of the folder, opened for reading: the entry is looked at
    without following it, then opened without following it, and read only if what was
    opened is what was looked at (no device or FIFO is ever opened on purpose)."""
    looked = os.stat(name, dir_fd=folder, follow_symlinks=False)
    refusal = entry_refusal(looked.st_mode, looked.st_nlink)
    if refusal:
        raise StorageRefused(refusal)
    try:
        descriptor = os.open(name, _READ, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageRefused(LINK) from exc
        raise
    try:
        opened = os.fstat(descriptor)
        refusal = entry_refusal(opened.st_mode, opened.st_nlink)
        if refusal:
            raise StorageRefused(refusal)
        if (opened.st_dev, opened.st_ino) != (looked.st_dev, looked.st_ino):
            raise StorageReadError("the file was replaced while it was being opened")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
