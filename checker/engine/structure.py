"""How spans of one trace stand to each other: parent and child, ancestry, siblings, order.

Each relation is answered for a whole side at once, in time linear in the spans involved:
``related(relation, trace, right)`` indexes the right-hand spans once and returns a test of
one left-hand span, so that ``every X has sibling Y`` over thousands of spans is not a
quadratic walk. Hostile traces (a span its own parent, parent cycles) end the walk; they never
loop.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import TYPE_CHECKING

from checker.rules.model import Relation

if TYPE_CHECKING:
    from collections.abc import Callable

    from checker.traces.model import Span, Trace


def related(relation: Relation, trace: Trace, right: list[Span]) -> Callable[[Span], bool]:
    """A test of whether a span of ``trace`` has a span of ``right`` in ``relation`` to it."""
    match relation:
        case Relation.CHILD:
            parents = {s.parent_span_id for s in right if s.parent_span_id != s.span_id}
            return lambda s: s.span_id in parents
        case Relation.DESCENDANT:
            ancestors = _ancestors(trace, right)
            return lambda s: s.span_id in ancestors
        case Relation.SIBLING:
            # Roots (no parent) are siblings of each other, as Tempo's nested sets have them.
            per_parent = Counter(s.parent_span_id for s in right)
            right_ids = {s.span_id for s in right}
            return lambda s: per_parent[s.parent_span_id] - (s.span_id in right_ids) > 0
        case Relation.FOLLOWED_BY:
            # The two latest starts: if the latest is the span itself, the other one decides.
            latest = heapq.nlargest(2, right, key=lambda r: r.start_ns)
            return lambda s: any(r.start_ns >= end_of(s) and r.span_id != s.span_id for r in latest)


def end_of(span: Span) -> int:
    """When a span ended; one without an end, by its start (as ``Trace.end_ns`` counts it)."""
    return max(span.start_ns, span.end_ns)


def _ancestors(trace: Trace, spans: list[Span]) -> set[str]:
    """The IDs of every span above one of ``spans``: parent, its parent, and so on.

    A walk stops at an ID already collected, so each span of the trace is climbed past once,
    and a parent cycle ends the walk. A missing parent ends it too: what lies above is unknown.
    """
    by_id = trace.by_id
    found: set[str] = set()
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id != span.span_id else None
        while parent is not None and parent not in found:
            found.add(parent)
            above = by_id.get(parent)
            parent = above.parent_span_id if above is not None else None
    return found
