"""Object storage over the S3 API (production uploads, partners' S3 drop zones).

A key is a plain string: ``acme/date=2026-12-01/../../bob/x`` is an object of its own, which
django-storages would read or delete as ``bob/x`` (it normalizes names). So a name with an
empty, ``.`` or ``..`` step is refused here, and the others are used as the literal key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, cast

from botocore.exceptions import ClientError
from django.core.files.storage import Storage
from storages.backends.s3 import S3Storage

from partners.storage.base import ListedObject, StorageBackend, plain_steps


def _key(storage: S3Storage, name: str) -> str:
    """The literal key of ``name`` under the storage's prefix (never normalized)."""
    location = storage.location.strip("/")  # as django-storages joins it
    return f"{location}/{name}" if location else name


class S3Backend(StorageBackend):
    storage_class = S3Storage

    def stream(self, storage: Storage, name: str) -> IO[bytes]:
        # The response body streams from the socket (raw bytes: botocore does not undo a
        # Content-Encoding, so a .gz object is inflated once, by us).
        # A name with odd steps is refused (the poller never takes one; nothing else may).
        plain_steps(name)
        s3 = cast(S3Storage, storage)
        return cast(IO[bytes], s3.bucket.Object(_key(s3, name)).get()["Body"])

    # save_whole: the generic save is right, an object appears whole when its upload completes
    # (the outbound names it gets are checked plain, and so is the destination's folder).

    def delete(self, storage: Storage, name: str) -> bool:
        # The literal key, odd steps included: that object itself, which the partner made
        # (a climbing key rejected by the poller goes at the retention purge like any other).
        s3 = cast(S3Storage, storage)
        client = s3.connection.meta.client
        key = _key(s3, name)
        try:
            client.head_object(Bucket=s3.bucket_name, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        client.delete_object(Bucket=s3.bucket_name, Key=key)
        return True

    def walk(self, storage: Storage, folder: str) -> Iterator[ListedObject]:
        # One LIST per 1,000 keys. A key with empty, "." or ".." steps is listed as it is:
        # the poller refuses it with the reason.
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
