"""Opening a delivered file as a stream of its plain bytes, with the SPEC §3.2 limits.

Streams only: gzip is inflated as it is read, PGP is decrypted by a ``gpg`` process as it is
read, and a file that inflates past the uncompressed limit (a gzip bomb) is stopped there.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import subprocess
import threading
import zlib
from collections.abc import Iterator
from typing import IO, Any, cast

from django.conf import settings

from partners.inbound.names import Compression
from partners.storage import StorageReadError, stored_file_open

MAX_UNCOMPRESSED_BYTES = 5 * 1024**3
MAX_COMPRESSED_BYTES = 3 * 1024**3


class UnreadableFileError(Exception):
    """The file as a whole cannot be processed; the message says why, for the partner."""


class _LimitedReader(io.RawIOBase):
    """Counts what passes through and refuses to go past ``limit`` bytes."""

    def __init__(self, inner: IO[bytes], *, limit: int, what: str) -> None:
        self.inner = inner
        self.limit = limit
        self.what = what
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self.inner.read(len(buffer))
        except (OSError, EOFError, zlib.error) as exc:
            raise UnreadableFileError(f"the {self.what} is corrupt ({exc})") from exc
        self.count += len(data)
        if self.count > self.limit:
            raise UnreadableFileError(
                f"the {self.what} is larger than the {self.limit / 1024**3:g} GB limit"
            )
        buffer[: len(data)] = data
        return len(data)


class ReadCounter:
    """How many stored bytes have been read, for progress reports."""

    def __init__(self) -> None:
        self.count = 0


class _Counted(io.RawIOBase):
    def __init__(self, inner: IO[bytes], counter: ReadCounter) -> None:
        self.inner = inner
        self.counter = counter

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.counter.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _gpg_decrypted(source: IO[bytes]) -> Iterator[IO[bytes]]:
    home = getattr(settings, "PGP_GNUPG_HOME", "")
    if not home:
        raise UnreadableFileError("PGP files are not accepted here (no private key configured)")
    process = subprocess.Popen(
        ["gpg", "--homedir", home, "--batch", "--quiet", "--yes", "--decrypt"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None

    def feed() -> None:
        assert process.stdin
        try:
            while chunk := source.read(1024 * 1024):
                process.stdin.write(chunk)
        except BrokenPipeError:
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield process.stdout
    finally:
        process.stdout.close()
        stderr = process.stderr.read().decode("utf-8", "replace")
        code = process.wait()
        feeder.join()
    if code != 0:
        first = stderr.strip().splitlines()[0] if stderr.strip() else f"gpg exit code {code}"
        raise UnreadableFileError(f"the file could not be decrypted ({first})")


@contextlib.contextmanager
def open_plain(
    storage: str, path: str, compression: Compression, *, counter: ReadCounter | None = None
) -> Iterator[IO[bytes]]:
    """The plain (decompressed, decrypted) bytes of a delivered file (a path on this disk
    when ``storage`` is empty, else a name in that storage), as a bounded stream.
    ``counter`` counts the stored bytes read (how far the file is done)."""
    with contextlib.ExitStack() as stack:
        try:
            raw = stack.enter_context(stored_file_open(storage, path))
        except StorageReadError as exc:
            raise UnreadableFileError(str(exc)) from exc
        if counter is not None:
            raw = cast(IO[bytes], _Counted(raw, counter))
        if compression is Compression.NONE:
            limited = _LimitedReader(raw, limit=MAX_UNCOMPRESSED_BYTES, what="file")
        else:
            compressed = _LimitedReader(raw, limit=MAX_COMPRESSED_BYTES, what="compressed file")
            source: IO[bytes] = io.BufferedReader(compressed, 1024 * 1024)
            if compression is Compression.GZIP:
                inflated: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=source, mode="rb"))
            else:
                inflated = stack.enter_context(_gpg_decrypted(source))
            limited = _LimitedReader(inflated, limit=MAX_UNCOMPRESSED_BYTES, what="file")
        yield io.BufferedReader(limited, 1024 * 1024)
