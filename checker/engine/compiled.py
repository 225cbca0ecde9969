"""Exact evaluation of an invariant on one whole trace, and the parts that explain it.

Each rule is compiled once into closures, so that checking a trace is a few dict lookups
and calls rather than a walk over the AST; the explanation of a violation asks the same
closures again (``checker.engine.explain``), never a recompiled copy. The semantics
(design.md) live here and only here: typed comparisons with int and double unified,
full-match RE2 regexes, a missing attribute failing every comparison, and unscoped
span-then-resource attribute lookup.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import re2

from checker.engine.explain import CheckPart, Explainer, Part
from checker.engine.structure import related
from checker.rules import model as m
from checker.rules.lint import reads_events, unnegated_checks, walk
from checker.rules.printer import condition
from checker.rules.usage import checked_names
from checker.rules.vocabulary import Intrinsic
from checker.traces.model import AttrValue, Span, SpanEvent, Trace

if TYPE_CHECKING:
    from checker.engine.violation import Violation
    from checker.rules.rule import Rule

SpanTest = Callable[[Span], bool]
# A predicate with event terms, decided on one span and one of its events: one tuple per event.
EventTest = Callable[[tuple[Span, SpanEvent]], bool]
TraceTest = Callable[[Trace], bool]
ValueTest = Callable[[AttrValue], bool]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt,
    ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}
_NUMBER = (int, float)
T = TypeVar("T")


def value_test(op: str, literal: m.Scalar) -> ValueTest:
    """A test of one attribute value against a literal, typed as Tempo types it.

    Numbers match int and double values (never bools); strings match strings; booleans
    match booleans and only with == and !=. Arrays match when any element matches.
    """
    compare = _OPS[op]
    if isinstance(literal, bool):
        if op not in {"==", "!="}:
            return lambda _value: False
        scalar: ValueTest = lambda x: type(x) is bool and compare(x, literal)  # noqa: E731
    elif isinstance(literal, m.DurationLiteral):
        scalar = lambda x: type(x) is int and compare(x, literal.nanos)  # noqa: E731
    elif isinstance(literal, _NUMBER):
        scalar = lambda x: type(x) in _NUMBER and compare(x, literal)  # noqa: E731
    else:
        scalar = lambda x: type(x) is str and compare(x, literal)  # noqa: E731
    return _over_arrays(scalar)


def _over_arrays(scalar: ValueTest) -> ValueTest:
    def test(value: AttrValue) -> bool:
        if type(value) is tuple:
            return any(scalar(v) for v in value)
        return scalar(value)

    return test


def compile_regex(pattern: str) -> re2._Regexp[str]:
    """RE2, as Tempo uses; the pattern was validated by lint."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _leaf_test(node: m.Test | m.Truthy) -> ValueTest:
    match node:
        case m.Compare():
            return value_test(node.op, node.value)
        case m.InList(negated=False):
            tests = [value_test("==", v) for v in node.values]
            return lambda x: any(t(x) for t in tests)
        case m.InList(negated=True):
            tests = [value_test("!=", v) for v in node.values]
            return _none_in(tests)
        case m.Matches():
            regex = compile_regex(node.pattern)
            return _over_arrays(lambda x: type(x) is str and regex.fullmatch(x) is not None)
        case m.Contains():
            needle = node.needle
            return _over_arrays(lambda x: type(x) is str and needle in x)
        case m.Truthy():
            return _over_arrays(lambda x: x is True)
    raise TypeError(node)  # pragma: no cover - the match is exhaustive


def _none_in(tests: list[ValueTest]) -> ValueTest:
    """``not in``: every element differs from every value (typed, so a mismatch fails)."""

    def test(value: AttrValue) -> bool:
        items = value if type(value) is tuple else (value,)
        return bool(items) and all(t(v) for v in items for t in tests)

    return test


def intrinsic_getter(intrinsic: Intrinsic) -> Callable[[Span], AttrValue | None]:
    """The span field an intrinsic reads; mypy refuses this match once a member is missing."""
    match intrinsic:
        case Intrinsic.NAME:
            return lambda s: s.name
        case Intrinsic.STATUS_MESSAGE:
            return lambda s: s.status_message
        case Intrinsic.SERVICE:
            return lambda s: s.resource.get("service.name")
        case Intrinsic.DURATION:
            return lambda s: s.duration_ns
        case Intrinsic.STATUS:
            return lambda s: s.status
        case Intrinsic.KIND:
            return lambda s: s.kind
        case Intrinsic.ROOT_SERVICE | Intrinsic.ROOT_NAME | Intrinsic.TRACE_DURATION:
            of_trace = _trace_field(intrinsic)
            return lambda s: of_trace(s.trace) if s.trace is not None else None
        case Intrinsic.EVENT_NAME:
            raise ValueError("event:name is read from an event: see event_attribute_test")


def _trace_field(intrinsic: Intrinsic) -> Callable[[Trace], AttrValue | None]:
    """The field of the whole trace a trace intrinsic reads, on whichever span asks."""
    if intrinsic is Intrinsic.ROOT_SERVICE:
        return lambda t: t.root_service
    if intrinsic is Intrinsic.ROOT_NAME:
        return lambda t: t.root_name
    return lambda t: t.duration_ns


def attribute_test(attr: m.Attr, test: ValueTest) -> SpanTest:
    """Apply ``test`` to the attribute in its scope; unscoped, on the span, else on its resource."""
    if attr.intrinsic:
        getter = intrinsic_getter(Intrinsic.of(attr.name))

        def intrinsic(span: Span) -> bool:
            value = getter(span)
            return value is not None and test(value)

        return intrinsic
    key = attr.name
    if attr.scope is not None:
        on_span = attr.scope == "span"

        def scoped(span: Span) -> bool:
            value = (span.attributes if on_span else span.resource).get(key)
            return value is not None and test(value)

        return scoped

    def unscoped(span: Span) -> bool:
        value = span.attributes.get(key)
        if value is not None and test(value):
            return True
        value = span.resource.get(key)
        return value is not None and test(value)

    return unscoped


def _boolean(node: object, compile_item: Callable[[Any], Callable[[T], bool]]
             ) -> Callable[[T], bool] | None:
    """and/or/not over compiled items, shared by span predicates and trace conditions."""
    match node:
        case m.And():
            parts = [compile_item(i) for i in node.items]
            return lambda x: all(p(x) for p in parts)
        case m.Or():
            parts = [compile_item(i) for i in node.items]
            return lambda x: any(p(x) for p in parts)
        case m.Not():
            inner = compile_item(node.item)
            return lambda x: not inner(x)
    return None


def event_attribute_test(attr: m.Attr, test: ValueTest) -> EventTest:
    """Apply ``test`` to ``event:name`` or to an ``event.x`` attribute of the event at hand."""
    if attr.intrinsic:  # the only event intrinsic (lint refuses unknown ones)
        if Intrinsic.of(attr.name) is not Intrinsic.EVENT_NAME:
            raise ValueError(f"{attr.name} is not read from an event")
        return lambda pair: test(pair[1].name)
    key = attr.name

    def scoped(pair: tuple[Span, SpanEvent]) -> bool:
        value = pair[1].attributes.get(key)
        return value is not None and test(value)

    return scoped


def predicate_test(node: m.Predicate) -> SpanTest:
    """A closure deciding one ``.where()`` predicate on a span.

    With an event term, the predicate holds when ONE event of the span satisfies it whole (event
    terms read on that event, the others on the span), so that ``event:name == exception and
    event.exception.type == E`` cannot be met by two different events. A predicate without event
    terms never looks at events, and costs what it did before events existed.
    """
    if reads_events(node):
        return _through_one_event(node)
    return _span_predicate(node)


def _span_predicate(node: m.Predicate) -> SpanTest:
    if isinstance(node, m.And | m.Or | m.Not):
        return cast("SpanTest", _boolean(node, _span_predicate))
    return attribute_test(node.attr, _leaf_test(node))


def _through_one_event(node: m.Predicate) -> SpanTest:
    """Some event satisfies the predicate; conjuncts without event terms are decided once per span."""
    items = node.items if isinstance(node, m.And) else (node,)
    on_span = [_span_predicate(item) for item in items if not reads_events(item)]
    on_event = [_event_predicate(item) for item in items if reads_events(item)]

    def test(span: Span) -> bool:
        return all(p(span) for p in on_span) and any(
            all(p((span, event)) for p in on_event) for event in span.events)

    return test


def _event_predicate(node: m.Predicate) -> EventTest:
    if isinstance(node, m.And | m.Or | m.Not):
        return cast("EventTest", _boolean(node, _event_predicate))
    test = _leaf_test(node)
    if node.attr.of_event:
        return event_attribute_test(node.attr, test)
    on_span = attribute_test(node.attr, test)
    return lambda pair: on_span(pair[0])


def span_test(check: m.SpanCheck) -> SpanTest:
    """A span named as the check says, on which every ``where`` holds."""
    parts = [predicate_test(p) for p in check.where]
    if not parts:
        return lambda _span: True
    if len(parts) == 1:
        return parts[0]
    return lambda s: all(p(s) for p in parts)


class _Compiler:
    """Compiles the nodes of one invariant, each once.

    The fast path and the explanation's parts share these closures: a check that ``when``
    runs is the same closure the explanation asks again. Nodes are keyed by identity, as
    they all belong to the invariant being compiled (equal nodes elsewhere do not matter).
    """

    def __init__(self) -> None:
        self._conditions: dict[int, TraceTest] = {}
        self._spans: dict[int, SpanTest] = {}
        self._relations: dict[int, RelatedSpans] = {}

    def condition(self, node: m.Condition) -> TraceTest:
        """A closure deciding a trace-level formula."""
        key = id(node)
        if key not in self._conditions:
            self._conditions[key] = self._compile(node)
        return self._conditions[key]

    def _compile(self, node: m.Condition) -> TraceTest:
        match node:
            case m.And() | m.Or() | m.Not():
                return cast("TraceTest", _boolean(node, self.condition))
            case m.SpanCheck():
                name, test = node.name, self.span(node)
                if name is None:
                    return lambda t: any(test(s) for s in t.spans)
                return lambda t: any(test(s) for s in t.by_name.get(name, ()))
            case m.RelationCheck():
                return self.relation(node).holds
            case m.CountCheck():
                return _count_test(node)

    def span(self, check: m.SpanCheck) -> SpanTest:
        """The test a span must pass to be one that ``check`` asks for."""
        key = id(check)
        if key not in self._spans:
            self._spans[key] = span_test(check)
        return self._spans[key]

    def relation(self, check: m.RelationCheck) -> RelatedSpans:
        """Both sides of a structure or order check, compiled once."""
        key = id(check)
        if key not in self._relations:
            self._relations[key] = RelatedSpans(
                check, selected(check.left.name, self.span(check.left)),
                selected(check.right.name, self.span(check.right)))
        return self._relations[key]

    def part(self, node: m.Condition) -> Part:
        """``node`` as an explanation quotes and asks it; a structure check also names its offenders."""
        offenders = self.relation(node).lacking if isinstance(node, m.RelationCheck) else None
        return Part(condition(node), self.condition(node), offenders=offenders)

    def check_part(self, check: m.Check) -> CheckPart:
        """A check, with the spans that make it hold: matching spans, related ones, or every span counted."""
        spans: Callable[[Trace], list[Span]]
        match check:
            case m.SpanCheck():
                spans = selected(check.name, self.span(check))
            case m.RelationCheck():
                spans = self.relation(check).having
            case m.CountCheck():
                spans = counted_spans(check.left)
        return CheckPart(condition(check), self.condition(check), spans)


@dataclass(frozen=True)
class RelatedSpans:
    """A structure or order check: which spans of its left side have a right-side span so related."""

    check: m.RelationCheck
    left: Callable[[Trace], list[Span]]
    right: Callable[[Trace], list[Span]]

    def holds(self, trace: Trace) -> bool:
        """Some left span has the relation (each one, with ``every``; true when there is none)."""
        lefts = self.left(trace)
        if not lefts:
            return self.check.every
        has = related(self.check.relation, trace, self.right(trace))
        return all(map(has, lefts)) if self.check.every else any(map(has, lefts))

    def having(self, trace: Trace) -> list[Span]:
        """The left spans that have a right span so related."""
        return self._split(trace, want=True)

    def lacking(self, trace: Trace) -> list[Span]:
        """The left spans that have none: what an explanation names when the check fails."""
        return self._split(trace, want=False)

    def _split(self, trace: Trace, *, want: bool) -> list[Span]:
        lefts = self.left(trace)
        if not lefts:
            return []
        has = related(self.check.relation, trace, self.right(trace))
        return [s for s in lefts if has(s) == want]


def selected(name: str | None, test: SpanTest) -> Callable[[Trace], list[Span]]:
    """The spans a selector picks: those of its name (any, for ``span``) that pass ``test``."""
    if name is None:
        return lambda t: [s for s in t.spans if test(s)]
    return lambda t: [s for s in t.by_name.get(name, ()) if test(s)]


def counted_spans(ref: m.SpanCount) -> Callable[[Trace], list[Span]]:
    """The spans ``count(...)`` counts: those of its name (any, for ``span``) passing its wheres."""
    name = ref.name
    if not ref.where and name is not None:
        return lambda t: t.by_name.get(name, [])
    return selected(name, span_test(m.SpanCheck(name, ref.where)))


def _count_test(node: m.CountCheck) -> TraceTest:
    compare = _OPS[node.op]
    left, right = counted_spans(node.left), node.right
    if isinstance(right, m.SpanCount):
        other = counted_spans(right)
        return lambda t: compare(len(left(t)), len(other(t)))
    if isinstance(right, bool) or not isinstance(right, _NUMBER):
        return lambda _t: False
    return lambda t: compare(len(left(t)), right)


def span_names(inv: m.Invariant) -> frozenset[str] | None:
    """Every span name the invariant looks at: a trace's other spans cannot change its verdict.

    Every check reaches spans through ``Trace.by_name``, so spans with other names are never
    read; but ``span.where(...)``, a trace intrinsic (``trace:rootService``, ``trace:duration``)
    and ``has descendant`` (whose chain runs through spans of any name) read every span of the
    trace, so None: any span may change the verdict.
    """
    nodes = [node for cond in (inv.when, inv.always, inv.never) if cond is not None for node in walk(cond)]
    names: set[str] = set()
    for node in nodes:
        match node:
            case m.RelationCheck(relation=m.Relation.DESCENDANT):
                return None
            case m.Compare() | m.InList() | m.Matches() | m.Contains() | m.Truthy() if (
                    node.attr.intrinsic and Intrinsic.of(node.attr.name).of_trace):
                return None
            case _:
                read = set(checked_names(node))
                if None in read:  # any span
                    return None
                names.update(name for name in read if name is not None)
    return frozenset(names)


def required_names(node: m.Condition | None) -> frozenset[str] | None:
    """Span names of which a trace must have at least one for ``node`` to hold.

    None when no such set exists (a ``not``, or no ``when`` at all). The scanner uses it
    to skip rules whose trigger cannot be in a trace without evaluating them.
    """
    match node:
        case m.SpanCheck():
            return None if node.name is None else frozenset({node.name})  # any span: no name to look for
        case m.CountCheck() if count_needs_span(node):
            return None if node.left.name is None else frozenset({node.left.name})
        case m.RelationCheck(every=False):  # both sides must be there
            return required_names(m.And((node.left, node.right)))
        case m.And():
            sets = [s for s in map(required_names, node.items) if s is not None]
            return min(sets, key=len) if sets else None
        case m.Or():
            union: frozenset[str] = frozenset()
            for item in node.items:
                names = required_names(item)
                if names is None:
                    return None
                union |= names
            return union
        case _:
            return None


def count_needs_span(node: m.CountCheck) -> bool:
    """Whether ``count(X) op n`` can only hold when the trace has a span named X."""
    right = node.right
    if isinstance(right, (m.SpanCount, bool)):
        return False
    if not isinstance(right, _NUMBER):
        return False
    return (node.op == ">" and right >= 0) or (node.op in {">=", "=="} and right >= 1)


def _conjuncts(node: m.Condition | None) -> tuple[m.Condition, ...]:
    """The parts of ``always`` named when missing: each item of a top-level ``and``."""
    if node is None:
        return ()
    return node.items if isinstance(node, m.And) else (node,)


def _trigger_names(inv: m.Invariant) -> frozenset[str] | None:
    if inv.when is not None:
        return required_names(inv.when)
    if inv.always is None:
        return required_names(inv.never)
    return None


@dataclass(frozen=True)
class CompiledInvariant:
    """An invariant ready to run: closures for the fast path, parts for explanations."""

    when: TraceTest | None
    always: TraceTest | None
    never: TraceTest | None
    trigger_names: frozenset[str] | None
    explainer: Explainer

    @classmethod
    def build(cls, inv: m.Invariant) -> CompiledInvariant:
        """Compile every part once, for the fast path and the explanation alike."""
        compiler = _Compiler()
        when = compiler.condition(inv.when) if inv.when is not None else None
        always = compiler.condition(inv.always) if inv.always is not None else None
        never = compiler.condition(inv.never) if inv.never is not None else None
        explainer = Explainer(
            unconditional=inv.when is None,
            triggers=tuple(map(compiler.check_part, unnegated_checks(inv.when))),
            always=always,
            lacking=tuple(map(compiler.part, _conjuncts(inv.always))),
            never=never,
            never_text=condition(inv.never) if inv.never is not None else "",
            forbidding=tuple(map(compiler.check_part, unnegated_checks(inv.never))),
        )
        return cls(when, always, never, _trigger_names(inv), explainer)

    def in_scope(self, trace: Trace) -> bool:
        """``when`` holds (always, without a ``when``)."""
        return self.when is None or self.when(trace)

    def violated_by(self, trace: Trace) -> bool:
        """In scope, and ``always`` fails or ``never`` holds."""
        return self.in_scope(trace) and self.fails_in_scope(trace)

    def fails_in_scope(self, trace: Trace) -> bool:
        """``always`` fails or ``never`` holds, for a trace already known to be in scope."""
        if self.always is not None and not self.always(trace):
            return True
        return self.never is not None and self.never(trace)

    def explain(self, rule: Rule, trace: Trace) -> Violation:
        """Why ``trace`` violates ``rule`` (whose invariant this is), from the compiled parts."""
        return self.explainer.violation(rule, trace)
