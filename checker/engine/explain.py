"""Why a trace violates a rule, from the parts the evaluator already compiled.

An explanation names the checks of ``when`` that held (and their spans), the conjuncts of
``always`` that failed and the checks of ``never`` that held. Each part carries the closure
compiled with the invariant and its rule-language text, so explaining re-runs neither the
compiler nor the printer: it only asks each part again, on the one violating trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from checker.engine.violation import Forbidden, SpanRef, Violation
from checker.traces.model import span_order

if TYPE_CHECKING:
    from collections.abc import Callable

    from checker.rules.rule import Rule
    from checker.traces.model import Span, Trace

MAX_SPANS_LISTED = 10


@dataclass(frozen=True)
class Part:
    """A piece of the rule as an explanation quotes it, with its compiled test.

    ``offenders``, for a structure check (``every a has child b``), gives the spans of its left
    side that lack the relation: what the explanation names when the part fails.
    """

    text: str
    holds: Callable[[Trace], bool]
    offenders: Callable[[Trace], list[Span]] | None = field(default=None, kw_only=True)

    def lacked(self, trace: Trace) -> str:
        """The part as the reason names it when it fails, with its offending spans if it has any."""
        spans = self.offenders(trace) if self.offenders is not None else []
        if not spans:
            return self.text
        return f"{self.text}: not so for {_named(sorted(spans, key=span_order))}"


@dataclass(frozen=True)
class CheckPart(Part):
    """A check, which also says which spans make it hold (or are counted by it)."""

    spans: Callable[[Trace], list[Span]]


@dataclass(frozen=True)
class Explainer:
    """The parts of one compiled invariant that an explanation asks again.

    ``triggers`` and ``forbidding`` are the checks under an even number of ``not``s in
    ``when`` and ``never`` (the ones that can make them true); ``lacking`` the conjuncts of
    ``always``; ``always`` and ``never`` the whole conditions, as the fast path runs them.
    """

    unconditional: bool
    triggers: tuple[CheckPart, ...]
    always: Callable[[Trace], bool] | None
    lacking: tuple[Part, ...]
    never: Callable[[Trace], bool] | None
    never_text: str
    forbidding: tuple[CheckPart, ...]

    def violation(self, rule: Rule, trace: Trace) -> Violation:
        """Why ``trace`` violates ``rule``; only called once the fast path said it does."""
        # Two checks may hold on one span: each span is listed once, in start order.
        holding = {s.span_id: s for p in self.triggers if p.holds(trace) for s in p.spans(trace)}
        triggers = sorted(holding.values(), key=span_order)
        missing: tuple[str, ...] = ()
        lacked: tuple[str, ...] = ()
        if self.always is not None and not self.always(trace):
            failed = [p for p in self.lacking if not p.holds(trace)]
            missing, lacked = tuple(p.text for p in failed), tuple(p.lacked(trace) for p in failed)
        forbidden: tuple[Forbidden, ...] = ()
        if self.never is not None and self.never(trace):
            forbidden = tuple(
                Forbidden(p.text, _refs(p.spans(trace))) for p in self.forbidding if p.holds(trace)
            ) or (Forbidden(self.never_text),)
        root = trace.root
        return Violation(
            rule_id=rule.id, rule_name=rule.name, severity=rule.severity, trace_id=trace.trace_id,
            reason=_sentence(triggers, lacked, forbidden, self.unconditional),
            frameworks=rule.frameworks, controls=rule.controls, trigger_spans=_refs(triggers),
            missing=missing, forbidden=forbidden,
            root_service=root.service if root else None, root_name=root.name if root else None,
            start_time_unix_nano=trace.start_ns, end_time_unix_nano=trace.end_ns,
            labels=rule.labels,
        )


def _named(spans: list[Span]) -> str:
    """The first three spans as a sentence names them, and how many more there are."""
    more = f" and {len(spans) - 3} more" if len(spans) > 3 else ""
    return ", ".join(f"{s.name} (span {s.span_id})" for s in spans[:3]) + more


def _refs(spans: list[Span]) -> tuple[SpanRef, ...]:
    """The first spans in start order: Tempo and files deliver a trace's spans in different orders."""
    ordered = sorted(spans, key=span_order)
    return tuple(SpanRef(s.name, s.span_id) for s in ordered[:MAX_SPANS_LISTED])


def _sentence(triggers: list[Span], missing: tuple[str, ...], forbidden: tuple[Forbidden, ...],
              unconditional: bool) -> str:
    if unconditional:
        scope = "The trace"
    else:
        scope = f"Triggered by {_named(triggers)}, the trace" if triggers else "In scope, the trace"
    parts = []
    if missing:
        parts.append("lacks " + "; ".join(missing))
    for item in forbidden:
        ids = ", ".join(s.span_id for s in item.spans)
        parts.append(f"has forbidden {item.check}" + (f" (span {ids})" if ids else ""))
    return f"{scope} {' and '.join(parts)}."
