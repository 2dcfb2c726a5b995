"""What a taxonomy workbook may weigh, checked before openpyxl reads it (and again while it
does): its bytes (``TAXONOMY_MAX_BYTES``), what its zip unpacks to as its directory declares
(``TAXONOMY_MAX_UNCOMPRESSED_BYTES``: a zip bomb is refused unopened; Python's zipfile never
inflates a member past its declared size), and its rows (``TAXONOMY_MAX_ROWS``, far above any
real taxonomy): as each sheet declares them, as a scan of its XML counts them (a fast byte
scan that stops at the limit) and as they are read. And, once an import is over, the memory
it used goes back to the system, so the web process is its old size again."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import sys
import zipfile
from typing import IO, Any

from django.conf import settings

# A row element of a worksheet's XML (with or without a namespace prefix).
_ROW_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?row[\s/>]")
_SCAN_CHUNK = 1 << 20


class WorkbookTooBig(Exception):
    """A workbook past one of the limits: the message says which, in the reader's words."""


def _bytes(count: int) -> str:
    return f"{count:,} bytes"


def workbook_size_check(workbook: IO[bytes]) -> None:
    """Refuse a workbook past the limits before it is opened: its size, what its zip
    declares it unpacks to, and its rows as a scan of each sheet's XML counts them (stopped
    at the limit). Leaves ``workbook`` at its start."""
    workbook.seek(0, 2)
    size = workbook.tell()
    workbook.seek(0)
    if size > settings.TAXONOMY_MAX_BYTES:
        raise WorkbookTooBig(
            f"the workbook is {_bytes(size)}: at most {_bytes(settings.TAXONOMY_MAX_BYTES)} are"
            " taken (TAXONOMY_MAX_BYTES)"
        )
    try:
        archive = zipfile.ZipFile(workbook)
    except zipfile.BadZipFile:
        return  # not a zip: openpyxl says it is not an XLSX workbook
    with archive:
        declared = sum(info.file_size for info in archive.infolist())
        if declared > settings.TAXONOMY_MAX_UNCOMPRESSED_BYTES:
            raise WorkbookTooBig(
                f"the workbook unpacks to {_bytes(declared)}: at most"
                f" {_bytes(settings.TAXONOMY_MAX_UNCOMPRESSED_BYTES)} are read"
                " (TAXONOMY_MAX_UNCOMPRESSED_BYTES)"
            )
        for info in archive.infolist():
            # Shared strings, styles, the list of sheets: openpyxl holds each whole in memory.
            whole = not info.filename.startswith("xl/worksheets/")
            if whole and info.file_size > settings.TAXONOMY_MAX_UNCOMPRESSED_BYTES // 4:
                raise WorkbookTooBig(
                    f"the workbook's part {info.filename} unpacks to {_bytes(info.file_size)}:"
                    f" at most {_bytes(settings.TAXONOMY_MAX_UNCOMPRESSED_BYTES // 4)} are read"
                    " (a quarter of TAXONOMY_MAX_UNCOMPRESSED_BYTES)"
                )
        sheets = [i for i in archive.infolist() if i.filename.startswith("xl/worksheets/")]
        rows = 0
        for info in sheets:
            if info.filename.endswith(".xml"):
                # Each sheet's first row is its header.
                rows += max(0, _rows_scanned(archive, info, settings.TAXONOMY_MAX_ROWS) - 1)
                if rows > settings.TAXONOMY_MAX_ROWS:
                    raise WorkbookTooBig(too_many_rows())
    workbook.seek(0)


def _rows_scanned(archive: zipfile.ZipFile, info: zipfile.ZipInfo, stop_past: int) -> int:
    """The row elements of one sheet's XML, counted as it is inflated (a chunk at a time;
    a tag cut between two chunks is counted once), stopped once past ``stop_past`` + 1."""
    count, tail = 0, b""
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_SCAN_CHUNK):
                data = tail + chunk
                count += len(_ROW_TAG.findall(data))
                # Keep the end of the chunk that could begin a tag, unless it was counted.
                cut = data.rfind(b"<", max(0, len(data) - 64))
                tail = data[cut:] if cut >= 0 and not _ROW_TAG.match(data, cut) else b""
                if count > stop_past + 1:
                    break
    except (zipfile.BadZipFile, OSError, EOFError):
        return count  # openpyxl reports the broken file in its words
    return count


def too_many_rows() -> str:
    return (
        f"the workbook holds more than {settings.TAXONOMY_MAX_ROWS:,} rows, the most an import"
        " takes (TAXONOMY_MAX_ROWS); split it into several workbooks"
    )


class RowBudget:
    """The rows an import may read in all its sheets, counted as openpyxl reads them (and
    as each sheet declares them): past the limit the import stops."""

    def __init__(self) -> None:
        self.left = settings.TAXONOMY_MAX_ROWS

    def declared(self, worksheet: Any) -> None:
        """A sheet whose dimension declares more rows than are left is refused unread."""
        max_row = getattr(worksheet, "max_row", None)
        if isinstance(max_row, int) and max_row - 1 > self.left:
            raise WorkbookTooBig(too_many_rows())

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise WorkbookTooBig(too_many_rows())


def memory_release() -> None:
    """Give the memory an import freed back to the system. An import allocates some hundred
    MB of small objects; once they are freed, Python returns an arena (1 MB) to the system
    only when nothing in it is alive, and a few strings the interpreter's type cache keeps
    (attribute names such as the ORM's ``"as_" + vendor``, made anew for each query) are
    enough to hold many arenas: the cache is cleared, then the collector runs, then glibc's
    ``malloc_trim`` gives back the free pages of its heap. Measured (README, Taxonomy
    workbook): without this, each big import left the web process bigger than before."""
    sys._clear_type_cache()
    gc.collect()
    with contextlib.suppress(AttributeError, OSError):  # a C library without malloc_trim
        ctypes.CDLL(None).malloc_trim(0)
