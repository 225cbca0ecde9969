"""A violation: which rule, which trace, and why, in words and in span IDs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from checker.evaluate import (
    CompiledInvariant,
    condition_test,
    matching_spans,
    positive_atoms,
    span_test,
)
from checker.rules import model as m
from checker.rules.printer import condition
from checker.traces.model import span_order

if TYPE_CHECKING:
    from checker.rules.rule import Rule
    from checker.traces.model import Span, Trace

MAX_SPANS_LISTED = 10


@dataclass(frozen=True)
class SpanRef:
    """A span named in an explanation."""

    name: str
    span_id: str


@dataclass(frozen=True)
class Forbidden:
    """A ``never`` check that matched, with the spans that matched it."""

    check: str
    spans: tuple[SpanRef, ...] = ()


@dataclass(frozen=True)
class Violation:
    """One trace breaking one rule; the JSON form is the contract other tools build on."""

    rule_id: str
    rule_name: str
    severity: str
    trace_id: str
    reason: str
    frameworks: tuple[str, ...]
    controls: tuple[str, ...]
    trigger_spans: tuple[SpanRef, ...]
    missing: tuple[str, ...]
    forbidden: tuple[Forbidden, ...]
    root_service: str | None = None
    root_name: str | None = None
    start_time_unix_nano: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; lists, not tuples."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Violation:
        """The violation ``to_json`` gave (as the store keeps it)."""
        return cls(**{
            **data,
            "frameworks": tuple(data["frameworks"]), "controls": tuple(data["controls"]),
            "missing": tuple(data["missing"]),
            "trigger_spans": tuple(SpanRef(**s) for s in data["trigger_spans"]),
            "forbidden": tuple(Forbidden(f["check"], tuple(SpanRef(**s) for s in f["spans"]))
                               for f in data["forbidden"]),
        })


def _refs(spans: list[Span]) -> tuple[SpanRef, ...]:
    """The first spans in start order: Tempo and files deliver a trace's spans in different orders."""
    ordered = sorted(spans, key=span_order)
    return tuple(SpanRef(s.name, s.span_id) for s in ordered[:MAX_SPANS_LISTED])


def _check_spans(check: m.Check, trace: Trace) -> list[Span]:
    if isinstance(check, m.SpanCheck):
        return matching_spans(check, trace, span_test(check))
    return list(trace.by_name.get(check.left.name, ()))


def _holding(node: m.Condition | None, trace: Trace) -> list[m.Check]:
    return [a for a in positive_atoms(node) if condition_test(a)(trace)]


def _conjuncts(node: m.Condition) -> tuple[m.Condition, ...]:
    return node.items if isinstance(node, m.And) else (node,)


def explain(rule: Rule, compiled: CompiledInvariant, trace: Trace) -> Violation:
    """Why ``trace`` violates ``rule``; only called once the fast path said it does."""
    inv = compiled.invariant
    # Two checks may hold on one span: each span is listed once, in start order.
    holding = {s.span_id: s for a in _holding(inv.when, trace) for s in _check_spans(a, trace)}
    triggers = sorted(holding.values(), key=span_order)
    missing: tuple[str, ...] = ()
    if inv.always is not None and not condition_test(inv.always)(trace):
        missing = tuple(condition(c) for c in _conjuncts(inv.always) if not condition_test(c)(trace))
    forbidden: tuple[Forbidden, ...] = ()
    if inv.never is not None and condition_test(inv.never)(trace):
        forbidden = tuple(
            Forbidden(condition(a), _refs(_check_spans(a, trace))) for a in _holding(inv.never, trace)
        ) or (Forbidden(condition(inv.never)),)
    root = trace.root
    return Violation(
        rule_id=rule.id, rule_name=rule.name, severity=rule.severity, trace_id=trace.trace_id,
        reason=_sentence(triggers, missing, forbidden, inv.when is None),
        frameworks=rule.frameworks, controls=rule.controls, trigger_spans=_refs(triggers),
        missing=missing, forbidden=forbidden,
        root_service=root.service if root else None, root_name=root.name if root else None,
        start_time_unix_nano=trace.start_ns, labels=rule.labels,
    )


def _sentence(triggers: list[Span], missing: tuple[str, ...], forbidden: tuple[Forbidden, ...],
              unconditional: bool) -> str:
    if unconditional:
        scope = "The trace"
    else:
        shown = ", ".join(f"{s.name} (span {s.span_id})" for s in triggers[:3])
        more = f" and {len(triggers) - 3} more" if len(triggers) > 3 else ""
        scope = f"Triggered by {shown}{more}, the trace" if shown else "In scope, the trace"
    parts = []
    if missing:
        parts.append("lacks " + "; ".join(missing))
    for item in forbidden:
        ids = ", ".join(s.span_id for s in item.spans)
        parts.append(f"has forbidden {item.check}" + (f" (span {ids})" if ids else ""))
    return f"{scope} {' and '.join(parts)}."
