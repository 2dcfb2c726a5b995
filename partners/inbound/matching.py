"""Which traits one line realizes or removes (SPEC §3.3, §3.4). Pure.

The taxonomy of the batch's target data source is loaded once into a
:class:`TraitCatalog`; each line's signals are then matched in memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from partners.inbound.lines import Signal
from segments.rules import TraitRule, comparison_holds, trait_rule_comparisons, trait_rule_matches


@dataclass(frozen=True, slots=True)
class CatalogTrait:
    sid: int
    dpid: int
    onboarded: bool
    rule: TraitRule | None


@dataclass(frozen=True, slots=True)
class LineOutcome:
    adds: tuple[int, ...]
    removes: tuple[int, ...]
    signals: int
    unused: int  # signals that map to no trait at all
    failed: int  # references to traits that may not be realized here (another data source)


class TraitCatalog:
    def __init__(self, *, target_dpid: int, traits: Iterable[CatalogTrait]) -> None:
        self.target_dpid = target_dpid
        self.realizable: set[int] = set()
        self.not_realizable: set[int] = set()
        self.rules_by_key: dict[str, list[tuple[int, TraitRule]]] = defaultdict(list)
        for trait in traits:
            if trait.dpid == target_dpid and trait.onboarded:
                self.realizable.add(trait.sid)
                if trait.rule is not None:
                    keys = {c.key for c in trait_rule_comparisons(trait.rule)}
                    for key in keys:
                        self.rules_by_key[key].append((trait.sid, trait.rule))
            else:
                self.not_realizable.add(trait.sid)

    def match(self, signals: list[Signal], *, overwrite: bool) -> LineOutcome:
        adds: dict[int, None] = {}
        removes: dict[int, None] = {}
        unused = failed = 0
        values: dict[str, list[str]] = defaultdict(list)
        for signal in signals:
            kind = signal[0]
            if kind == "sid" or kind == "unsid":
                sid = signal[1]
                assert isinstance(sid, int)
                if sid in self.realizable:
                    if kind == "sid":
                        adds[sid] = None
                        removes.pop(sid, None)
                    elif not overwrite:  # .overwrite ignores removals
                        removes[sid] = None
                        adds.pop(sid, None)
                elif sid in self.not_realizable:
                    failed += 1
                else:
                    unused += 1
            elif kind == "code":
                values["ic"].append(str(signal[1]))
            else:
                values[str(signal[1])].append(str(signal[2]))  # type: ignore[misc]
        if values:
            used: set[tuple[str, str]] = set()
            seen: set[int] = set()
            for key in values:
                for sid, rule in self.rules_by_key.get(key, ()):
                    if sid in seen:
                        continue
                    seen.add(sid)
                    if not trait_rule_matches(rule, values):
                        continue
                    adds[sid] = None
                    removes.pop(sid, None)
                    for comparison in trait_rule_comparisons(rule):
                        for value in values.get(comparison.key, ()):
                            if comparison_holds(comparison, value):
                                used.add((comparison.key, value))
            unused += sum(1 for k, vs in values.items() for v in vs if (k, v) not in used)
        return LineOutcome(tuple(adds), tuple(removes), len(signals), unused, failed)
