"""Which traits one line realizes or removes (SPEC §3.3, §3.4). Pure.

The taxonomy of the batch's target data source is loaded once into a
:class:`TraitCatalog`; each line's signals are then matched in memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from partners.inbound.lines import Signal, parse_signal, split_signals
from segments.rules import TraitRule, comparison_holds, trait_rule_comparisons, trait_rule_matches

# What one signal does on its own: (ADD | REMOVE | FAILED | UNUSED, sid) for trait
# references, (VALUE, key, value) for key-value pairs and codes (rules decide those).
ADD, REMOVE, FAILED, UNUSED, VALUE = "add", "remove", "failed", "unused", "value"
Effect = tuple[Any, ...]  # loosely typed: it is unpacked in the hottest loop
MAX_MEMOIZED_TOKENS = 200_000


@dataclass(frozen=True, slots=True)
class CatalogTrait:
    sid: int
    dpid: int
    onboarded: bool
    rule: TraitRule | None


class LineOutcome(NamedTuple):
    adds: list[int]
    removes: list[int]
    signals: int
    unused: int  # signals that map to no trait at all
    failed: int  # references to traits that may not be realized here (another data source)


class TraitCatalog:
    def __init__(self, *, target_dpid: int, traits: Iterable[CatalogTrait]) -> None:
        self.target_dpid = target_dpid
        self.realizable: set[int] = set()
        self.not_realizable: set[int] = set()
        # Rules that read one key are decided by that key's values alone: they are matched
        # per key (memoized on the values); rules over several keys per trait.
        self.single_key_rules: dict[str, list[int]] = defaultdict(list)
        self.rules_by_key: dict[str, list[int]] = defaultdict(list)
        self._rules: dict[int, tuple[TraitRule, tuple[str, ...]]] = {}
        self._effects: dict[str, Effect] = {}
        self._key_outcomes: dict[str, dict[tuple[str, ...], tuple[tuple[int, ...], int]]] = (
            defaultdict(dict)
        )
        self._key_verdicts: dict[
            str, dict[tuple[str, ...], tuple[tuple[int, ...], frozenset[tuple[str, str]]]]
        ] = defaultdict(dict)
        # Per trait: the values of the keys its rule reads -> (matches, signals it uses).
        self._verdicts: dict[
            int, dict[tuple[tuple[str, ...], ...], tuple[bool, frozenset[tuple[str, str]]]]
        ] = defaultdict(dict)
        for trait in traits:
            if trait.dpid == target_dpid and trait.onboarded:
                self.realizable.add(trait.sid)
                if trait.rule is not None:
                    keys = tuple(sorted({c.key for c in trait_rule_comparisons(trait.rule)}))
                    self._rules[trait.sid] = (trait.rule, keys)
                    if len(keys) == 1:
                        self.single_key_rules[keys[0]].append(trait.sid)
                    else:
                        for key in keys:
                            self.rules_by_key[key].append(trait.sid)
            else:
                self.not_realizable.add(trait.sid)

    def match_text(self, text: str, *, overwrite: bool) -> LineOutcome:
        """What a line's signals text realizes and removes. Raises :class:`LineFormatError`.

        Each distinct token's effect is memoized: a batch repeats the same few thousand
        tokens millions of times, so most lines are a few dictionary lookups."""
        effects = self._effects
        if len(effects) > MAX_MEMOIZED_TOKENS:
            effects.clear()
        return self._outcome(
            [effects.get(token) or self._token_effect(token) for token in split_signals(text)],
            overwrite=overwrite,
        )

    def text_check(self, text: str) -> None:
        """Raise :class:`LineFormatError` when a line's signals text is not well formed
        (what :meth:`match_text` checks, without matching: a line over the per-user limit)."""
        effects = self._effects
        if len(effects) > MAX_MEMOIZED_TOKENS:
            effects.clear()
        for token in split_signals(text):
            if token not in effects:
                self._token_effect(token)

    def match(self, signals: list[Signal], *, overwrite: bool) -> LineOutcome:
        """What already parsed signals realize and remove (legacy device lines)."""
        return self._outcome([self._signal_effect(s) for s in signals], overwrite=overwrite)

    def _token_effect(self, token: str) -> Effect:
        effect = self._effects[token] = self._signal_effect(parse_signal(token))
        return effect

    def _signal_effect(self, signal: Signal) -> Effect:
        kind = signal[0]
        if kind == "sid" or kind == "unsid":
            sid: Any = signal[1]
            if sid in self.realizable:
                return (ADD if kind == "sid" else REMOVE, sid)
            return (FAILED, sid) if sid in self.not_realizable else (UNUSED, sid)
        if kind == "code":
            return (VALUE, "ic", signal[1])
        return (VALUE, signal[1], signal[2])  # type: ignore[misc]

    def _outcome(self, effects: list[Effect], *, overwrite: bool) -> LineOutcome:
        """Signals in line order: a later realization or removal of a trait wins."""
        adds: dict[int, None] = {}
        removes: dict[int, None] = {}
        unused = failed = 0
        values: dict[str, list[str]] = {}
        for effect in effects:
            kind = effect[0]
            if kind is ADD:
                adds[effect[1]] = None
                if removes:
                    removes.pop(effect[1], None)
            elif kind is VALUE:
                listed = values.get(effect[1])
                if listed is None:
                    values[effect[1]] = [effect[2]]
                else:
                    listed.append(effect[2])
            elif kind is REMOVE:
                if not overwrite:  # .overwrite ignores removals
                    removes[effect[1]] = None
                    adds.pop(effect[1], None)
            elif kind is FAILED:
                failed += 1
            else:
                unused += 1
        if values and not self.rules_by_key.keys() & values.keys():
            # Only one-key rules read these keys: each key's verdict is memoized whole.
            for key, key_values in values.items():
                matched, key_unused = self._key_outcome(key, key_values)
                for sid in matched:
                    adds[sid] = None
                    if removes:
                        removes.pop(sid, None)
                unused += key_unused
        elif values:
            used: set[tuple[str, str]] = set()
            seen: set[int] = set()
            for key, key_values in values.items():
                if key in self.single_key_rules:
                    matched, uses = self._key_verdict(key, key_values)
                    for sid in matched:
                        adds[sid] = None
                        removes.pop(sid, None)
                    used |= uses
                for sid in self.rules_by_key.get(key, ()):
                    if sid in seen:
                        continue
                    seen.add(sid)
                    matches, uses = self._verdict(sid, values)
                    if matches:
                        adds[sid] = None
                        removes.pop(sid, None)
                        used |= uses
            unused += sum(1 for k, vs in values.items() for v in vs if (k, v) not in used)
        return LineOutcome(list(adds), list(removes), len(effects), unused, failed)

    def _key_outcome(self, key: str, key_values: list[str]) -> tuple[tuple[int, ...], int]:
        """The one-key rules on ``key`` that its values satisfy, and how many of the values
        no rule uses."""
        memo = self._key_outcomes[key]
        memo_key = tuple(key_values)
        outcome = memo.get(memo_key)
        if outcome is None:
            if key in self.single_key_rules:
                matched, uses = self._key_verdict(key, key_values)
            else:
                matched, uses = (), frozenset()
            if len(memo) >= 10_000:
                memo.clear()
            outcome = memo[memo_key] = (
                matched,
                sum(1 for value in key_values if (key, value) not in uses),
            )
        return outcome

    def _key_verdict(
        self, key: str, key_values: list[str]
    ) -> tuple[tuple[int, ...], frozenset[tuple[str, str]]]:
        """The one-key rules on ``key`` that its values satisfy, and the signals they use."""
        memo = self._key_verdicts[key]
        memo_key = tuple(key_values)
        verdict = memo.get(memo_key)
        if verdict is None:
            matched: list[int] = []
            uses: set[tuple[str, str]] = set()
            line = {key: key_values}
            for sid in self.single_key_rules[key]:
                rule, _ = self._rules[sid]
                if trait_rule_matches(rule, line):
                    matched.append(sid)
                    uses |= self._uses(rule, line)
            if len(memo) >= 10_000:
                memo.clear()
            verdict = memo[memo_key] = (tuple(matched), frozenset(uses))
        return verdict

    @staticmethod
    def _uses(rule: TraitRule, values: dict[str, list[str]]) -> frozenset[tuple[str, str]]:
        """The (key, value) signals that satisfy a comparison of a matching rule."""
        return frozenset(
            (comparison.key, value)
            for comparison in trait_rule_comparisons(rule)
            for value in values.get(comparison.key, ())
            if comparison_holds(comparison, value)
        )

    def _verdict(
        self, sid: int, values: dict[str, list[str]]
    ) -> tuple[bool, frozenset[tuple[str, str]]]:
        """Whether trait ``sid``'s rule matches, and which signals it uses. Memoized on the
        values of the keys the rule reads, which repeat from line to line."""
        rule, keys = self._rules[sid]
        memo = self._verdicts[sid]
        key = tuple(tuple(values.get(k, ())) for k in keys)
        verdict = memo.get(key)
        if verdict is None:
            matches = trait_rule_matches(rule, values)
            uses = self._uses(rule, values) if matches else frozenset()
            if len(memo) >= 10_000:
                memo.clear()
            verdict = memo[key] = (matches, uses)
        return verdict
