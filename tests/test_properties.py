"""Property tests: printing is stable through parsing, and evaluation matches a naive walk."""

from __future__ import annotations

import operator
from typing import Any

import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from checker.engine import Scanner
from checker.engine.compiled import predicate_test
from checker.errors import SourceLocation
from checker.rules import model as m
from checker.rules.lint import walk
from checker.rules.normalise import normalise
from checker.rules.parse import parse_condition
from checker.rules.printer import invariant as print_invariant
from checker.rules.rule import Rule
from checker.traces.model import Span, SpanEvent, Trace

SPAN_NAMES = ["a", "b", "pii.access", "GET /x", "and", 'we"ird\\name', "every", "has"]
ATTR_NAMES = ["x", "y", "data.flag", "user id", "resource.odd", "event.odd", "every"]
EVENT_NAMES = ["exception", "a", "x"]
REGEXES = ["a.*", ".*", "(?i)A", "[0-9]+", "x|y"]
NEEDLES = ["a", "", "1", '"q']
OPS = ["==", "!=", ">", ">=", "<", "<="]

strings = st.text(alphabet='ab1 "\\.\n', max_size=4)
numbers = st.one_of(st.integers(-3, 3), st.sampled_from([-1.5, 0.5, 1.0, 2.25, 1e20]))
scalars = st.one_of(numbers, strings, st.booleans())
# Unscoped (span, then resource), scoped to one of them (``resource.x``, ``span.data.flag``), or
# read on an event of the span (``event.x``, ``event:name``).
attrs = st.one_of(st.sampled_from(ATTR_NAMES).map(m.Attr),
                  st.builds(lambda name, scope: m.Attr(name, scope=scope),
                            st.sampled_from(["x", "data.flag"]),
                            st.sampled_from(["span", "resource", "event"])),
                  st.just(m.Attr("event:name", intrinsic=True)))

# Event terms likely to hold on the events ``traces`` draws, so that several meet or miss one event.
event_leaves = st.one_of(
    st.builds(m.Compare, st.just(m.Attr("event:name", intrinsic=True)), st.sampled_from(["==", "!="]),
              st.sampled_from(EVENT_NAMES)),
    st.builds(m.Compare, st.just(m.Attr("x", scope="event")), st.sampled_from(OPS), st.integers(-1, 1)))
leaf_predicates = st.one_of(
    st.builds(m.Compare, attrs, st.sampled_from(OPS), scalars),
    st.builds(m.InList, attrs, st.lists(scalars, min_size=1, max_size=3).map(tuple), st.booleans()),
    st.builds(m.Matches, attrs, st.sampled_from(REGEXES)),
    st.builds(m.Contains, attrs, st.sampled_from(NEEDLES)),
    st.builds(m.Truthy, attrs),
    event_leaves,
)


def _combine(children: Any) -> Any:
    pairs = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(pairs.map(m.And), pairs.map(m.Or), children.map(m.Not))


predicates = st.recursive(leaf_predicates, _combine, max_leaves=4)
span_checks = st.one_of(
    st.builds(m.SpanCheck, st.sampled_from(SPAN_NAMES), st.lists(predicates, max_size=2).map(tuple)),
    # span.where(...): any span; written with at least one .where, or it would read as a name
    st.builds(m.SpanCheck, st.none(), st.lists(predicates, min_size=1, max_size=2).map(tuple)))
counts = st.one_of(
    st.sampled_from(SPAN_NAMES).map(m.SpanCount),
    # counts of named spans, or of any span, on which predicates hold
    st.builds(lambda name, where: m.SpanCount(name, where=where), st.sampled_from([*SPAN_NAMES, None]),
              st.lists(predicates, min_size=1, max_size=2).map(tuple)))
count_checks = st.builds(m.CountCheck, counts, st.sampled_from(OPS),
                         st.one_of(counts, st.integers(0, 3)))
relation_checks = st.builds(m.RelationCheck, span_checks, st.sampled_from(list(m.Relation)), span_checks,
                            st.booleans())
conditions = st.recursive(st.one_of(span_checks, count_checks, relation_checks), _combine, max_leaves=4)


@st.composite
def invariants(draw: st.DrawFn) -> m.Invariant:
    when = draw(st.none() | conditions)
    always = draw(st.none() | conditions)
    never = draw(conditions if always is None else st.none() | conditions)
    return m.Invariant(when, always, never)


def reparse(inv: m.Invariant) -> m.Invariant:
    return normalise(parse_condition(print_invariant(inv)))


class TestPrintParseRoundTrip:
    """normalise → print → parse → normalise is stable."""

    @settings(max_examples=300, deadline=None)
    @given(invariants())
    def test_stable(self, inv: m.Invariant) -> None:
        once = reparse(inv)
        twice = reparse(once)
        assert once == twice
        assert print_invariant(once) == print_invariant(twice)


# ------------------------------------------------------------ reference walk

_CMP = {"==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
        "<": operator.lt, "<=": operator.le}


def _same_type(value: object, literal: object) -> bool:
    if isinstance(literal, bool) or isinstance(value, bool):
        return isinstance(literal, bool) and isinstance(value, bool)
    if isinstance(literal, int | float):
        return isinstance(value, int | float)
    return isinstance(value, str) and isinstance(literal, str)


def _typed(value: object, op: str, literal: object) -> bool:
    if not _same_type(value, literal):
        return False
    if isinstance(literal, bool) and op not in {"==", "!="}:
        return False
    return bool(_CMP[op](value, literal))


def _elements(value: object) -> list[object]:
    return list(value) if isinstance(value, tuple) else [value]


def _leaf(node: Any, value: object) -> bool:
    elements = _elements(value)
    if isinstance(node, m.Compare):
        return any(_typed(e, node.op, node.value) for e in elements)
    if isinstance(node, m.InList) and not node.negated:
        return any(_typed(e, "==", v) for e in elements for v in node.values)
    if isinstance(node, m.InList):
        return bool(elements) and all(_typed(e, "!=", v) for e in elements for v in node.values)
    if isinstance(node, m.Matches):
        return any(isinstance(e, str) and re2.fullmatch(node.pattern, e) for e in elements)
    if isinstance(node, m.Contains):
        return any(isinstance(e, str) and node.needle in e for e in elements)
    return value is True


def _on_event(attr: m.Attr) -> bool:
    return attr.scope == "event" or attr.name == "event:name"


def ref_where(pred: Any, span: Span) -> bool:
    """One ``.where``: with an event term, some event of the span meets all of it."""
    if any(_on_event(node.attr) for node in walk(pred) if hasattr(node, "attr")):
        return any(ref_pred(pred, span, event) for event in span.events)
    return ref_pred(pred, span, None)


def ref_pred(node: Any, span: Span, event: SpanEvent | None) -> bool:
    if isinstance(node, m.And):
        return all(ref_pred(i, span, event) for i in node.items)
    if isinstance(node, m.Or):
        return any(ref_pred(i, span, event) for i in node.items)
    if isinstance(node, m.Not):
        return not ref_pred(node.item, span, event)
    key, scope = node.attr.name, node.attr.scope
    if event is not None and node.attr.intrinsic:
        return _leaf(node, event.name)
    places = {None: (span.attributes, span.resource), "span": (span.attributes,),
              "resource": (span.resource,), "event": (event.attributes,) if event is not None else ()}
    return any(key in where and _leaf(node, where[key]) for where in places[scope])


def ref_cond(node: Any, trace: Trace) -> bool:
    if isinstance(node, m.And):
        return all(ref_cond(i, trace) for i in node.items)
    if isinstance(node, m.Or):
        return any(ref_cond(i, trace) for i in node.items)
    if isinstance(node, m.Not):
        return not ref_cond(node.item, trace)
    if isinstance(node, m.SpanCheck):
        return bool(ref_selected(node, trace))
    if isinstance(node, m.RelationCheck):
        rights = ref_selected(node.right, trace)
        has = [any(ref_related(node.relation, s, r, trace) for r in rights)
               for s in ref_selected(node.left, trace)]
        return all(has) if node.every else any(has)

    def count(ref: m.SpanCount) -> int:
        return sum(1 for s in trace.spans
                   if ref.name in {None, s.name} and all(ref_where(p, s) for p in ref.where))

    right = count(node.right) if isinstance(node.right, m.SpanCount) else node.right
    return bool(_CMP[node.op](count(node.left), right))


def ref_selected(check: m.SpanCheck, trace: Trace) -> list[Span]:
    return [s for s in trace.spans
            if check.name in {None, s.name} and all(ref_where(p, s) for p in check.where)]


def ref_related(relation: m.Relation, left: Span, right: Span, trace: Trace) -> bool:
    """Straight from the definitions, pair by pair: is ``right`` so related to ``left``?"""
    if right is left:
        return False
    if relation is m.Relation.CHILD:
        return right.parent_span_id == left.span_id
    if relation is m.Relation.SIBLING:
        return right.parent_span_id == left.parent_span_id
    if relation is m.Relation.FOLLOWED_BY:
        return right.start_ns >= max(left.start_ns, left.end_ns)
    above, seen = right.parent_span_id, set()
    while above is not None and above not in seen:
        if above == left.span_id:
            return True
        seen.add(above)
        above = next((s.parent_span_id for s in trace.spans if s.span_id == above), None)
    return False


def ref_violates(inv: m.Invariant, trace: Trace) -> bool:
    if inv.when is not None and not ref_cond(inv.when, trace):
        return False
    if inv.always is not None and not ref_cond(inv.always, trace):
        return True
    return inv.never is not None and ref_cond(inv.never, trace)


attr_values = st.one_of(scalars, st.lists(st.one_of(strings, numbers), max_size=2).map(tuple))
events = st.lists(st.builds(SpanEvent, st.sampled_from(EVENT_NAMES), st.just(0),
                            st.dictionaries(st.sampled_from(["x", "data.flag"]),
                                            st.integers(-1, 1) | attr_values, max_size=2)),
                  max_size=3).map(tuple)


@st.composite
def traces(draw: st.DrawFn, names: list[str] = SPAN_NAMES) -> Trace:
    resource = draw(st.dictionaries(st.sampled_from(ATTR_NAMES), attr_values, max_size=2))
    # Parents among the earlier spans, or a root, or one that never arrived; overlapping times.
    spans = [
        Span(trace_id="c" * 32, span_id=f"{i + 1:016x}", name=draw(st.sampled_from(names)),
             parent_span_id=draw(st.sampled_from([None, "f" * 16, *(f"{j + 1:016x}" for j in range(i))])),
             attributes=draw(st.dictionaries(st.sampled_from(ATTR_NAMES), attr_values, max_size=3)),
             resource=resource, start_ns=(start := draw(st.integers(0, 4))),
             end_ns=start + draw(st.integers(0, 3)), events=draw(events))
        for i in range(draw(st.integers(0, 6)))
    ]
    return Trace("c" * 32, spans)


def as_rule(index: int, inv: m.Invariant) -> Rule:
    return Rule(id=f"r{index}", name=f"r{index}", condition=print_invariant(inv), invariant=inv,
                location=SourceLocation("generated"), version="v")


class TestEvaluationAgreesWithReference:
    """The indexed, compiled evaluator gives the naive walk's verdict on every rule."""

    @settings(max_examples=400, deadline=None)
    @given(st.lists(invariants(), min_size=1, max_size=4), traces())
    def test_same_verdicts(self, invs: list[m.Invariant], trace: Trace) -> None:
        rules = [as_rule(i, inv) for i, inv in enumerate(invs)]
        expected = sorted(r.id for r in rules if ref_violates(r.invariant, trace))
        actual = sorted(v.rule_id for v in Scanner(rules).check(trace))
        assert expected == actual

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.builds(m.RelationCheck, st.sampled_from(["a", "b"]).map(m.SpanCheck),
                              st.sampled_from(list(m.Relation)),
                              st.sampled_from(["a", "b"]).map(m.SpanCheck), st.booleans()),
                    min_size=1, max_size=4), traces(names=["a", "b"]))
    def test_relations_on_few_names(self, checks: list[m.RelationCheck], trace: Trace) -> None:
        """Two names only, so that both sides often pick the same span: a span is never related to itself."""
        for check in checks:
            inv = m.Invariant(when=None, always=None, never=check)
            found = [v.rule_id for v in Scanner([as_rule(0, inv)]).check(trace)]
            assert bool(found) == ref_cond(check, trace), print_invariant(inv)


class TestEventPredicatesAgreeWithReference:
    """Event terms and span terms mixed in one ``.where``: one event must meet every event term."""

    @settings(max_examples=500, deadline=None)
    @given(st.recursive(event_leaves | st.builds(m.Compare, st.just(m.Attr("x")), st.just("=="),
                                                 st.integers(-1, 1)), _combine, max_leaves=4),
           st.builds(lambda evs, x: Span(trace_id="c" * 32, span_id="1" * 16, name="a",
                                         attributes={"x": x}, events=evs), events, st.integers(-1, 1)))
    def test_same_verdict(self, pred: m.Predicate, span: Span) -> None:
        assert ref_where(pred, span) == predicate_test(pred)(span)
