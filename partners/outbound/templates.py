"""The outbound file-name and row templates (SPEC §6). Pure: text in, a compiled template out.

A small, strict relative of StringTemplate, with only the macros of SPEC §6:

    <UUID>  <DPID>  <TAB>                     a value
    <TIMESTAMP; format="yyyyMMddHHmmss">      a value with options
    <SEGMENT_LIST; separator=",">             a list, each item as its default field
    <SEGMENT_LIST:{seg|<seg.sid>=<seg.alias>}; separator=",">   each item by a template
    <if(SEGMENT_LIST && REMOVED_SEGMENT_LIST)> … <endif>        when every list is non-empty
    SPLITNUM                                  (file names; no brackets) the part number

Anything else between ``<`` and ``>`` is refused when the template is compiled, with the
column where it goes wrong, so staff learn of a mistake when they save, not at 14:00.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from partners.inbound.lines import CONTROL_CHARACTER

# What a rendered value is made of: plain values, and lists of items (mappings of fields).
Context = Mapping[str, Any]
_Part = Callable[[Context], str]


class TemplateError(ValueError):
    """A template that cannot be used; ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (at column {column})")
        self.message = message
        self.column = column


CONSTANTS = {
    "TAB": "\t",
    "ASCII_SOH": "\x01",
    "COMMA": ",",
    "OPEN_CURLY_BRACKET": "{",
    "CLOSE_CURLY_BRACKET": "}",
    "SET_ATTRIBUTES": "1",
    "OUTPUT_ATTRIBUTE_VALUE": "1",
}
# Lists, with the fields their items have and the field an item prints by default.
LISTS: dict[str, tuple[frozenset[str], str]] = {
    "SEGMENT_LIST": (
        frozenset({"sid", "alias", "type", "lastUpdateTime", "lastRealizationTime"}),
        "sid",
    ),
    "REMOVED_SEGMENT_LIST": (
        frozenset({"sid", "alias", "type", "lastUpdateTime", "lastRealizationTime"}),
        "sid",
    ),
    "TRAIT_LIST": (frozenset({"traitId", "type", "lastRealized"}), "traitId"),
    "DP_UUID_LIST": (frozenset({"value"}), "value"),
}
ROW_VALUES = frozenset({"UUID", "DP_UUID", "PID", "PIDALIAS", "DPID", "ORDER_ID"})
FILE_NAME_VALUES = frozenset(
    {"SYNC_TYPE", "ORDER_ID", "DPID", "MASTER_DPID", "PID_ALIAS", "SYNC_MODE", "TIMESTAMP"}
)

DEFAULT_FILE_NAME = "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync"
DEFAULT_ROW = '<UUID> <SEGMENT_LIST;separator=","> <REMOVED_SEGMENT_LIST;separator=",">'

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = re.compile(r"\s*")
# Java date-format letters partners know from the original format, as strftime.
_DATE_LETTERS = [
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
]


@dataclass(frozen=True)
class Template:
    """A compiled template: ``render(context)`` gives the text. ``sql`` is the same rendering
    as one SQL expression over an export row ``r`` whose list columns are ``sql_lists`` (see
    ``partners.outbound.export.destination_lines``), when every macro it uses can be computed
    in SQL; None otherwise."""

    source: str
    parts: tuple[_Part, ...]
    uses: frozenset[str]  # the macros it names (what the caller must provide)
    sql: str | None = None
    sql_lists: tuple[SqlList, ...] = ()

    def render(self, context: Context) -> str:
        return "".join(part(context) for part in self.parts)


# Rendering in SQL (what PostgreSQL can render, it renders, for speed): each part carries its
# SQL twin, or None. An export row ``r`` has uuid, dpuuid, n_joined and n_removed (how many
# segments each list has) and one text column per list occurrence, l0, l1, … (SqlList): the
# list already joined by PostgreSQL's aggregate. Row constants are parameters %(c_PID)s ….
SEGMENT_TYPE = 5  # a segment item's "type" (SPEC §6)
_SQL_COUNTS = {"SEGMENT_LIST": "r.n_joined", "REMOVED_SEGMENT_LIST": "r.n_removed"}
_SQL_VALUES = {"UUID": "r.uuid", "DP_UUID": "r.dpuuid"}
# An item's fields inside that aggregate: ``u`` is the membership (sid, at: epoch seconds),
# ``seg`` the destination's segment (sid, alias).
_SQL_FIELDS = {
    "sid": "u.sid::text",
    "alias": "seg.alias",
    "type": f"'{SEGMENT_TYPE}'",
    "lastUpdateTime": "u.at::text",
    "lastRealizationTime": "u.at::text",
}
# What an item may use and still be rendered once per segment (then looked up, not rendered
# per row), and what it may use and still be rendered by SQL per membership (its time).
_PER_SEGMENT = frozenset({"sid", "alias", "type", "PID", "PIDALIAS", "DPID", "ORDER_ID"})
_PER_MEMBERSHIP = _PER_SEGMENT | {"lastUpdateTime", "lastRealizationTime"}
_ROW_DEPENDENT = "<row>"  # an item that names the row's lists or IDs: rendered in Python


@dataclass(frozen=True)
class SqlList:
    """One segment-list occurrence of a row template, joined by PostgreSQL as column
    ``l<k>`` of the export row. Its item is either rendered once per segment in Python
    (``item_sql`` None: ``render_item(constants, {sid, alias, type})``) or, when it shows the
    membership's time, by ``item_sql`` for each membership."""

    joined: bool  # SEGMENT_LIST; False: REMOVED_SEGMENT_LIST
    separator: str
    render_item: Callable[[Context, Any], str]
    item_sql: str | None


def _sql_literal(text: str) -> str:
    # '%' doubled: the expression runs with named parameters.
    return "'" + text.replace("'", "''").replace("%", "%%") + "'"


def _with_sql(part: _Part, sql: str | None) -> _Part:
    part.sql = sql  # type: ignore[attr-defined]
    return part


def _sql_of(parts: Sequence[_Part]) -> str | None:
    pieces = [getattr(part, "sql", None) for part in parts]
    if any(piece is None for piece in pieces):
        return None
    if not pieces:
        return "''"
    return "concat(" + ", ".join(str(piece) for piece in pieces) + ")"


def compile_file_name_template(source: str) -> Template:
    """A file-name template: the file-name macros, TIMESTAMP's format, SPLITNUM."""
    return _Parser(source, values=FILE_NAME_VALUES, lists=False).template()


# Why a rendered file name may not be used. The storages join "<partner>/<folder>/<name>", so a
# name with a path in it ("../../globex/date=…/x.sync") would put one partner's export in
# another partner's inbound folder: a name must be one plain step, nothing else.
NAME_LEAVES_FOLDER = (
    "a file name cannot hold '/', '\\' or '..': the destination's folder is set apart"
)
NAME_CONTROL = "a file name cannot hold control characters"
NAME_EMPTY = "the file name is empty"


def file_name_refusal(name: str) -> str | None:
    """Why ``name`` (rendered) is not a plain file name in the destination's folder, in
    staff's words; None when it is one."""
    if not name:
        return NAME_EMPTY
    if "/" in name or "\\" in name or ".." in name or name == ".":
        return f"{NAME_LEAVES_FOLDER} (it would be {name!r})"
    control = CONTROL_CHARACTER.search(name)  # NUL, C0, DEL, C1
    if control:
        return f"{NAME_CONTROL} (U+{ord(control[0]):04X} in {name!r})"
    return None


def file_name_template_refusal(template: Template, *, pid_alias: str = "alias") -> str | None:
    """Why the names a file-name template makes are not plain file names, from sample values
    (when it is saved: the literal text, the date format). The run checks each real name
    again, since PID_ALIAS is free text."""
    sample = {
        "SYNC_TYPE": "s3",
        "ORDER_ID": 1,
        "DPID": 1,
        "MASTER_DPID": 1,
        "PID_ALIAS": pid_alias,
        "SYNC_MODE": "full",
        "TIMESTAMP": datetime(2026, 1, 1, tzinfo=UTC),
    }
    for splitnum in ("", "001"):
        refusal = file_name_refusal(template.render({**sample, "SPLITNUM": splitnum}))
        if refusal:
            return refusal
    return None


def compile_row_template(source: str) -> Template:
    """A row template: the row macros, lists with item templates, the conditional."""
    return _Parser(source, values=ROW_VALUES, lists=True).template()


def timestamp_text(moment: datetime, pattern: str | None) -> str:
    """``TIMESTAMP``: UTC milliseconds (13 digits) by default, else the date pattern."""
    moment = moment.astimezone(UTC)
    if pattern is None:
        return str(int(moment.timestamp() * 1000))
    out = []
    rest = pattern
    while rest:
        for letters, code in _DATE_LETTERS:
            if rest.startswith(letters):
                out.append(moment.strftime(code))
                rest = rest[len(letters) :]
                break
        else:
            if rest.startswith("SSS"):
                out.append(f"{moment.microsecond // 1000:03d}")
                rest = rest[3:]
            else:
                out.append(rest[0])
                rest = rest[1:]
    return "".join(out)


def _check_date_pattern(pattern: str, column: int) -> None:
    letters = re.findall(r"[A-Za-z]+", pattern)
    known = {"yyyy", "yy", "MM", "dd", "HH", "mm", "ss", "SSS"}
    for run in letters:
        rest = run
        while rest:
            for token in ("yyyy", "SSS", "yy", "MM", "dd", "HH", "mm", "ss"):
                if rest.startswith(token):
                    rest = rest[len(token) :]
                    break
            else:
                raise TemplateError(
                    f"unknown date letters {run!r} in the format (use {', '.join(sorted(known))})",
                    column,
                )


def _constant(text: str, context: Context) -> str:
    return text


def _item_by_template(body: Sequence[_Part], var: str, context: Context, value: Any) -> str:
    scope = _ItemScope(context, var, value)
    return "".join(part(scope) for part in body)


def _item_field(field: str, context: Context, value: Any) -> str:
    return str(value[field])


class _ItemScope(Mapping[str, Any]):
    """Inside an item template: the item by its name, then everything outside."""

    def __init__(self, outer: Context, var: str, value: Any) -> None:
        self.outer, self.var, self.value = outer, var, value

    def __getitem__(self, key: str) -> Any:
        return self.value if key == self.var else self.outer[key]

    def __iter__(self) -> Any:
        return iter({self.var, *self.outer})

    def __len__(self) -> int:
        return len({self.var, *self.outer})


class _Parser:
    def __init__(self, source: str, *, values: frozenset[str], lists: bool) -> None:
        self.text = source
        self.pos = 0
        self.values = values
        self.lists = lists
        self.uses: set[str] = set()
        self.sql_lists: list[SqlList] = []
        self.item_uses: set[str] | None = None  # inside an item template: what it names

    # -- helpers
    def error(self, message: str, pos: int | None = None) -> TemplateError:
        return TemplateError(message, (self.pos if pos is None else pos) + 1)

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def expect(self, literal: str, what: str) -> None:
        if not self.peek(literal):
            found = self.text[self.pos : self.pos + 10] or "the end"
            raise self.error(f"expected {what}, found {found!r}")
        self.pos += len(literal)

    def skip_space(self) -> None:
        match = _SPACE.match(self.text, self.pos)
        assert match
        self.pos = match.end()

    def name(self) -> str:
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.error("expected a macro name")
        self.pos = match.end()
        return match.group()

    def quoted(self) -> str:
        start = self.pos
        self.expect('"', "a quoted value")
        out = []
        while not self.peek('"'):
            if self.pos >= len(self.text):
                raise self.error("unclosed quote", start)
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                escaped = self.text[self.pos + 1]
                out.append({"t": "\t", "n": "\n", "r": "\r"}.get(escaped, escaped))
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        self.pos += 1
        return "".join(out)

    # -- grammar
    def template(self) -> Template:
        parts = self.sequence(end=None, item=None)
        return Template(
            self.text,
            tuple(parts),
            frozenset(self.uses),
            _sql_of(parts) if self.lists else None,
            tuple(self.sql_lists),
        )

    def sequence(
        self, *, end: str | None, item: tuple[str, frozenset[str]] | None, opened: int = 0
    ) -> list[_Part]:
        """Text and tags up to ``end`` ('}' in an item template, '<endif>' in an if opened
        at ``opened``)."""
        parts: list[_Part] = []
        literal: list[str] = []

        def flush() -> None:
            if literal:
                text = "".join(literal)
                parts.append(_with_sql(functools.partial(_constant, text), _sql_literal(text)))
                literal.clear()

        while self.pos < len(self.text):
            if end == "}" and self.peek("}"):
                break
            if end == "<endif>" and self.peek("<endif>"):
                break
            if self.peek(">"):
                raise self.error("a '>' with no '<' before it")
            if not self.lists and self.peek("SPLITNUM"):
                flush()
                self.pos += len("SPLITNUM")
                self.uses.add("SPLITNUM")
                parts.append(lambda context: str(context.get("SPLITNUM", "")))
                continue
            if self.peek("<"):
                flush()
                parts.append(self.tag(item))
                continue
            literal.append(self.text[self.pos])
            self.pos += 1
        else:
            if end == "}":
                raise self.error(
                    f"the item template opened at column {opened + 1} is not closed with '}}'",
                    opened,
                )
            if end == "<endif>":
                raise self.error("<if(…)> without its <endif>", opened)
        flush()
        return parts

    def tag(self, item: tuple[str, frozenset[str]] | None) -> _Part:
        start = self.pos
        self.expect("<", "'<'")
        self.skip_space()
        if self.peek("endif>"):
            raise self.error("<endif> without an <if(…)>", start)
        if self.peek("if(") and self.lists:
            if self.item_uses is not None:
                self.item_uses.add(_ROW_DEPENDENT)
            return self.conditional(item)
        name = self.name()
        if item is not None and self.peek("."):
            return self.field(name, item, start)
        self.skip_space()
        if name in CONSTANTS:
            value = CONSTANTS[name]
            self.close(start)
            return _with_sql(functools.partial(_constant, value), _sql_literal(value))
        if name in self.values:
            self.uses.add(name)
            return self.value(name, start)
        if name in LISTS and self.lists:
            self.uses.add(name)
            if self.item_uses is not None:
                self.item_uses.add(_ROW_DEPENDENT)
            return self.list_(name, start)
        allowed = sorted(set(CONSTANTS) | set(self.values) | (set(LISTS) if self.lists else set()))
        raise self.error(f"unknown macro {name!r} (known: {', '.join(allowed)})", start + 1)

    def close(self, start: int) -> None:
        self.skip_space()
        if not self.peek(">"):
            raise self.error(f"the tag opened at column {start + 1} is not closed with '>'")
        self.pos += 1

    def options(self, allowed: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        while self.peek(";") or (found and self.peek(",")):
            self.pos += 1
            self.skip_space()
            at = self.pos
            key = self.name()
            if key not in allowed:
                raise self.error(
                    f"unknown option {key!r}"
                    + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""),
                    at,
                )
            self.skip_space()
            self.expect("=", "'=' after the option")
            self.skip_space()
            found[key] = self.quoted()
            self.skip_space()
        return found

    def value(self, name: str, start: int) -> _Part:
        if self.item_uses is not None:
            self.item_uses.add(name)
        options = self.options({"format"} if name == "TIMESTAMP" else set())
        self.close(start)
        if name == "TIMESTAMP":
            pattern = options.get("format")
            if pattern is not None:
                _check_date_pattern(pattern, start + 1)
            return lambda context: timestamp_text(context["TIMESTAMP"], pattern)
        return _with_sql(
            lambda context: str(context[name]), _SQL_VALUES.get(name, f"%(c_{name})s::text")
        )

    def list_(self, name: str, start: int) -> _Part:
        fields, default = LISTS[name]
        render_item: Callable[[Context, Any], str]
        item_uses = {default}
        item_sql: str | None = _SQL_FIELDS.get(default)
        if self.peek(":"):
            self.pos += 1
            opened = self.pos
            self.expect("{", "'{' to start the item template")
            self.skip_space()
            var = self.name()
            self.skip_space()
            self.expect("|", "'|' after the item's name")
            outer_uses, self.item_uses = self.item_uses, set()
            body = self.sequence(end="}", item=(var, fields), opened=opened)
            item_uses, self.item_uses = self.item_uses, outer_uses
            self.expect("}", "'}'")
            render_item = functools.partial(_item_by_template, body, var)
            item_sql = _sql_of(body)
        else:
            render_item = functools.partial(_item_field, default)

        self.skip_space()
        separator = self.options({"separator"}).get("separator", "")
        self.close(start)
        sql = None
        per_segment = item_uses <= _PER_SEGMENT
        if name in _SQL_COUNTS and (per_segment or (item_uses <= _PER_MEMBERSHIP and item_sql)):
            sql = f"r.l{len(self.sql_lists)}"
            self.sql_lists.append(
                SqlList(
                    joined=name == "SEGMENT_LIST",
                    separator=separator,
                    render_item=render_item,
                    item_sql=None if per_segment else item_sql,
                )
            )
        return _with_sql(
            lambda context: separator.join(render_item(context, v) for v in context[name]), sql
        )

    def field(self, var: str, item: tuple[str, frozenset[str]], start: int) -> _Part:
        name, fields = item
        if var != name:
            raise self.error(f"unknown name {var!r} (the item is called {name!r})", start + 1)
        self.pos += 1
        at = self.pos
        field = self.name()
        if field not in fields:
            raise self.error(
                f"an item has no field {field!r} (fields: {', '.join(sorted(fields))})", at
            )
        self.close(start)
        assert self.item_uses is not None  # an item's field is read inside its item template
        self.item_uses.add(field)
        return _with_sql(lambda context: str(context[var][field]), _SQL_FIELDS.get(field))

    def conditional(self, item: tuple[str, frozenset[str]] | None) -> _Part:
        start = self.pos - 1
        self.expect("if(", "'if('")
        names: list[str] = []
        while True:
            self.skip_space()
            at = self.pos
            name = self.name()
            if name not in LISTS:
                raise self.error(f"<if(…)> tests lists, and {name!r} is not one", at)
            self.uses.add(name)
            names.append(name)
            self.skip_space()
            if self.peek("&&"):
                self.pos += 2
                continue
            break
        self.expect(")", "')' or '&&'")
        self.close(start)
        body = self.sequence(end="<endif>", item=item, opened=start)
        self.pos += len("<endif>")

        def render(context: Context, names: Sequence[str] = names) -> str:
            if all(context[name] for name in names):
                return "".join(part(context) for part in body)
            return ""

        body_sql = _sql_of(body)
        sql = None
        if body_sql is not None and all(name in _SQL_COUNTS for name in names):
            tests = " AND ".join(f"{_SQL_COUNTS[name]} > 0" for name in names)
            sql = f"(CASE WHEN {tests} THEN {body_sql} ELSE '' END)"
        return _with_sql(render, sql)
