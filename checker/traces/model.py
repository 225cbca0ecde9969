"""Spans and traces as the evaluator sees them, independent of where they came from."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable

AttrValue: TypeAlias = "str | bool | int | float | tuple[AttrValue, ...]"
Attributes: TypeAlias = dict[str, AttrValue]


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """Something that happened during a span, such as the ``exception`` event instrumentations record."""

    name: str
    time_ns: int = 0
    attributes: Attributes = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanLink:
    """A span of another (or the same) trace this span is causally linked to."""

    trace_id: str
    span_id: str
    attributes: Attributes = field(default_factory=dict)


@dataclass(slots=True)
class Span:
    """One span; IDs are lowercase hex (trace 32 chars, span 16), status and kind lowercase."""

    trace_id: str
    span_id: str
    name: str
    parent_span_id: str | None = None
    attributes: Attributes = field(default_factory=dict)
    resource: Attributes = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    status: str = "unset"
    status_message: str = ""
    kind: str = "unspecified"
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
    # The trace it belongs to, set when the trace is assembled: trace:rootService and the other
    # trace intrinsics are read through it. Weak, so that a trace is freed as soon as it is
    # judged (a cycle would wait for the garbage collector, and streaming would hold many).
    trace_ref: weakref.ref[Trace] | None = field(default=None, repr=False, compare=False)

    @property
    def trace(self) -> Trace | None:
        """The trace this span was assembled into, if any."""
        return self.trace_ref() if self.trace_ref is not None else None

    @property
    def service(self) -> str | None:
        """The resource's ``service.name``, when it is a string."""
        value = self.resource.get("service.name")
        return value if isinstance(value, str) else None

    @property
    def duration_ns(self) -> int:
        """End minus start; 0 for spans without timestamps."""
        return max(0, self.end_ns - self.start_ns)


def span_order(span: Span) -> tuple[int, str]:
    """Start time, then span ID: the order spans are listed in, whatever order they came in."""
    return (span.start_ns, span.span_id)


class Trace:
    """All spans of one trace, indexed by name once so that every check is a lookup.

    Every trace is assembled here, from files and from Tempo alike, so this is where a span
    exported more than once (exporters retry) is kept once, the first copy: ``count()``
    must count spans, not deliveries. Spans keep the order they came in.
    """

    __slots__ = ("__weakref__", "_by_id", "_root", "by_name", "spans", "trace_id")

    def __init__(self, trace_id: str, spans: Iterable[Span]) -> None:
        self.trace_id = trace_id
        unique: dict[tuple[str, str], Span] = {}
        for span in spans:
            unique.setdefault((span.trace_id, span.span_id), span)
        self.spans = list(unique.values())
        self._root: Span | bool | None = False  # not looked for yet
        self._by_id: dict[str, Span] | None = None
        self.by_name: dict[str, list[Span]] = {}
        myself = weakref.ref(self)
        for span in self.spans:
            span.trace_ref = myself
            self.by_name.setdefault(span.name, []).append(span)

    @property
    def by_id(self) -> dict[str, Span]:
        """Spans by span ID, built the first time a structure check climbs from child to parent."""
        if self._by_id is None:
            self._by_id = {s.span_id: s for s in self.spans}
        return self._by_id

    @property
    def root(self) -> Span | None:
        """The earliest span without a parent; failing that, the earliest orphan.

        Looked for once: every span of the trace reads it for ``trace:rootService``.
        """
        if self._root is False:
            roots = [s for s in self.spans if s.parent_span_id is None]
            orphans = [s for s in self.spans if s.parent_span_id not in self.by_id]
            self._root = min(roots or orphans, key=span_order, default=None)
        return self._root if isinstance(self._root, Span) else None

    @property
    def root_service(self) -> str | None:
        """``trace:rootService``: the root span's service, None without one."""
        root = self.root
        return root.service if root is not None else None

    @property
    def root_name(self) -> str | None:
        """``trace:rootName``: the root span's name."""
        root = self.root
        return root.name if root is not None else None

    @property
    def duration_ns(self) -> int:
        """``trace:duration``: from the first span's start to the last one's end."""
        return max(0, self.end_ns - self.start_ns)

    @property
    def start_ns(self) -> int:
        """Earliest span start, 0 when unknown."""
        return min((s.start_ns for s in self.spans), default=0)

    @property
    def end_ns(self) -> int:
        """Latest span end (a span without an end counts by its start), 0 when unknown.

        Tells whether the trace may still be growing in Tempo (``scan --settle``).
        """
        return max((max(s.start_ns, s.end_ns) for s in self.spans), default=0)
