"""Inbound file names (SPEC §2.2 and §3.1). Pure: a name in, a typed name or an error out.

ftp_dpm_<DPID>[_<TARGET_DPID>]_<TIMESTAMP>(.sync|.overwrite)[.<SPLIT>][.gz|.pgp|.gpg]
ftp_dpm_odc_<DPID>_<TIMESTAMP>.sync[.<SPLIT>][.gz|.pgp|.gpg]         (legacy device file)
adobe_id_<MASTER_DPID>_<DPID>[_<DPID>...]_<TIMESTAMP>.sync[.<SPLIT>][.gz]   (ID sync)
c2c_id_…                                                 (ID sync, hashed e-mails)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from partners.inbound.lines import CONTROL_CHARACTER


class FileKind(StrEnum):
    TRAITS = "traits"  # ftp_dpm_
    DEVICE_TRAITS = "device_traits"  # ftp_dpm_odc_: <id-type>\t<device id>\t<traits>
    ID_SYNC = "id_sync"  # adobe_id_ / c2c_id_


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    PGP = "pgp"


class FileNameError(ValueError):
    """A name that does not follow the grammar; the message names the element at fault."""


@dataclass(frozen=True, slots=True)
class InboundFileName:
    name: str
    kind: FileKind
    dpid: int  # traits: the data source of the user IDs; ID sync: the master DPID
    target_dpid: int | None  # traits: explicit target data source (None: same as dpid)
    column_dpids: tuple[int, ...]  # ID sync: one DPID per column, master first
    timestamp: int
    overwrite: bool
    split: int | None
    compression: Compression

    @property
    def batch_key(self) -> str:
        """Every part of one logical file shares this: the name before the split number."""
        return self.name.split(".", 1)[0] + (".overwrite" if self.overwrite else ".sync")

    @property
    def trait_dpid(self) -> int:
        """The data source whose traits the file realizes."""
        return self.target_dpid if self.target_dpid is not None else self.dpid


_PREFIXES = (
    ("ftp_dpm_odc_", FileKind.DEVICE_TRAITS),
    ("ftp_dpm_", FileKind.TRAITS),
    ("adobe_id_", FileKind.ID_SYNC),
    ("c2c_id_", FileKind.ID_SYNC),
)
_SHAPES = {
    FileKind.TRAITS: "ftp_dpm_<DPID>[_<TARGET_DPID>]_<TIMESTAMP>.sync",
    FileKind.DEVICE_TRAITS: "ftp_dpm_odc_<DPID>_<TIMESTAMP>.sync",
    FileKind.ID_SYNC: "adobe_id_<MASTER_DPID>_<DPID>[_<DPID>...]_<TIMESTAMP>.sync",
}
_DIGITS = re.compile(r"[0-9]+")
MAX_NAME_CHARS = 255  # InboundFile.name
MAX_DPID = 2**31 - 1  # DPIDs are 32-bit integers everywhere (database, ID sync)
MAX_SPLIT = 9999  # ~10 TB of 1 GB parts (SPEC §3.6); and it fits the part-number column


def name_text_problem(name: str) -> str | None:
    """Why ``name`` cannot even be kept as text (None when it can): bytes that are not
    UTF-8 (a listing decodes them as lone surrogates), control characters, or a length past
    what is stored. Said before anything quotes the name back."""
    for position, char in enumerate(name):
        if "\udc80" <= char <= "\udcff":  # os.fsdecode's stand-in for an undecodable byte
            return f"the name is not UTF-8 text (byte 0x{ord(char) - 0xDC00:02x}): rename the file"
        if "\ud800" <= char <= "\udfff":
            return f"the name is not UTF-8 text (at character {position + 1}): rename the file"
    control = CONTROL_CHARACTER.search(name)
    if control:
        return f"the name holds a control character (U+{ord(control[0]):04X})"
    if len(name) > MAX_NAME_CHARS:
        return f"the name is longer than {MAX_NAME_CHARS} characters"
    return None


def _dpid(text: str, element: str, *, allow_zero: bool = False) -> int:
    if not _DIGITS.fullmatch(text) or (int(text) == 0 and not allow_zero):
        raise FileNameError(f"'{text}' is not a {element} (a positive whole number)")
    if int(text) > MAX_DPID:
        raise FileNameError(f"'{text}' is not a {element} (at most {MAX_DPID})")
    return int(text)


def parse_inbound_file_name(name: str) -> InboundFileName:
    """Parse a file name; raise :class:`FileNameError` saying which element is wrong."""
    problem = name_text_problem(name)
    if problem:
        raise FileNameError(problem)
    if "/" in name or "\\" in name:
        raise FileNameError(f"'{name}' is a path, not a file name")
    kind = next((kind for prefix, kind in _PREFIXES if name.startswith(prefix)), None)
    if kind is None:
        raise FileNameError(
            f"'{name}' does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_ or c2c_id_"
        )
    prefix = next(prefix for prefix, _ in _PREFIXES if name.startswith(prefix))
    stem, dot, suffix = name[len(prefix) :].partition(".")
    if not dot:
        raise FileNameError(f"'{name}' has no .sync or .overwrite extension")
    mode, split, compression = _extensions_parse(suffix, kind=kind, prefix=prefix)

    fields = stem.split("_")
    if len(fields) < 2 or not fields[-1]:
        raise FileNameError(f"'{name}' has no timestamp: expected {_SHAPES[kind]}")
    timestamp_text = fields.pop()
    if not re.fullmatch(r"[0-9]{10}", timestamp_text):
        raise FileNameError(f"'{timestamp_text}' is not a 10-digit timestamp")
    dpid, target, columns = _dpids_parse(fields, kind=kind)
    return InboundFileName(
        name=name,
        kind=kind,
        dpid=dpid,
        target_dpid=target,
        column_dpids=columns,
        timestamp=int(timestamp_text),
        overwrite=mode == "overwrite",
        split=split,
        compression=compression,
    )


def _extensions_parse(
    suffix: str, *, kind: FileKind, prefix: str
) -> tuple[str, int | None, Compression]:
    """The extensions, left to right: mode, optional split number, optional compression."""
    extensions = suffix.split(".")
    mode = extensions.pop(0)
    if mode not in ("sync", "overwrite"):
        raise FileNameError(f"'.{mode}' is not .sync or .overwrite")
    if mode == "overwrite" and kind is not FileKind.TRAITS:
        raise FileNameError(f"'.overwrite' is not allowed for {prefix}… files (only .sync)")
    split: int | None = None
    if extensions and _DIGITS.fullmatch(extensions[0]):
        split = int(extensions.pop(0))
        if split > MAX_SPLIT:
            raise FileNameError(f"part number {split} is too large (at most {MAX_SPLIT})")
    compression = Compression.NONE
    if extensions:
        last = extensions.pop(0)
        if last == "gz":
            compression = Compression.GZIP
        elif last in ("pgp", "gpg"):
            compression = Compression.PGP
            if kind is FileKind.ID_SYNC:
                raise FileNameError("ID-sync files may be .gz, not PGP-encrypted")
        else:
            raise FileNameError(f"'.{last}' is not a part number, .gz, .pgp or .gpg")
    if extensions:
        if compression is Compression.GZIP and extensions[0] in ("pgp", "gpg"):
            raise FileNameError("gzip and PGP together are not allowed (PGP already compresses)")
        if compression is Compression.PGP and extensions[0] == "gz":
            raise FileNameError("gzip and PGP together are not allowed (PGP already compresses)")
        raise FileNameError(f"unexpected '.{'.'.join(extensions)}' after '.{last}'")
    return mode, split, compression


def _dpids_parse(fields: list[str], *, kind: FileKind) -> tuple[int, int | None, tuple[int, ...]]:
    """The DPIDs before the timestamp: (DPID, target DPID, the columns of an ID-sync file)."""
    target: int | None = None
    columns: tuple[int, ...] = ()
    if kind is FileKind.ID_SYNC:
        if len(fields) < 2:
            raise FileNameError(
                f"an ID-sync name needs a master DPID and at least one DPID: {_SHAPES[kind]}"
            )
        master = _dpid(fields[0], "master DPID", allow_zero=True)
        columns = (master, *(_dpid(f, "DPID") for f in fields[1:]))
        dpid = master
    elif kind is FileKind.DEVICE_TRAITS:
        if len(fields) != 1:
            raise FileNameError(f"expected {_SHAPES[kind]}, found {len(fields)} DPIDs")
        dpid = _dpid(fields[0], "DPID")
    else:
        if len(fields) not in (1, 2):
            raise FileNameError(
                f"expected {_SHAPES[kind]}: found {len(fields)} numbers before the timestamp"
            )
        dpid = _dpid(fields[0], "DPID")
        if len(fields) == 2:
            target = _dpid(fields[1], "target DPID")
    return dpid, target, columns


def parts_missing(parts: list[int]) -> list[int]:
    """The part numbers missing from a split file's ``parts``: the gaps between the first
    part (0 or 1, whichever the partner counts from) and the highest part received."""
    return [n for first, last in _gaps(sorted(set(parts))) for n in range(first, last + 1)]


# What is said of a split file's parts is bounded whatever the numbers (a lone ``.9999`` is
# "part 9999 here, missing 1-9998"): at most this many runs of missing parts are named, then
# counted ("… and 4,989 more"). Part numbers are at most 9999, so the words stay within
# PARTS_TEXT_MAX_CHARS.
PART_GAPS_NAMED = 10
PARTS_TEXT_MAX_CHARS = 200


def _gaps(present: list[int]) -> list[tuple[int, int]]:
    """The runs of numbers missing from sorted, distinct ``present``, from the first part (0
    when part 0 is there, else 1) to the highest one."""
    gaps = []
    expected = 0 if present and present[0] == 0 else 1
    for number in present:
        if number > expected:
            gaps.append((expected, number - 1))
        expected = number + 1
    return gaps


@dataclass(frozen=True, slots=True)
class PartsSummary:
    """The parts of a split file here so far, in a bounded form: the lowest and highest part
    numbers, how many distinct ones are here, the first runs of missing ones
    (``PART_GAPS_NAMED`` at most) and how many are missing in all. PostgreSQL makes it for
    the pages, the uploads and the release (:mod:`partners.inbound.split_parts`); ``of``
    makes it from the numbers. Its words are the only ones said about parts anywhere: the
    portal, the API, the batch's ``missing_parts`` and so the receipt and its e-mail."""

    lowest: int
    highest: int
    here: int
    gaps: tuple[tuple[int, int], ...]
    missing: int

    @classmethod
    def of(cls, parts: Iterable[int]) -> PartsSummary:
        present = sorted(set(parts))
        if not present:
            return cls(lowest=0, highest=0, here=0, gaps=(), missing=0)
        gaps = _gaps(present)
        return cls(
            lowest=present[0],
            highest=present[-1],
            here=len(present),
            gaps=tuple(gaps[:PART_GAPS_NAMED]),
            missing=sum(last - first + 1 for first, last in gaps),
        )

    @property
    def missing_text(self) -> str:
        """The missing parts as runs, ``17, 42, 100-120``, the rest counted: ``… and 4,989
        more`` ("" when none is missing)."""
        named = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in self.gaps)
        more = self.missing - sum(last - first + 1 for first, last in self.gaps)
        return f"{named} … and {more:,} more" if more else named

    @property
    def text(self) -> str:
        """``parts 1-500 here, missing 17, 42``: the span received, then what is missing."""
        if not self.here:
            return ""
        if self.lowest == self.highest:
            here = f"part {self.lowest} here"
        else:
            here = f"parts {self.lowest}-{self.highest} here"
        return f"{here}, missing {self.missing_text}" if self.missing else here
