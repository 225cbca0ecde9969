"""Run the example traces written in rule files: ``betrace test``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from checker.engine.compiled import CompiledInvariant
from checker.traces.model import Attributes, AttrValue, Span, SpanEvent, Trace

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from checker.engine.violation import Violation
    from checker.rules.rule import Example, ExampleSpan, Rule

EXAMPLE_START_NS = 1_700_000_000_000_000_000


@dataclass(frozen=True)
class ExampleResult:
    """One example's outcome; ``violation`` is set when the rule fired."""

    rule: Rule
    example: Example
    violation: Violation | None

    @property
    def passed(self) -> bool:
        """The rule gave the verdict the example expects."""
        return (self.violation is not None) == (self.example.expect == "violation")


def _value(raw: object) -> AttrValue:
    if isinstance(raw, bool | int | float | str):
        return raw
    if isinstance(raw, list | tuple):
        return tuple(_value(v) for v in raw)
    return str(raw)


def example_trace(rule_id: str, example: Example) -> Trace:
    """A trace built from an example's span tree, with stable IDs derived from its name."""
    trace_id = hashlib.sha256(f"{rule_id}\0{example.name}".encode()).hexdigest()[:32]
    spans: list[Span] = []

    def add(spec: ExampleSpan, parent: str | None, inherited: str | None) -> None:
        span_id = f"{len(spans) + 1:016x}"
        service = spec.service or inherited
        resource: Attributes = {"service.name": service} if service else {}
        start = EXAMPLE_START_NS + (len(spans) * 1_000_000 if spec.start_ns is None else spec.start_ns)
        spans.append(Span(
            trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=spec.name,
            attributes={k: _value(v) for k, v in spec.attributes.items()}, resource=resource,
            start_ns=start, end_ns=start + spec.duration_ns, status=spec.status, kind=spec.kind,
            events=tuple(SpanEvent(e.name, start, {k: _value(v) for k, v in e.attributes.items()})
                         for e in spec.events),
        ))
        for child in spec.children:
            add(child, span_id, service)

    for top in example.spans:
        add(top, None, None)
    return Trace(trace_id, spans)


def run_examples(rules: Iterable[Rule]) -> Iterator[ExampleResult]:
    """Every example of every rule, in file order."""
    for rule in rules:
        compiled = CompiledInvariant.build(rule.invariant)
        for example in rule.examples:
            trace = example_trace(rule.id, example)
            fired = compiled.violated_by(trace)
            yield ExampleResult(rule, example, compiled.explain(rule, trace) if fired else None)
