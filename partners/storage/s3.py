"""Object storage over the S3 API (production uploads, partners' S3 drop zones)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, cast

from django.core.files.storage import Storage
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from partners.storage.base import ListedObject, StorageBackend


class S3Backend(StorageBackend):
    storage_class = S3Storage

    def stream(self, storage: Storage, name: str) -> IO[bytes]:
        # The response body streams from the socket (raw bytes: botocore does not undo a
        # Content-Encoding, so a .gz object is inflated once, by us).
        s3 = cast(S3Storage, storage)
        key = s3._normalize_name(clean_name(name))
        return cast(IO[bytes], s3.bucket.Object(key).get()["Body"])

    # save_whole: the generic save is right, an object appears whole when its upload completes.

    def walk(self, storage: Storage, folder: str) -> Iterator[ListedObject]:
        # One LIST per 1,000 keys.
        s3 = cast(S3Storage, storage)
        prefix = f"{s3.location}/{folder}/" if s3.location else f"{folder}/"
        pages = s3.connection.meta.client.get_paginator("list_objects_v2").paginate(
            Bucket=s3.bucket_name, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a "folder" marker
                yield ListedObject(key[len(prefix) - len(folder) - 1 :], item["Size"], item["ETag"])
