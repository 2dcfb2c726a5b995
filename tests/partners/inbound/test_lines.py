"""The streaming line reader: the same lines, numbers and errors whatever the block size."""

from __future__ import annotations

import io

import pytest

from partners.inbound.lines import RawLine, decode_lines, read_line_blocks, read_lines

CONTENT = (
    b"\xef\xbb\xbfu1\td_sid=1\r\n"  # BOM and CRLF
    b"\n"  # blank: not a record, but counted as a physical line
    b"u2\td_sid=2\n"
    + b"u3\t"
    + b"d_sid=3," * 30  # 243 bytes: over the 100-byte limit used here
    + b"\n"
    b"u4\t\xff\xfe\n"  # not UTF-8
    b"   \n"
    b"u5\td_sid=5"  # no final newline
)


def _lines(stream: bytes, block_bytes: int) -> list[RawLine]:
    return [
        line
        for first, lines in read_line_blocks(
            io.BytesIO(stream), max_bytes=100, block_bytes=block_bytes
        )
        for line in decode_lines(first, lines, max_bytes=100)
    ]


def test_lines_numbers_and_errors() -> None:
    lines = list(read_lines(io.BytesIO(CONTENT), max_bytes=100))
    assert [(line.number, line.text, line.error) for line in lines] == [
        (1, "u1\td_sid=1", None),
        (3, "u2\td_sid=2", None),
        (4, None, "line longer than 100 bytes"),
        (5, None, "not UTF-8 text (byte 4)"),
        (7, "u5\td_sid=5", None),
    ]
    assert lines[2].start.startswith("u3\td_sid=3,")


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 7, 64, 101, 102, 103, 250, 1 << 19])
def test_any_block_size_reads_the_same_lines(block_bytes: int) -> None:
    assert _lines(CONTENT, block_bytes) == list(read_lines(io.BytesIO(CONTENT), max_bytes=100))


def test_an_endless_line_is_never_held_whole() -> None:
    endless = b"u1\t" + b"d_sid=1," * 100_000 + b"d_sid=1\nu2\td_sid=2\n"
    blocks = list(read_line_blocks(io.BytesIO(endless), max_bytes=100, block_bytes=4096))
    # What a block holds stays near the block size: the over-long line is cut off.
    assert (
        max(sum(len(line) for line in lines if isinstance(line, bytes)) for _, lines in blocks)
        < 4096 + 200
    )
    lines = list(read_lines(io.BytesIO(endless), max_bytes=100))
    assert [(line.number, line.text) for line in lines] == [(1, None), (2, "u2\td_sid=2")]


@pytest.mark.parametrize("prefix", [b"", b"\n", b"\r"])
@pytest.mark.parametrize("block_bytes", [1, 2, 3, 4096])
def test_blank_lines_are_counted_not_split(prefix: bytes, block_bytes: int) -> None:
    """Reads of nothing but line ends (CRLF or LF, cut anywhere) are counted: blocks without
    lines say how far the file is read; the lines after them keep their numbers."""
    content = prefix + b"\r\n" * 20_000 + b"\n" * 20_000 + b"u1\td_sid=1\r\n" + b"\r\n" * 3
    blocks = list(read_line_blocks(io.BytesIO(content), max_bytes=100, block_bytes=block_bytes))
    number = 40_001 + (prefix == b"\n")  # a lone "\r" is no line end: it joins the next line
    assert [(line.number, line.text) for line in read_lines(io.BytesIO(content))] == [
        (number, "u1\td_sid=1")
    ]
    assert _lines(content, block_bytes) == [RawLine(number, "u1\td_sid=1", None, "u1\td_sid=1")]
    if block_bytes == 4096:  # the blank reads: no line split out of them
        assert sum(len(lines) for _, lines in blocks) < 4096
        counted = [first - 1 for first, lines in blocks if not lines]
        assert counted == sorted(counted)
        assert counted[-1] >= 35_000
