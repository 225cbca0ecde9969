"""Run every rule on every trace, skipping rules whose trigger a trace cannot contain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from checker.engine.compiled import CompiledInvariant

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from checker.engine.violation import Violation
    from checker.rules.rule import Rule
    from checker.traces.model import Trace


@dataclass
class ScanStats:
    """What a scan looked at, for the summary line and for evidence."""

    traces: int = 0
    in_scope: int = 0
    violations: int = 0


class Scanner:
    """Rules compiled once; ``check`` evaluates only the rules a trace could trigger."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = [r for r in rules if r.enabled]
        self._order = {r.id: i for i, r in enumerate(self.rules)}
        self._compiled = {r.id: CompiledInvariant.build(r.invariant) for r in self.rules}
        self._always: list[Rule] = []
        self._by_name: dict[str, list[Rule]] = {}
        for rule in self.rules:
            names = self._compiled[rule.id].trigger_names
            if names is None:
                self._always.append(rule)
            else:
                for name in names:
                    self._by_name.setdefault(name, []).append(rule)
        self.stats = ScanStats()

    def candidates(self, trace: Trace) -> list[Rule]:
        """Rules that may apply to ``trace``, each once, in load order."""
        found = {r.id: r for name in trace.by_name for r in self._by_name.get(name, ())}
        found.update((r.id, r) for r in self._always)
        return sorted(found.values(), key=lambda r: self._order[r.id])

    def check(self, trace: Trace) -> list[Violation]:
        """Every violation in one trace."""
        self.stats.traces += 1
        violations = []
        for rule in self.candidates(trace):
            compiled = self._compiled[rule.id]
            if compiled.in_scope(trace):
                self.stats.in_scope += 1
                if compiled.fails_in_scope(trace):
                    violations.append(compiled.explain(rule, trace))
        self.stats.violations += len(violations)
        return violations

    def scan(self, traces: Iterable[Trace]) -> Iterator[Violation]:
        """Violations of all traces, as they are found."""
        for trace in traces:
            yield from self.check(trace)
