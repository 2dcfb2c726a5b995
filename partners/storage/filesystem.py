"""A folder on this machine (``make demo``'s uploads and drop zone, local channels)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from django.core.files.storage import FileSystemStorage, Storage

from partners.storage.base import ListedObject, StorageBackend


class FileSystemBackend(StorageBackend):
    storage_class = FileSystemStorage

    def stream(self, storage: Storage, name: str) -> IO[bytes]:
        return open(storage.path(name), "rb")

    def save_whole(self, storage: Storage, name: str, path: Path) -> None:
        # Written beside, then renamed: a rename within a folder is atomic.
        final = Path(storage.path(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(final.name + ".partial")
        shutil.copyfile(path, partial)
        os.replace(partial, final)

    def walk(self, storage: Storage, folder: str) -> Iterator[ListedObject]:
        root = cast(FileSystemStorage, storage).path("")
        for current, _, names in os.walk(os.path.join(root, folder)):
            for name in names:
                full = os.path.join(current, name)
                info = os.stat(full)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                yield ListedObject(rel, info.st_size, f"{info.st_size}:{info.st_mtime_ns}")
