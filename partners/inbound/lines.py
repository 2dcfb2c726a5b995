"""Inbound file contents (SPEC §3.2, §3.3). Pure: bytes in, typed lines and line errors out.

A line is ``<USER ID><TAB><signal>,<signal>,…``. Reading is streaming and bounded: a line
longer than the limit is skipped without ever being held in memory whole.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import IO, NamedTuple, cast

MAX_LINE_BYTES = 102_400
MAX_LINES_PER_USER = 200  # per user ID and batch (SPEC §3.2); later lines are discarded
LINE_START_CHARS = 80
_BOM = b"\xef\xbb\xbf"
_SID = re.compile(r"[0-9]+")
_REMOVAL = re.compile(r"([0-9]+):(0|-1)")
_KEY = re.compile(r"[A-Za-z0-9_-]*[A-Za-z][A-Za-z0-9_-]*")


class LineFormatError(ValueError):
    """A line that does not follow the syntax; the message is shown to the partner."""


# A signal, as a small tuple (fast to build a million times):
#   ("sid", 10)  ("unsid", 10)  ("code", "premium")  ("kv", "color", "red")
Signal = tuple[str, int] | tuple[str, str] | tuple[str, str, str]


class RawLine(NamedTuple):  # a NamedTuple: millions are made, and it is the cheapest
    number: int  # 1-based physical line number in the file
    text: str | None  # decoded, without the line ending; None when unreadable
    error: str | None  # why the line could not be read
    start: str  # the first characters, for error reports


class OverlongLine(NamedTuple):
    """A line cut off while reading because it is too long: only its start is kept."""

    start: str


# A block of consecutive physical lines: the number of the first, then each line's bytes
# (without "\n"), or OverlongLine for a line too long to be held. A block without lines
# says that the lines before its number were blank (read, counted, never split).
LineBlock = tuple[int, list["bytes | OverlongLine"]]


def line_start(raw: bytes) -> str:
    """The first characters of a rejected line, as the error reports keep them: bytes that
    are not UTF-8 and NUL (which PostgreSQL text cannot hold) shown as U+FFFD."""
    return raw[:LINE_START_CHARS].decode("utf-8", "replace").replace("\x00", "\ufffd")


def read_line_blocks(
    stream: IO[bytes], *, max_bytes: int = MAX_LINE_BYTES, block_bytes: int = 1 << 19
) -> Iterator[LineBlock]:
    """Split ``stream`` into blocks of physical lines, reading ``block_bytes`` at a time.

    Cheap (the splitting is done in C), so one process can feed several that decode and
    parse the blocks (:func:`decode_lines`). Bounded: a line that grows past ``max_bytes``
    without ending is cut off and the rest of it skipped, never held whole. Blank lines cost
    next to nothing: a read holding nothing but line ends is counted, not split, and comes
    out as a block without lines (so a reader of blocks hears how far the file is read).
    """
    number = 1  # the number of the line that ``carry`` begins
    carry = b""
    skipping = False  # inside an over-long line, until its end
    read = stream.read
    while True:
        data = read(block_bytes)
        if not data:
            break
        if not skipping and not carry.strip(b"\r") and not data.strip(b"\r\n"):
            ended = data.rfind(b"\n") + 1  # blank lines only (a "\r" may await its "\n")
            if ended:
                number += data.count(b"\n", 0, ended)
                carry = data[ended:]
                yield number, []
                continue
        if skipping:
            end = data.find(b"\n")
            if end < 0:
                continue
            data = data[end + 1 :]
            skipping = False
            number += 1
        complete = (carry + data).split(b"\n") if carry else data.split(b"\n")
        carry = complete.pop()  # the unfinished last line (b"" after a final "\n")
        lines = cast("list[bytes | OverlongLine]", complete)  # an over-long line may join
        if len(carry) > max_bytes + 2:  # too long even with its "\r\n" still to come
            lines.append(OverlongLine(line_start(carry)))
            carry = b""
            skipping = True
        if lines:
            yield number, lines
            number += len(lines) - (1 if skipping else 0)
    if carry and not skipping:
        yield number, [carry]


def decode_lines(
    first: int, lines: list[bytes | OverlongLine], *, max_bytes: int = MAX_LINE_BYTES
) -> Iterator[RawLine]:
    """The non-blank lines of a block, decoded, with their physical line numbers.

    CRLF and LF both end a line; a UTF-8 BOM and a missing final newline are fine. A line
    over ``max_bytes`` (without its ending), not valid UTF-8 or holding a NUL character is
    yielded with an error.
    """
    number = first - 1
    for raw in lines:
        number += 1
        if not raw:
            continue  # the commonest blank line, first
        if isinstance(raw, OverlongLine):
            yield RawLine(number, None, f"line longer than {max_bytes:,} bytes", raw.start)
            continue
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if raw[-1:] == b"\r":
            raw = raw[:-1]
        if len(raw) > max_bytes:
            yield RawLine(number, None, f"line longer than {max_bytes:,} bytes", line_start(raw))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RawLine(number, None, f"not UTF-8 text (byte {exc.start + 1})", line_start(raw))
            continue
        if not text or text.isspace():
            continue  # blank lines are not records
        if "\x00" in text:  # PostgreSQL text cannot hold it: refused here, shown as U+FFFD
            yield RawLine(number, None, "the line holds a NUL character", line_start(raw))
            continue
        yield RawLine(number, text, None, text[:LINE_START_CHARS])


def read_lines(stream: IO[bytes], *, max_bytes: int = MAX_LINE_BYTES) -> Iterator[RawLine]:
    """Yield the non-blank lines of ``stream`` with their physical line numbers
    (:func:`read_line_blocks` then :func:`decode_lines`)."""
    for first, lines in read_line_blocks(stream, max_bytes=max_bytes):
        yield from decode_lines(first, lines, max_bytes=max_bytes)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise LineFormatError("a quote is not closed")
    parts.append("".join(current))
    return parts


def _unquote(text: str, what: str, signal: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"') or '"' in text[1:-1]:
            raise LineFormatError(f"badly quoted {what} in '{signal}'")
        return text[1:-1]
    if '"' in text:
        raise LineFormatError(f"stray quote in '{signal}'")
    return text


@functools.lru_cache(maxsize=65_536)
def parse_signal(token: str) -> Signal:
    """One signal (already split from its neighbours) to its tuple form.

    Memoized: a batch repeats the same few thousand signals millions of times.
    """
    signal = token.strip()
    if not signal:
        raise LineFormatError("empty signal (two commas in a row, or a comma at the end)")
    if "=" not in signal:
        removal = _REMOVAL.fullmatch(signal)
        if removal:
            return ("unsid", int(removal.group(1)))
        code = _unquote(signal, "code", signal) if '"' in signal else signal
        if ":" in code and _SID.fullmatch(code.split(":", 1)[0]):
            raise LineFormatError(f"'{signal}': a trait removal is written SID:0 or SID:-1")
        return ("code", code.casefold())
    if '"' in signal:
        pieces = _split_outside_quotes(signal, "=")
        key_text, value_text = pieces[0], "=".join(pieces[1:])
        key = _unquote(key_text, "key", signal)
        value = _unquote(value_text, "value", signal)
    else:
        key_text, _, value_text = signal.partition("=")
        key, value = key_text.strip(), value_text.strip()
    lowered = key.lower()
    if lowered in ("d_sid", "d_unsid"):
        if not _SID.fullmatch(value) or int(value) == 0:
            raise LineFormatError(f"'{signal}': {lowered} needs a trait ID (a positive number)")
        return ("sid" if lowered == "d_sid" else "unsid", int(value))
    if lowered == "ic":
        if not value:
            raise LineFormatError(f"'{signal}': ic needs a code")
        return ("code", value.casefold())
    key = key.lstrip("-")
    if not _KEY.fullmatch(key):
        raise LineFormatError(
            f"'{signal}': a key is letters, digits, '_' and '-', with at least one letter"
        )
    if not value:
        raise LineFormatError(f"'{signal}': the value is empty")
    return ("kv", key.casefold(), value.casefold())


def parse_signals(text: str) -> list[Signal]:
    return [parse_signal(token) for token in split_signals(text)]


def split_inbound_line(text: str) -> tuple[str, str]:
    """``<USER ID><TAB><signals>`` → (user ID, signals text). Raises :class:`LineFormatError`."""
    user_id, tab, rest = text.partition("\t")
    if not tab:
        raise LineFormatError("no tab between the user ID and the signals")
    if not user_id.strip():
        raise LineFormatError("empty user ID")
    if user_id != user_id.strip():
        raise LineFormatError("spaces around the user ID")
    if not rest.strip():
        raise LineFormatError("no signals after the user ID")
    return user_id, rest


def split_signals(text: str) -> list[str]:
    """The signal tokens of a line's signals text (commas inside quotes do not split)."""
    return _split_outside_quotes(text, ",") if '"' in text else text.split(",")


def parse_inbound_line(text: str) -> tuple[str, list[Signal]]:
    """``<USER ID><TAB><signals>`` → (user ID, signals). Raises :class:`LineFormatError`."""
    user_id, rest = split_inbound_line(text)
    return user_id, parse_signals(rest)


DEVICE_ID_TYPES = {"idfa": 20915, "gaid": 20914}


def parse_device_line(text: str) -> tuple[str, str, list[Signal]]:
    """Legacy ``ftp_dpm_odc_`` line: ``<idfa|gaid><TAB><device ID><TAB><signals>``.

    Bare numbers are trait IDs in this format (``38838`` is ``d_sid=38838``).
    """
    id_type, tab, rest = text.partition("\t")
    if not tab:
        raise LineFormatError("no tab after the ID type (idfa or gaid)")
    if id_type not in DEVICE_ID_TYPES:
        raise LineFormatError(f"'{id_type[:20]}' is not an ID type (idfa or gaid)")
    device_id, signals = parse_inbound_line(rest)
    return (
        id_type,
        device_id,
        [
            ("sid", int(s[1])) if s[0] == "code" and _SID.fullmatch(str(s[1])) else s
            for s in signals
        ],
    )


# --------------------------------------------------------------------------- user IDs

# C0 and C1 control characters and DEL: never part of an ID or a name (they would travel into
# every outbound file, receipt and workbook that shows it). Tabs split columns before this.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEX_LOWER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_UPPER = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
_ALPHANUMERIC = re.compile(r"[0-9A-Za-z]+")
_DEVICE_FORMATS = {
    "hex_lower": (_HEX_LOWER, "lowercase 8-4-4-4-12 hex"),
    "hex_upper": (_HEX_UPPER, "uppercase 8-4-4-4-12 hex"),
    "alphanumeric": (_ALPHANUMERIC, "letters and digits"),
}


def user_id_problem(user_id: str, *, inbound_id_type: str, device_id_format: str) -> str | None:
    """Why ``user_id`` is not a valid ID of the data source's type (None when it is)."""
    if inbound_id_type == "uuid":
        valid = len(user_id) == 38 and user_id.isascii() and user_id.isdigit()
        return None if valid else "a UUID is exactly 38 digits"
    if inbound_id_type == "device":
        pattern, description = _DEVICE_FORMATS[device_id_format]
        return None if pattern.fullmatch(user_id) else f"a device ID here is {description}"
    if ":" in user_id or "%3a" in user_id.lower():
        return "a DPUUID must not contain ':'"
    if len(user_id) > 255:
        return "a DPUUID is at most 255 characters"
    control = CONTROL_CHARACTER.search(user_id)
    if control:
        return f"a DPUUID must not hold a control character (U+{ord(control[0]):04X})"
    return None
