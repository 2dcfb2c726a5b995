from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from segments.rules import (
    And,
    Comparison,
    Not,
    Or,
    Recency,
    RuleError,
    TraitRef,
    parse_segment_rule,
    parse_trait_rule,
    segment_rule_matches,
    segment_rule_sids,
    trait_rule_keys,
    trait_rule_matches,
)


def signals(**values: str | list[str]) -> dict[str, list[str]]:
    return {
        key.casefold(): [v.casefold() for v in (value if isinstance(value, list) else [value])]
        for key, value in values.items()
    }


class TestTraitRuleParsing:
    def test_comparison_with_every_operator(self) -> None:
        for op in ("==", "!=", "<", ">", "<=", ">=", "contains", "startswith", "endswith"):
            rule = parse_trait_rule(f'color {op} "Red"')
            assert isinstance(rule, Comparison)
            assert (rule.key, rule.op, rule.value) == ("color", op, "red")

    def test_arrow_operator_means_greater_or_equal(self) -> None:
        rule = parse_trait_rule("age => 30")
        assert isinstance(rule, Comparison)
        assert rule.op == ">="
        assert rule.number == 30.0

    def test_and_binds_tighter_than_or(self) -> None:
        rule = parse_trait_rule("a == 1 OR b == 2 AND c == 3")
        assert isinstance(rule, Or)
        assert isinstance(rule.right, And)

    def test_parentheses_override_precedence(self) -> None:
        rule = parse_trait_rule("(a == 1 OR b == 2) AND c == 3")
        assert isinstance(rule, And)
        assert isinstance(rule.left, Or)

    def test_not_between_terms_means_and_not(self) -> None:
        rule = parse_trait_rule("a == 1 NOT b == 2")
        assert rule == And(parse_trait_rule("a == 1"), Not(parse_trait_rule("b == 2")))
        assert parse_trait_rule("a == 1 AND NOT b == 2") == rule

    def test_keywords_are_case_insensitive(self) -> None:
        assert parse_trait_rule("a == 1 and b == 2") == parse_trait_rule("a == 1 AND b == 2")

    def test_quoted_keys_single_quotes_and_bare_values(self) -> None:
        rule = parse_trait_rule("\"Plans\" == '123' AND product-type == gold_plan")
        assert trait_rule_keys(rule) == {"plans", "product-type"}

    def test_string_may_hold_spaces_colons_and_escaped_quotes(self) -> None:
        rule = parse_trait_rule(r'expiry == "2013-01-26 00:00:00.000" OR q == "say \"hi\""')
        assert isinstance(rule, Or)
        assert isinstance(rule.right, Comparison)
        assert rule.right.value == 'say "hi"'

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ('age > 30 ANDD x == "1"', "unexpected token 'ANDD' at column 10"),
            ("age =~ 5", "unknown operator '=~' at column 5"),
            ("age ==", "unexpected end of rule, expected a value at column 7"),
            ("(age == 5", "unexpected end of rule, expected ')' at column 10"),
            ("age == 5)", "unexpected token ')' at column 9"),
            (
                "123 == 4",
                "invalid key '123' (use letters, digits, '_' and '-', with at least one"
                " letter) at column 1",
            ),
            ('x == "open', "unterminated string at column 6"),
            (
                'x matchesregex "[a"',
                "invalid regular expression: missing ]: [a (RE2 syntax: no backreferences or"
                " look-arounds) at column 16",
            ),
            ("x == 1 AND", "unexpected end of rule, expected a key at column 11"),
            (
                "age 30",
                "unexpected token '30', expected an operator (==, !=, <, >, <=, >=, "
                "contains, startswith, …) at column 5",
            ),
            ("a == 1 ; b == 2", "unexpected character ';' at column 8"),
            ("   ", "the rule is empty at column 1"),
        ],
    )
    def test_errors_point_at_the_column(self, text: str, message: str) -> None:
        with pytest.raises(RuleError) as caught:
            parse_trait_rule(text)
        assert str(caught.value) == message


class TestTraitRuleMatching:
    def test_numbers_compare_numerically(self) -> None:
        rule = parse_trait_rule("age >= 30 AND age < 50")
        assert trait_rule_matches(rule, signals(age="30"))
        assert trait_rule_matches(rule, signals(age="49.5"))
        assert not trait_rule_matches(rule, signals(age="9"))  # as text "9" > "30"
        assert not trait_rule_matches(rule, signals(age="50"))

    def test_text_compares_case_insensitively(self) -> None:
        rule = parse_trait_rule('Gender == "MALE"')
        assert trait_rule_matches(rule, signals(gender="male"))
        assert trait_rule_matches(parse_trait_rule("city < m"), signals(city="Berlin"))

    def test_text_operators(self) -> None:
        assert trait_rule_matches(parse_trait_rule('p contains "plan"'), signals(p="Annual Plan"))
        assert trait_rule_matches(parse_trait_rule("p startswith ann"), signals(p="Annual"))
        assert trait_rule_matches(parse_trait_rule("p endswith ual"), signals(p="Annual"))
        assert not trait_rule_matches(parse_trait_rule("p endswith ann"), signals(p="Annual"))
        rule = parse_trait_rule(r'zip matchesregex "^9\d{4}$"')
        assert trait_rule_matches(rule, signals(zip="94105"))
        assert not trait_rule_matches(rule, signals(zip="10115"))

    def test_missing_key_satisfies_no_comparison(self) -> None:
        assert not trait_rule_matches(parse_trait_rule("color != red"), {})
        assert trait_rule_matches(parse_trait_rule("color != red"), signals(color="blue"))

    def test_any_value_of_a_repeated_key(self) -> None:
        rule = parse_trait_rule("sport == tennis")
        assert trait_rule_matches(rule, signals(sport=["golf", "tennis"]))

    def test_and_not(self) -> None:
        rule = parse_trait_rule("a == 1 NOT b == 2")
        assert trait_rule_matches(rule, signals(a="1", b="3"))
        assert not trait_rule_matches(rule, signals(a="1", b="2"))


class TestSegmentRules:
    def test_parse_and_sids(self) -> None:
        rule = parse_segment_rule("(1234T OR 5678T) AND NOT 9999T")
        assert rule == And(Or(TraitRef(1234), TraitRef(5678)), Not(TraitRef(9999)))
        assert segment_rule_sids(rule) == {1234, 5678, 9999}

    def test_recency_group(self) -> None:
        rule = parse_segment_rule("[1234T, 5678T] <= 30D AND 1T")
        assert rule == And(Recency((1234, 5678), "<=", 30), TraitRef(1))
        assert segment_rule_sids(rule) == {1, 1234, 5678}

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("12T ANDD 3T", "unexpected token 'ANDD' at column 5"),
            ("1234 AND 5T", "trait reference '1234' must end in 'T' (like '1234T') at column 1"),
            ("[1T 2T] <= 3D", "unexpected token '2T', expected ',' or ']' at column 5"),
            ("[1T] <= 3", "trait reference '3' must end in 'T' (like '3T') at column 9"),
            ("[1T] 3D", "unexpected token '3D', expected a recency operator like '<=' at column 6"),
            ("(1T OR 2T", "unexpected end of rule, expected ')' at column 10"),
            (
                "1T AND",
                "unexpected end of rule, expected a trait reference like '1234T' at column 7",
            ),
            ("1T == 2T", "unknown operator '==' at column 4"),
            ("", "the rule is empty at column 1"),
        ],
    )
    def test_errors_point_at_the_column(self, text: str, message: str) -> None:
        with pytest.raises(RuleError) as caught:
            parse_segment_rule(text)
        assert str(caught.value) == message

    def test_matching(self) -> None:
        now = datetime(2026, 11, 28, tzinfo=UTC)
        rule = parse_segment_rule("(1T OR 2T) AND NOT 3T")
        assert segment_rule_matches(rule, {1: now}, now=now)
        assert not segment_rule_matches(rule, {1: now, 3: now}, now=now)
        assert not segment_rule_matches(rule, {3: now}, now=now)

    def test_recency_matching(self) -> None:
        now = datetime(2026, 11, 28, tzinfo=UTC)
        recent = parse_segment_rule("[1T,2T] <= 30D")
        assert segment_rule_matches(recent, {1: now - timedelta(days=40), 2: now}, now=now)
        assert not segment_rule_matches(recent, {1: now - timedelta(days=31)}, now=now)
        old = parse_segment_rule("[1T] > 30D")
        assert segment_rule_matches(old, {1: now - timedelta(days=31)}, now=now)


class TestRulesThatCouldStallAWorker:
    def test_a_catastrophic_pattern_runs_in_linear_time(self) -> None:
        """Before: '^(a+)+$' against 28 'a's and a 'b' took 9 s (Python's backtracking)."""
        rule = parse_trait_rule('x matchesregex "^(a+)+$"')
        assert isinstance(rule, Comparison)
        assert type(rule.pattern).__module__.startswith("re2")  # not Python's backtracking re
        # 5,000 characters: a backtracking engine would not end in the lifetime of the test.
        assert not trait_rule_matches(rule, signals(x="a" * 5000 + "b"))
        assert trait_rule_matches(rule, signals(x="A" * 5000))  # still case-insensitive

    @pytest.mark.parametrize("pattern", [r"(a)\\1", "(?=a)b", "(?<!a)b"])
    def test_what_cannot_run_in_linear_time_is_refused_when_saved(self, pattern: str) -> None:
        with pytest.raises(RuleError) as caught:
            parse_trait_rule(f'x matchesregex "{pattern}"')
        assert "RE2 syntax: no backreferences or look-arounds" in str(caught.value)

    @pytest.mark.parametrize(
        ("parse", "text", "message"),
        [
            (parse_trait_rule, "(" * 5000 + "a == 1" + ")" * 5000, "nests more than 20 levels"),
            (parse_trait_rule, "NOT " * 5000 + "a == 1", "nests more than 20 levels"),
            (parse_segment_rule, "(" * 5000 + "1T" + ")" * 5000, "nests more than 20 levels"),
            (parse_trait_rule, " OR ".join(["a == 1"] * 3000), "more than 500 terms"),
            (parse_segment_rule, " AND ".join(["1T"] * 3000), "more than 500 terms"),
        ],
    )
    def test_a_deeply_nested_rule_is_a_clear_error(
        self, parse: Any, text: str, message: str
    ) -> None:
        """Before: RecursionError (a 500 in the admin, a failed batch in a worker)."""
        with pytest.raises(RuleError) as caught:
            parse(text)
        assert message in str(caught.value)

    def test_rules_within_the_bounds_parse_and_evaluate(self) -> None:
        deep = "(" * 20 + "a == 1" + ")" * 20
        assert trait_rule_matches(parse_trait_rule(deep), signals(a="1"))
        wide = parse_trait_rule(" OR ".join(f"a == {n}" for n in range(500)))
        assert trait_rule_matches(wide, signals(a="499"))
