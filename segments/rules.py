"""The two small rule languages of the platform (SPEC §3.4 and §5).

Pure: text in, a typed tree out, or a :class:`RuleError` that names the column where the
rule went wrong. No Django, no database: the models call these as validators, the inbound
engine evaluates trait rules against a line's key-value signals, and the segment engine
evaluates segment rules against a profile's traits.

Trait rule::

    age > 30 AND (gender == "male" OR region startswith "eu") NOT ic == "test"

Segment rule::

    (1234T OR 5678T) AND NOT 9999T
    [1234T,5678T] <= 30D AND 42T

Precedence in both: parentheses > comparisons > AND (and AND NOT) > OR. ``NOT`` between two
terms means ``AND NOT``; at the start of a term it negates that term.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import re2

# Bounds that keep a rule's parse and evaluation (both recursive) far from Python's
# recursion limit, and a worker's time per line small: a rule past them is refused when
# saved, with a clear error, instead of failing every batch that meets it.
MAX_NESTING = 20  # parentheses and NOTs, one inside another
MAX_TERMS = 500  # comparisons (trait rules) or trait references (segment rules)


class RuleError(ValueError):
    """A rule that does not parse. ``column`` is 1-based, counted in characters."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message, column)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return f"{self.message} at column {self.column}"


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # see the tokenizers below
    text: str
    column: int


_KEYWORDS = {"AND", "OR", "NOT"}
_TEXT_OPERATORS = {"contains", "startswith", "endswith", "matchesregex"}
_SYMBOL_OPERATORS = {"==": "==", "!=": "!=", "<=": "<=", ">=": ">=", "=>": ">=", "<": "<", ">": ">"}
_KEY_RE = re.compile(r"[A-Za-z0-9_-]*[A-Za-z][A-Za-z0-9_-]*")
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string starting at ``text[start]``; return (value, index after it)."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        # Only the quote and the backslash itself are escaped, so regexes keep their "\d".
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise RuleError("unterminated string", start + 1)


def _read_operator(text: str, start: int, chars: str, allowed: set[str]) -> tuple[Token, int]:
    """Read a run of operator characters; return its token and the index after it."""
    end = start
    while end < len(text) and text[end] in chars:
        end += 1
    symbol = text[start:end]
    if symbol not in allowed:
        raise RuleError(f"unknown operator '{symbol}'", start + 1)
    return Token("op", _SYMBOL_OPERATORS[symbol], start + 1), end


def _tokenize_trait_rule(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        column = i + 1
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append(Token(ch, ch, column))
            i += 1
        elif ch in "\"'":
            value, i = _read_quoted(text, i)
            tokens.append(Token("string", value, column))
        elif ch in "=!<>~":
            token, i = _read_operator(text, i, "=!<>~", set(_SYMBOL_OPERATORS))
            tokens.append(token)
        elif ch.isalnum() or ch in "_-.+":
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] in "_-.+:"):
                j += 1
            word = text[i:j]
            if word.upper() in _KEYWORDS:
                tokens.append(Token(word.upper(), word, column))
            elif word.lower() in _TEXT_OPERATORS:
                tokens.append(Token("op", word.lower(), column))
            else:
                tokens.append(Token("word", word, column))
            i = j
        else:
            raise RuleError(f"unexpected character '{ch}'", column)
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _tokenize_segment_rule(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        column = i + 1
        if ch.isspace():
            i += 1
        elif ch in "()[],":
            tokens.append(Token(ch, ch, column))
            i += 1
        elif ch in "=!<>":
            token, i = _read_operator(text, i, "=!<>", {"<=", ">=", "=>", "<", ">"})
            tokens.append(token)
        elif ch.isalnum() or ch == "_":
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            upper = word.upper()
            if upper in _KEYWORDS:
                tokens.append(Token(upper, word, column))
            elif re.fullmatch(r"\d+T", upper):
                tokens.append(Token("trait", word, column))
            elif re.fullmatch(r"\d+D", upper):
                tokens.append(Token("days", word, column))
            elif word.isdigit():
                raise RuleError(
                    f"trait reference '{word}' must end in 'T' (like '{word}T')", column
                )
            else:
                raise RuleError(f"unexpected token '{word}'", column)
            i = j
        else:
            raise RuleError(f"unexpected character '{ch}'", column)
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


# --------------------------------------------------------------------------- trees

# The boolean skeleton is shared by both languages; its leaves are Comparison (trait rules)
# or TraitRef / Recency (segment rules).


@dataclass(frozen=True, slots=True)
class And:
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class Or:
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class Not:
    operand: Any


@dataclass(frozen=True, slots=True)
class Comparison:
    """``key <op> value`` of a trait rule. ``key`` and ``value`` are stored casefolded."""

    key: str
    op: str
    value: str
    number: float | None
    pattern: Any = None  # an RE2 pattern (linear time): see _regex


@dataclass(frozen=True, slots=True)
class TraitRef:
    sid: int


@dataclass(frozen=True, slots=True)
class Recency:
    """``[1T,2T] <= 30D``: one of the traits realized within (or beyond) ``days`` days."""

    sids: tuple[int, ...]
    op: str
    days: int


TraitRule = Comparison | And | Or | Not
SegmentRule = TraitRef | Recency | And | Or | Not
L = TypeVar("L")


class _Parser(Generic[L]):
    """Recursive descent over the boolean skeleton both languages share."""

    def __init__(self, tokens: list[Token], primary: Callable[[_Parser[L]], L]) -> None:
        self.tokens = tokens
        self.position = 0
        self._primary = primary
        self._nesting = 0
        self._terms = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.position]

    def advance(self) -> Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def unexpected(self, expected: str) -> RuleError:
        token = self.current
        if token.kind == "end":
            return RuleError(f"unexpected end of rule, expected {expected}", token.column)
        return RuleError(f"unexpected token '{token.text}', expected {expected}", token.column)

    def parse(self) -> Any:
        if self.current.kind == "end":
            raise RuleError("the rule is empty", 1)
        node = self.parse_or()
        if self.current.kind != "end":
            token = self.current
            raise RuleError(f"unexpected token '{token.text}'", token.column)
        return node

    def parse_or(self) -> Any:
        node = self.parse_and()
        while self.current.kind == "OR":
            self.advance()
            node = Or(node, self.parse_and())
        return node

    def parse_and(self) -> Any:
        node = self.parse_unary()
        while self.current.kind in ("AND", "NOT"):
            if self.advance().kind == "AND" and self.current.kind != "NOT":
                node = And(node, self.parse_unary())
            else:
                if self.current.kind == "NOT":  # "AND NOT"
                    self.advance()
                node = And(node, Not(self.parse_unary()))
        return node

    def parse_unary(self) -> Any:
        if self.current.kind in ("NOT", "("):
            self._nesting += 1
            if self._nesting > MAX_NESTING:
                raise RuleError(
                    f"the rule nests more than {MAX_NESTING} levels deep (parentheses and NOT):"
                    " simplify it",
                    self.current.column,
                )
            try:
                return self._nested()
            finally:
                self._nesting -= 1
        self._terms += 1
        if self._terms > MAX_TERMS:
            raise RuleError(
                f"the rule has more than {MAX_TERMS} terms: split it into several",
                self.current.column,
            )
        return self._primary(self)

    def _nested(self) -> Any:
        if self.advance().kind == "NOT":
            return Not(self.parse_unary())
        node = self.parse_or()
        if self.current.kind != ")":
            raise self.unexpected("')'")
        self.advance()
        return node


def _comparison(parser: _Parser[Comparison]) -> Comparison:
    key_token = parser.current
    if key_token.kind not in ("word", "string"):
        raise parser.unexpected("a key")
    if not _KEY_RE.fullmatch(key_token.text):
        raise RuleError(
            f"invalid key '{key_token.text}' (use letters, digits, '_' and '-', "
            "with at least one letter)",
            key_token.column,
        )
    parser.advance()
    op_token = parser.current
    if op_token.kind != "op":
        raise parser.unexpected("an operator (==, !=, <, >, <=, >=, contains, startswith, …)")
    parser.advance()
    value_token = parser.current
    if value_token.kind not in ("word", "string"):
        raise parser.unexpected("a value")
    parser.advance()
    value = value_token.text
    number = float(value) if _NUMBER_RE.fullmatch(value) else None
    pattern = None
    if op_token.text == "matchesregex":
        pattern = _regex(value, value_token.column)
    return Comparison(key_token.text.casefold(), op_token.text, value.casefold(), number, pattern)


def _regex(value: str, column: int) -> Any:
    """``value`` compiled by RE2, case-insensitive. RE2 matches in time linear in the value,
    so no pattern (``^(a+)+$`` included) can stall a worker on a partner's value; what it
    cannot do in linear time (backreferences, look-arounds) it refuses, here, when saved."""
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # the error is the rule's, reported to staff below
    try:
        return re2.compile(value, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RuleError(
            f"invalid regular expression: {detail} (RE2 syntax: no backreferences or look-arounds)",
            column,
        ) from None


def _segment_term(parser: _Parser[TraitRef | Recency]) -> TraitRef | Recency:
    token = parser.current
    if token.kind == "trait":
        parser.advance()
        return TraitRef(int(token.text[:-1]))
    if token.kind != "[":
        raise parser.unexpected("a trait reference like '1234T'")
    parser.advance()
    sids: list[int] = []
    while True:
        if parser.current.kind != "trait":
            raise parser.unexpected("a trait reference like '1234T'")
        sids.append(int(parser.advance().text[:-1]))
        if parser.current.kind == ",":
            parser.advance()
            continue
        if parser.current.kind == "]":
            parser.advance()
            break
        raise parser.unexpected("',' or ']'")
    if parser.current.kind != "op":
        raise parser.unexpected("a recency operator like '<='")
    op = parser.advance().text
    if parser.current.kind != "days":
        raise parser.unexpected("a number of days like '30D'")
    return Recency(tuple(sids), op, int(parser.advance().text[:-1]))


def parse_trait_rule(text: str) -> TraitRule:
    """Parse a trait rule; raise :class:`RuleError` pointing at the first problem."""
    return _Parser(_tokenize_trait_rule(text), _comparison).parse()


def parse_segment_rule(text: str) -> SegmentRule:
    """Parse a segment rule; raise :class:`RuleError` pointing at the first problem."""
    return _Parser(_tokenize_segment_rule(text), _segment_term).parse()


# --------------------------------------------------------------------------- walking


def _leaves(node: Any) -> Iterator[Any]:
    if isinstance(node, And | Or):
        yield from _leaves(node.left)
        yield from _leaves(node.right)
    elif isinstance(node, Not):
        yield from _leaves(node.operand)
    else:
        yield node


def trait_rule_keys(rule: TraitRule) -> set[str]:
    """The (casefolded) signal keys a trait rule reads."""
    return {leaf.key for leaf in _leaves(rule)}


def trait_rule_comparisons(rule: TraitRule) -> list[Comparison]:
    return list(_leaves(rule))


def segment_rule_sids(rule: SegmentRule) -> set[int]:
    """Every trait SID a segment rule refers to."""
    sids: set[int] = set()
    for leaf in _leaves(rule):
        sids.update(leaf.sids if isinstance(leaf, Recency) else (leaf.sid,))
    return sids


def _evaluate(node: Any, leaf: Callable[[Any], bool]) -> bool:
    if isinstance(node, And):
        return _evaluate(node.left, leaf) and _evaluate(node.right, leaf)
    if isinstance(node, Or):
        return _evaluate(node.left, leaf) or _evaluate(node.right, leaf)
    if isinstance(node, Not):
        return not _evaluate(node.operand, leaf)
    return leaf(node)


def _as_number(value: str) -> float | None:
    return float(value) if _NUMBER_RE.fullmatch(value) else None


def comparison_holds(comparison: Comparison, value: str) -> bool:
    """Whether one (casefolded) signal value satisfies one comparison."""
    op = comparison.op
    if op == "contains":
        return comparison.value in value
    if op == "startswith":
        return value.startswith(comparison.value)
    if op == "endswith":
        return value.endswith(comparison.value)
    if op == "matchesregex":
        assert comparison.pattern is not None
        return comparison.pattern.search(value) is not None
    left: float | str = value
    right: float | str = comparison.value
    number = _as_number(value)
    if comparison.number is not None and number is not None:
        left, right = number, comparison.number
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if isinstance(left, float) != isinstance(right, float):  # pragma: no cover - guarded above
        return False
    if op == "<":
        return left < right  # type: ignore[operator]
    if op == ">":
        return left > right  # type: ignore[operator]
    if op == "<=":
        return left <= right  # type: ignore[operator]
    return left >= right  # type: ignore[operator]


def trait_rule_matches(rule: TraitRule, signals: Mapping[str, Sequence[str]]) -> bool:
    """Whether key-value ``signals`` (casefolded key -> casefolded values) satisfy ``rule``.

    A comparison holds when any value of its key satisfies it; a missing key satisfies
    nothing (so ``color != "red"`` needs a ``color`` signal).
    """
    return _evaluate(rule, lambda c: any(comparison_holds(c, v) for v in signals.get(c.key, ())))


def segment_rule_matches(
    rule: SegmentRule, realized: Mapping[int, datetime], *, now: datetime
) -> bool:
    """Whether a profile holding traits ``realized`` (SID -> last realization) is a member."""

    def holds(term: TraitRef | Recency) -> bool:
        if isinstance(term, TraitRef):
            return term.sid in realized
        limit = timedelta(days=term.days)
        ages = [now - realized[sid] for sid in term.sids if sid in realized]
        return any(
            {"<=": age <= limit, "<": age < limit, ">=": age >= limit, ">": age > limit}[term.op]
            for age in ages
        )

    return _evaluate(rule, holds)
