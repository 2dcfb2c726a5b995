"""The outbound templates of SPEC §6: every macro, the examples byte for byte, and the
errors staff see when they save a wrong one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from partners.outbound.templates import (
    DEFAULT_FILE_NAME,
    DEFAULT_ROW,
    TemplateError,
    compile_file_name_template,
    compile_row_template,
    timestamp_text,
)

MOMENT = datetime(2026, 11, 28, 14, 0, 5, 123000, tzinfo=UTC)
FILE = {
    "SYNC_TYPE": "s3",
    "ORDER_ID": 77,
    "DPID": 21,
    "MASTER_DPID": 20,
    "PID_ALIAS": "acme",
    "SYNC_MODE": "iter",
    "TIMESTAMP": MOMENT,
}


def _segment(sid: int, alias: str, updated: int, realized: int) -> dict[str, Any]:
    return {
        "sid": sid,
        "alias": alias,
        "type": 5,
        "lastUpdateTime": updated,
        "lastRealizationTime": realized,
    }


ROW: dict[str, Any] = {
    "UUID": "12345678901234567890123456789012345678",
    "DP_UUID": "u-1",
    "DP_UUID_LIST": [{"value": "u-1"}, {"value": "u-2"}],
    "PID": 1001,
    "PIDALIAS": "acme",
    "DPID": 21,
    "ORDER_ID": 77,
    "SEGMENT_LIST": [
        _segment(11, "sports", 1700000000, 1699990000),
        _segment(12, "golf", 1700000100, 1699990100),
    ],
    "REMOVED_SEGMENT_LIST": [_segment(13, "tennis", 1700000200, 1699990200)],
    "TRAIT_LIST": [
        {"traitId": 10, "type": 10, "lastRealized": 1699990000},
        {"traitId": 99, "type": 3, "lastRealized": 1699990500},
    ],
}


def test_the_default_file_name_single_and_split() -> None:
    template = compile_file_name_template(DEFAULT_FILE_NAME)
    assert template.render({**FILE, "SPLITNUM": ""}) == "s3_77_21_iter_1795874405123.sync"
    assert template.render({**FILE, "SPLITNUM": "002"}) == "s3_77_21_iter_1795874405123002.sync"
    assert template.uses == {"SYNC_TYPE", "ORDER_ID", "DPID", "SYNC_MODE", "TIMESTAMP", "SPLITNUM"}


def test_every_file_name_macro_and_timestamp_formats() -> None:
    template = compile_file_name_template(
        '<PID_ALIAS>-<MASTER_DPID>-<DPID>_<TIMESTAMP; format="yyyyMMddHHmmss">_SPLITNUM.gz'
    )
    assert template.render({**FILE, "SPLITNUM": "001"}) == "acme-20-21_20261128140005_001.gz"
    assert timestamp_text(MOMENT, "yyyy-MM-dd'T'HH:mm:ss.SSS") == "2026-11-28'T'14:00:05.123"
    assert timestamp_text(MOMENT, "yyMMdd") == "261128"
    assert timestamp_text(MOMENT, None) == "1795874405123"


def test_the_default_row() -> None:
    row = compile_row_template(DEFAULT_ROW).render(ROW)
    assert row == "12345678901234567890123456789012345678 11,12 13"


def test_every_row_macro() -> None:
    source = (
        "<UUID><TAB><DP_UUID><ASCII_SOH><PID><COMMA><PIDALIAS><COMMA><DPID><COMMA><ORDER_ID>"
        "<OPEN_CURLY_BRACKET><SET_ATTRIBUTES><OUTPUT_ATTRIBUTE_VALUE><CLOSE_CURLY_BRACKET>"
        '<DP_UUID_LIST;separator="|">'
    )
    assert compile_row_template(source).render(ROW) == (
        "12345678901234567890123456789012345678\tu-1\x011001,acme,21,77{11}u-1|u-2"
    )


def test_lists_with_item_templates() -> None:
    template = compile_row_template(
        '<UUID>\t<SEGMENT_LIST:{seg|<seg.sid>,<seg.lastUpdateTime>}; separator=",">'
    )
    assert template.render(ROW) == (
        "12345678901234567890123456789012345678\t11,1700000000,12,1700000100"
    )
    every = compile_row_template(
        "<SEGMENT_LIST:{s|<s.sid>:<s.alias>:<s.type>:<s.lastUpdateTime>:<s.lastRealizationTime>};"
        ' separator=";">/<REMOVED_SEGMENT_LIST:{s|<s.alias>}>/'
        '<TRAIT_LIST:{t|<t.traitId>.<t.type>.<t.lastRealized>}; separator=" ">'
        "/<DP_UUID_LIST:{d|<OPEN_CURLY_BRACKET><d.value>@<DPID><CLOSE_CURLY_BRACKET>}>"
    )
    assert every.render(ROW) == (
        "11:sports:5:1700000000:1699990000;12:golf:5:1700000100:1699990100/tennis/"
        "10.10.1699990000 99.3.1699990500/{u-1@21}{u-2@21}"
    )


def test_the_conditional_prints_when_every_list_has_items() -> None:
    template = compile_row_template(
        "<UUID><if(SEGMENT_LIST && REMOVED_SEGMENT_LIST)>\tboth<endif><if(SEGMENT_LIST)>\tin<endif>"
    )
    assert template.render(ROW) == "12345678901234567890123456789012345678\tboth\tin"
    assert template.render({**ROW, "REMOVED_SEGMENT_LIST": []}).endswith("78\tin")
    assert template.render({**ROW, "SEGMENT_LIST": []}) == ROW["UUID"]


def test_separators_take_escapes() -> None:
    template = compile_row_template('<SEGMENT_LIST;separator="\\t">')
    assert template.render(ROW) == "11\t12"


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("<UUID> <SEGMENTS>", "unknown macro 'SEGMENTS'", 9),
        ("<UUID", "the tag opened at column 1 is not closed with '>'", 6),
        ("<UUID>>", "a '>' with no '<' before it", 7),
        ("<if(SEGMENT_LIST)>x", "<if(…)> without its <endif>", 1),
        ("x<endif>", "<endif> without an <if(…)>", 2),
        ("<if(UUID)>x<endif>", "<if(…)> tests lists, and 'UUID' is not one", 5),
        ('<SEGMENT_LIST;sep=",">', "unknown option 'sep' (allowed: separator)", 15),
        ('<SEGMENT_LIST;separator=",>', "unclosed quote", 25),
        ("<SEGMENT_LIST:{s|<s.name>}>", "an item has no field 'name'", 21),
        ("<SEGMENT_LIST:{s|<seg.sid>}>", "unknown name 'seg' (the item is called 's')", 19),
        ("<SEGMENT_LIST:{s|<s.sid>", "the item template opened at column 15 is not closed", 15),
        ("<SEGMENT_LIST:{s <s.sid>}>", "expected '|' after the item's name", 18),
    ],
)
def test_row_template_errors_say_what_and_where(source: str, message: str, column: int) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_row_template(source)
    assert caught.value.message.startswith(message)
    assert caught.value.column == column


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("<SYNC_TYPE>_<UUID>.sync", "unknown macro 'UUID'"),
        ("<SEGMENT_LIST>.sync", "unknown macro 'SEGMENT_LIST'"),
        ('<TIMESTAMP; format="yyyyMMddQQ">', "unknown date letters 'yyyyMMddQQ'"),
        ('<DPID; format="x">', "unknown option 'format'"),
        ("<if(SEGMENT_LIST)>x<endif>", "unknown macro 'if'"),
    ],
)
def test_file_name_template_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        compile_file_name_template(source)


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "a/b", "a\\b", "/abs", "x..y", "x\x00y", "x\ty", "x\x85y", "x\x7fy"],
)
def test_a_rendered_name_that_is_not_a_plain_file_name_is_refused(name: str) -> None:
    from partners.outbound.templates import file_name_refusal

    assert file_name_refusal(name)


def test_plain_names_pass() -> None:
    from partners.outbound.templates import file_name_refusal

    for name in ("s3_7_21_full_1764338405123.sync.gz", "acme.2026-11-28_14.00.05.sync.001"):
        assert file_name_refusal(name) is None
