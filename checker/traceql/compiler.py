"""Compile a normalised rule into a QueryPlan.

Soundness is the invariant. ``over`` gives a superset of the traces where a condition
holds, ``under`` a subset; a construct that cannot be pushed down exactly is widened
(over) or dropped (under), and the exact evaluator decides on the fetched trace. Scopes
use only single-span filters, whose ID sets are combined client-side: Tempo evaluates a
cross-span ``&&`` and ``| count()`` per trace fragment, so they could miss a trace whose
spans landed in different blocks. A per-fragment count may only *clear* traces, where a
miss costs one fetch.
"""

from __future__ import annotations

import functools

from checker.engine.compiled import count_needs_span
from checker.rules import model as m
from checker.rules.lint import reads_events
from checker.rules.printer import condition as condition_text
from checker.rules.vocabulary import Intrinsic
from checker.traceql import plan as p
from checker.traceql import syntax as q

# A translated predicate: (over, under). over None: no constraint; under None: cannot hold.
Translation = tuple[str | None, str | None]


@functools.lru_cache(maxsize=4096)  # pure over a frozen invariant: a daemon compiles each version once
def compile_rule(inv: m.Invariant) -> p.QueryPlan:
    """The plan: candidates = (scope - clear(always)) | (scope & scope(never))."""
    compiler = _Compiler()
    scope = compiler.over(inv.when) if inv.when is not None else p.EVERY_TRACE
    parts: list[p.SetExpr] = []
    if inv.always is not None:
        parts.append(p.difference(scope, within(compiler.under(inv.always), scope)))
    if inv.never is not None:
        parts.append(p.intersection([scope, compiler.over(inv.never)]))
    return p.QueryPlan(p.union(parts), scope, tuple(dict.fromkeys(compiler.notes)))


def within(clear: p.SetExpr, scope: p.SetExpr) -> p.SetExpr:
    """Restrict clearing searches to the scope with a cross-span ``&&``.

    Only traces in scope need clearing, so ``{scope} && {clear}`` returns far fewer IDs than
    ``{clear}`` alone. Tempo evaluates it per fragment and may miss a trace whose spans are
    split; that only leaves the trace a candidate, to be fetched and judged exactly.
    """
    if not (isinstance(scope, p.Search) and scope.single_span):
        return clear
    match clear:
        case p.Search() if clear.single_span:
            return p.Search(q.both(scope.query, clear.query), p.Role.CLEAR,
                            f"{clear.source}, within the scope", exact=False)
        case p.Union():
            return p.union([within(part, scope) for part in clear.parts])
        case p.Intersection():
            return p.intersection([within(part, scope) for part in clear.parts])
    return clear


class _Compiler:
    """One dispatch point per direction; notes collect every widening for ``explain``."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def over(self, node: m.Condition) -> p.SetExpr:
        """A superset of the traces where ``node`` holds."""
        match node:
            case m.And():
                return p.intersection([self.over(i) for i in node.items])
            case m.Or():
                return p.union([self.over(i) for i in node.items])
            case m.Not():
                return p.difference(p.EVERY_TRACE, self.under(node.item))
            case m.SpanCheck():
                query, exact = self._span_filter(node, under=False)
                if not exact:
                    self.notes.append(f"{condition_text(node)}: searched without the predicates "
                                      "TraceQL cannot express exactly; confirmed on the full trace")
                return p.Search(query or q.EVERYTHING, p.Role.SCOPE, condition_text(node), exact,
                                single_span=query is not None)
            case m.RelationCheck():
                return self._relation_over(node)
            case m.CountCheck():
                return self._count_over(node)

    def under(self, node: m.Condition) -> p.SetExpr:
        """A subset of the traces where ``node`` holds."""
        match node:
            case m.And():
                return p.intersection([self.under(i) for i in node.items])
            case m.Or():
                return p.union([self.under(i) for i in node.items])
            case m.Not():
                return p.difference(p.EVERY_TRACE, self.over(node.item))
            case m.SpanCheck():
                query, exact = self._span_filter(node, under=True)
                if query is None:
                    self.notes.append(f"{condition_text(node)}: cannot clear traces through "
                                      "TraceQL; every candidate is checked on the full trace")
                    return p.NOTHING
                return p.Search(query, p.Role.CLEAR, condition_text(node), exact, single_span=True)
            case m.RelationCheck():
                return self._relation_under(node)
            case m.CountCheck():
                return self._count_under(node)

    def _span_filter(self, check: m.SpanCheck, *, under: bool) -> tuple[str | None, bool]:
        conditions = [] if check.name is None else [q.name_equals(check.name)]
        exact = True
        for pred in _one_event_where(check.where):
            over_text, under_text = translate_where(pred) if pred is not None else (None, None)
            exact = exact and over_text is not None and over_text == under_text
            chosen = under_text if under else over_text
            if chosen is not None:
                conditions.append(chosen)
            elif under:
                return None, False
        return q.spanset(conditions), exact

    def _relation_over(self, node: m.RelationCheck) -> p.SetExpr:
        """Both sides are in the trace; with ``every``, no left side at all or some right side."""
        text = condition_text(node)
        if node.every:
            self.notes.append(f"{text}: holds on traces without {condition_text(node.left)}; scoped "
                              "as lacking it or having the right side, checked on the full trace")
            return p.union([p.difference(p.EVERY_TRACE, self.under(node.left)), self.over(node.right)])
        self.notes.append(f"{text}: scoped as having both sides; {node.relation.value} is checked on "
                          "the full trace")
        return p.intersection([self.over(node.left), self.over(node.right)])

    def _relation_under(self, node: m.RelationCheck) -> p.SetExpr:
        """Tempo's structural operator where there is one: found in one fragment, it holds in the trace.

        A relation split across fragments (or in a fragment without its root, which Tempo does
        not number) is not found: the trace stays a candidate, fetched and judged whole.
        """
        text = condition_text(node)
        left, _ = self._span_filter(node.left, under=True)
        right, _ = self._span_filter(node.right, under=True)
        query = None if node.every or left is None or right is None else q.related(left, node.relation, right)
        if query is None:
            self.notes.append(f"{text}: cannot clear traces through TraceQL; checked on the full trace")
            return p.NOTHING
        return p.Search(query, p.Role.CLEAR, text, exact=False)

    def _count_over(self, node: m.CountCheck) -> p.SetExpr:
        text = condition_text(node)
        if count_needs_span(node):
            counted = m.SpanCheck(node.left.name, node.left.where)
            query, _exact = self._span_filter(counted, under=False)
            self.notes.append(f"{text}: scoped as 'has {condition_text(counted)}'; the count is "
                              "checked on the full trace")
            return p.Search(query or q.EVERYTHING, p.Role.SCOPE, f"has {condition_text(counted)}",
                            exact=False, single_span=query is not None)
        self.notes.append(f"{text}: can hold without any such span; every trace is in scope")
        return p.EVERY_TRACE

    def _count_under(self, node: m.CountCheck) -> p.SetExpr:
        right = node.right
        text = condition_text(node)
        if node.op in {">", ">="} and isinstance(right, int | float) and not isinstance(right, bool):
            threshold = int(right // 1) if node.op == ">" else -int(-right // 1)
            if threshold < (0 if node.op == ">" else 1):
                return p.EVERY_TRACE
            spans, _exact = self._span_filter(m.SpanCheck(node.left.name, node.left.where), under=True)
            if spans is None:
                self.notes.append(f"{text}: cannot clear traces through TraceQL; checked on the full trace")
                return p.NOTHING
            return p.Search(q.count_query(spans, node.op, threshold), p.Role.CLEAR, text, exact=False)
        self.notes.append(f"{text}: cannot clear traces through TraceQL; checked on the full trace")
        return p.NOTHING


def _one_event_where(wheres: tuple[m.Predicate, ...]) -> list[m.Predicate | None]:
    """The wheres, with None for each after the first that reads events.

    Separate wheres may be met by different events, while Tempo may read event conditions in one
    filter as one event's: only one where's event terms can share the filter and keep it a superset.
    """
    kept: list[m.Predicate | None] = []
    seen_events = False
    for pred in wheres:
        events = reads_events(pred)
        kept.append(None if events and seen_events else pred)
        seen_events = seen_events or events
    return kept


def translate_where(pred: m.Predicate) -> Translation:
    """One ``.where`` predicate: with an event term, only ever a scope.

    It holds only through an event of the span, so no part of it can clear a trace: a span
    without events fails ``a or event:name == e`` although it passes ``a``. And Tempo's reading
    of several event conditions in one filter (the same event or any) is not pinned down, while
    our over forms, read per event, are a superset under either reading.
    """
    over, under = translate(pred)
    return over, (None if reads_events(pred) else under)


def translate(pred: m.Predicate) -> Translation:
    """A predicate as TraceQL conditions on one span: (superset form, subset form)."""
    match pred:
        case m.And():
            parts = [translate(i) for i in pred.items]
            overs = [o for o, _ in parts if o is not None]
            unders = [u for _, u in parts]
            under = q.all_of([u for u in unders if u is not None]) if None not in unders else None
            return (q.all_of(overs) if overs else None), under
        case m.Or():
            parts = [translate(i) for i in pred.items]
            over_parts = [o for o, _ in parts]
            under_parts = [u for _, u in parts if u is not None]
            over = q.any_of([o for o in over_parts if o is not None]) if None not in over_parts else None
            return over, (q.any_of(under_parts) if under_parts else None)
        case m.Not(item=m.Not(item=inner)):
            return translate(inner)
        case m.Not():
            return None, None  # Tempo's !(...) is unreliable (tempo.md §4.3)
        case _:
            return _leaf(pred)


def _refs(attr: m.Attr, intrinsic: Intrinsic | None) -> list[str]:
    if intrinsic is not None:
        return [intrinsic.traceql]
    if attr.scope is not None:
        return [q.attribute(attr.scope, attr.name)]
    return [q.attribute(scope, attr.name) for scope in q.SCOPES]


def _leaf(node: m.Test | m.Truthy) -> Translation:
    intrinsic = Intrinsic.of(node.attr.name) if node.attr.intrinsic else None
    if intrinsic is not None and intrinsic.of_trace:
        # Tempo computes trace:* per stored fragment: a fragment without the root span has no
        # rootService. Not pushed down; the exact evaluation on the whole trace decides.
        return None, None
    enum = intrinsic is not None and intrinsic.is_enum
    over, under = _leaf_forms(node, _refs(node.attr, intrinsic), enum=enum)
    if node.attr.of_event:
        return _event_scope(node, over), None
    return over, under


def _event_scope(node: m.Test | m.Truthy, over: str | None) -> str | None:
    """The scope form of an event term; never a clearing one (``translate_where``).

    ``event:name != x`` holds here when SOME event has another name; Tempo documents negated
    forms on arrays as "no element", and a span's events are such a list, so ``event:name`` is
    not scoped when negated (it cannot be compared with nil). Attributes are already scoped by
    mere existence then, which holds on some event either way.
    """
    negated = ((isinstance(node, m.Compare) and node.op == "!=")
               or (isinstance(node, m.InList) and node.negated))
    return None if negated and node.attr.intrinsic else over


def _leaf_forms(node: m.Test | m.Truthy, refs: list[str], *, enum: bool) -> Translation:
    match node:
        case m.Compare(op="!=") if not node.attr.intrinsic:
            # Tempo documents != on arrays as "no element equals" but was seen to match when
            # any element differs; scope by existence, which holds either way.
            return q.any_of([q.exists(r) for r in refs]), _compare(refs, "!=", node.value, enum=enum)
        case m.Compare():
            text = _compare(refs, node.op, node.value, enum=enum)
            return text, text
        case m.InList(negated=False):
            texts = [_compare(refs, "==", v, enum=enum) for v in node.values]
            text = q.any_of([t for t in texts if t is not None]) if None not in texts else None
            return text, text
        case m.InList(negated=True) if not node.attr.intrinsic:
            # Array semantics of != differ between Tempo's docs and its behaviour: existence
            # is the only scope sure to hold, and nothing is cleared with it.
            return q.any_of([q.exists(r) for r in refs]), None
        case m.InList(negated=True):
            texts = [_compare(refs, "!=", v, enum=enum) for v in node.values]
            text = q.all_of([t for t in texts if t is not None]) if None not in texts else None
            return text, text
        case m.Matches() if not enum:
            text = q.any_of([q.compare(r, q.MATCH, q.string(node.pattern)) for r in refs])
            return text, text
        case m.Contains() if not enum:
            pattern = q.string(q.contains_pattern(node.needle))
            text = q.any_of([q.compare(r, q.MATCH, pattern) for r in refs])
            return text, text
        case m.Truthy() if not node.attr.intrinsic:
            text = q.any_of([q.compare(r, q.OPS["=="], q.literal(value=True)) for r in refs])
            return text, text
    return None, None


def _compare(refs: list[str], op: str, value: m.Scalar, *, enum: bool) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        forms = q.number_forms(op, value)
        if forms is None:
            return None
        return q.any_of([q.compare(r, o, lit) for r in refs for o, lit in forms])
    if enum:
        if not isinstance(value, str):
            return None
        return q.any_of([q.compare(r, q.OPS[op], value) for r in refs])  # enum words are bare
    return q.any_of([q.compare(r, q.OPS[op], q.literal(value)) for r in refs])


