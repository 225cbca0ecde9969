"""A loopback HTTP server that answers like Grafana Tempo's query API, from pushed OTLP/JSON.

Tests and benchmarks need a Tempo, and none can be installed here. The double serves
``/api/search``, trace by ID (v1 and v2) and the v2 tag API (``tags``) with the real
Tempo's shapes, limits, window rules and TraceQL semantics (shared/tempo.md), keeps each
push as a separate trace fragment the way Tempo keeps separate rows until compaction, logs
every request, and can inject faults (5xx/429, truncated or invalid bodies, slow answers,
incomplete searches).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import random
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final, Literal, Self

from google.protobuf.message import DecodeError

from . import protobuf, tags
from .traceql import (
    ARRAY,
    BOOL,
    DURATION,
    FLOAT,
    INT,
    KIND,
    KIND_NAMES,
    STATUS,
    STATUS_NAMES,
    STRING,
    Attribute,
    Event,
    Fragment,
    Node,
    Query,
    Span,
    Spanset,
    SpansetOp,
    TraceQLError,
    TraceQLRuntimeError,
    Val,
    evaluate,
    go_duration,
    parse_duration,
    parse_query,
    shown_attributes,
    shows_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

Route = Literal["search", "trace", "tags", "any"]
FaultKind = Literal["status", "truncated_json", "invalid_json", "timeout", "incomplete_jobs"]

TOTAL_JOBS: Final = 3  # what a small single-binary Tempo reports for a recent window
DEFAULT_SPSS: Final = 3
MAX_SPSS: Final = 100
RECENT_WINDOW_SECONDS: Final = 15 * 60  # query_backend_after: the default search window
NO_ROOT_SERVICE: Final = "<root span not yet received>"
TEXT: Final = "text/plain; charset=utf-8"
JSON: Final = "application/json"
_KIND_ENUM: Final = ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
                     "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")
_STATUS_ENUM: Final = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")
TAGS: Final = "/api/v2/search/tags"
TAG_VALUES: Final = "/api/v2/search/tag/"  # + identifier + /values
_DEFAULT_FAULT_BODIES: Final = {429: "job queue full", 499: "context canceled",
                                504: "context deadline exceeded"}


# ================================================================= public types


@dataclass(frozen=True)
class Request:
    """One request the double answered, for tests and benchmarks that count traffic."""

    path: str
    params: dict[str, str]
    status: int
    response_bytes: int
    fault: str | None = None  # the injected fault kind that shaped the answer, if any
    inspected_bytes: int = 0  # a search's column bytes read (``inspectedBytes``), 0 otherwise

    @property
    def route(self) -> str:
        """``search``, ``trace`` (v1 or v2), ``tags`` (names or values) or ``other``."""
        return _route_of(self.path)


@dataclass
class Fault:
    """A misbehaviour for the next ``times`` matching requests (faults are used FIFO).

    ``status``: answer ``status`` with ``body`` (text/plain; ``retry_after`` adds a
    Retry-After header). ``truncated_json``: the first half of the real body, status 200.
    ``invalid_json``: ``<html>oops``, status 200. ``timeout``: the real answer after
    ``delay`` seconds. ``incomplete_jobs``: a search answer with fewer traces and
    ``completedJobs < totalJobs``. ``delay`` applies to every kind. ``route`` picks the
    requests: ``search``, ``trace`` (v1 and v2), ``tags`` (tag names and values) or ``any``.
    """

    route: Route = "any"
    status: int = 500
    times: int = 1
    body: str | None = None
    delay: float = 0.0
    kind: FaultKind = "status"
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.route not in {"search", "trace", "tags", "any"}:
            raise ValueError(f"unknown fault route {self.route!r}")
        if self.kind not in {"status", "truncated_json", "invalid_json", "timeout", "incomplete_jobs"}:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.times < 1:
            raise ValueError("a fault must apply at least once")
        if self.kind == "timeout" and self.delay <= 0:
            raise ValueError("a timeout fault needs a positive delay")


@dataclass(eq=False)
class _QueuedFault:
    fault: Fault
    remaining: int


# ================================================================ OTLP decoding


@dataclass(eq=False)
class _Batch:
    """Where spans came from: one (resourceSpans, scopeSpans) entry of one push."""

    resource: dict[str, Any]
    resource_schema_url: str
    scope: dict[str, Any]
    scope_schema_url: str


@dataclass(eq=False)
class _Origin:
    """A span's provenance and its Tempo-style JSON, rendered once at push time."""

    batch: _Batch
    json: dict[str, Any]
    size: int


def _hex_id(value: Any, size: int, what: str) -> str:
    """A hex ID as 2*size lowercase digits ("" stays ""), left-padded like Tempo pads."""
    if value is None or value == "":
        return ""
    text = str(value).lower()
    if len(text) > 2 * size or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"{what} {value!r} is not a hex ID of at most {size} bytes")
    return text.zfill(2 * size)


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode("ascii")


def _enum(value: Any, names: Sequence[str], what: str) -> int:
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        if value not in names:
            raise ValueError(f"unknown {what} {value!r}")
        return names.index(value)
    return int(value or 0)


def _go_number(value: float) -> float | int:
    """Go prints 1500.0 as 1500; keep integral doubles integral in the JSON."""
    return int(value) if math.isfinite(value) and value.is_integer() and abs(value) < 1e21 else value


def _value(any_value: Mapping[str, Any]) -> Val | None:
    """An OTLP AnyValue as a typed TraceQL value; kvlists and bytes are not queryable."""
    if "stringValue" in any_value:
        return (STRING, str(any_value["stringValue"]))
    if "boolValue" in any_value:
        return (BOOL, bool(any_value["boolValue"]))
    if "intValue" in any_value:
        return (INT, int(any_value["intValue"]))
    if "doubleValue" in any_value:
        return (FLOAT, float(any_value["doubleValue"]))
    if "arrayValue" in any_value:
        items = [_value(v) for v in (any_value["arrayValue"] or {}).get("values", [])]
        return (ARRAY, tuple(item for item in items if item is not None))
    return None


def _render_value(any_value: Mapping[str, Any]) -> dict[str, Any]:
    """AnyValue JSON as gogo jsonpb prints it (intValue as a string)."""
    if "intValue" in any_value:
        return {"intValue": str(int(any_value["intValue"]))}
    if "doubleValue" in any_value:
        return {"doubleValue": _go_number(float(any_value["doubleValue"]))}
    if "arrayValue" in any_value:
        values = (any_value["arrayValue"] or {}).get("values", [])
        return {"arrayValue": _omit_empty([("values", [_render_value(v) for v in values])])}
    if "kvlistValue" in any_value:
        values = (any_value["kvlistValue"] or {}).get("values", [])
        return {"kvlistValue": _omit_empty([("values", _render_attributes(values))])}
    return dict(any_value)


def _render_attributes(attributes: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    return [{"key": a["key"], "value": _render_value(a.get("value") or {})} for a in attributes or ()]


def _attribute_values(attributes: Iterable[Mapping[str, Any]] | None) -> dict[str, Val]:
    values: dict[str, Val] = {}
    for attribute in attributes or ():
        value = _value(attribute.get("value") or {})
        if value is not None:
            values.setdefault(str(attribute["key"]), value)
    return values


def _omit_empty(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """jsonpb with EmitDefaults=false: zero and empty fields are left out."""
    return {key: value for key, value in pairs if value not in (None, "", 0, [], {})}


def _nanos(value: Any) -> str | None:
    """A uint64 timestamp as jsonpb prints it: a decimal string, left out when zero."""
    return str(int(value)) if value and int(value) else None


def _render_span(raw: Mapping[str, Any], *, ids: tuple[str, str, str], kind: int,
                 status: Mapping[str, Any]) -> dict[str, Any]:
    """One span in the trace-by-ID JSON: base64 IDs, enum names, int64 as strings."""
    trace_id, span_id, parent_id = ids
    out = _omit_empty([
        ("traceId", _b64(trace_id)), ("spanId", _b64(span_id)), ("traceState", raw.get("traceState")),
        ("parentSpanId", _b64(parent_id) if parent_id else None), ("flags", raw.get("flags")),
        ("name", raw.get("name")), ("kind", _KIND_ENUM[kind] if kind else None),
        ("startTimeUnixNano", _nanos(raw.get("startTimeUnixNano"))),
        ("endTimeUnixNano", _nanos(raw.get("endTimeUnixNano"))),
        ("attributes", _render_attributes(raw.get("attributes"))),
        ("droppedAttributesCount", raw.get("droppedAttributesCount")),
        ("events", [_render_event(e) for e in raw.get("events") or ()]),
        ("droppedEventsCount", raw.get("droppedEventsCount")),
        ("links", [_render_link(link) for link in raw.get("links") or ()]),
        ("droppedLinksCount", raw.get("droppedLinksCount")),
    ])
    code = _enum(status.get("code"), _STATUS_ENUM, "status code")
    out["status"] = _omit_empty([("message", status.get("message")),
                                 ("code", _STATUS_ENUM[code] if code else None)])
    return out


def _render_event(event: Mapping[str, Any]) -> dict[str, Any]:
    return _omit_empty([
        ("timeUnixNano", _nanos(event.get("timeUnixNano"))),
        ("name", event.get("name")), ("attributes", _render_attributes(event.get("attributes"))),
        ("droppedAttributesCount", event.get("droppedAttributesCount")),
    ])


def _render_link(link: Mapping[str, Any]) -> dict[str, Any]:
    trace_id = _hex_id(link.get("traceId"), 16, "link traceId")
    span_id = _hex_id(link.get("spanId"), 8, "link spanId")
    return _omit_empty([
        ("traceId", _b64(trace_id) if trace_id else None), ("spanId", _b64(span_id) if span_id else None),
        ("traceState", link.get("traceState")), ("attributes", _render_attributes(link.get("attributes"))),
        ("droppedAttributesCount", link.get("droppedAttributesCount")), ("flags", link.get("flags")),
    ])


def decode_request(request: Mapping[str, Any]) -> list[Span]:
    """The spans of one OTLP/JSON ExportTraceServiceRequest with hex IDs (as in dataset.otlp.json)."""
    spans: list[Span] = []
    for resource_spans in request.get("resourceSpans") or request.get("batches") or ():
        resource = resource_spans.get("resource") or {}
        resource_values = _attribute_values(resource.get("attributes"))
        rendered_resource = _omit_empty([
            ("attributes", _render_attributes(resource.get("attributes"))),
            ("droppedAttributesCount", resource.get("droppedAttributesCount"))])
        scope_list = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans")
        for scope_spans in scope_list or ():
            scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
            batch = _Batch(rendered_resource, resource_spans.get("schemaUrl") or "", _omit_empty([
                ("name", scope.get("name")), ("version", scope.get("version")),
                ("attributes", _render_attributes(scope.get("attributes"))),
                ("droppedAttributesCount", scope.get("droppedAttributesCount"))]),
                scope_spans.get("schemaUrl") or "")
            spans.extend([_decode_span(raw, batch, resource_values, scope)
                          for raw in scope_spans.get("spans") or ()])
    return spans


def _decode_span(raw: Mapping[str, Any], batch: _Batch, resource_values: dict[str, Val],
                 scope: Mapping[str, Any]) -> Span:
    trace_id = _hex_id(raw.get("traceId"), 16, "traceId")
    span_id = _hex_id(raw.get("spanId"), 8, "spanId")
    if not trace_id or not span_id:
        raise ValueError(f"span {raw.get('name')!r} needs a traceId and a spanId")
    parent_id = _hex_id(raw.get("parentSpanId"), 8, "parentSpanId")
    kind = _enum(raw.get("kind"), _KIND_ENUM, "span kind")
    status = raw.get("status") or {}
    rendered = _render_span(raw, ids=(trace_id, span_id, parent_id), kind=kind, status=status)
    origin = _Origin(batch, rendered, len(json.dumps(rendered)))
    return Span(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, name=str(raw.get("name") or ""), kind=kind,
        status_code=_enum(status.get("code"), _STATUS_ENUM, "status code"),
        status_message=str(status.get("message") or ""),
        start=int(raw.get("startTimeUnixNano") or 0), end=int(raw.get("endTimeUnixNano") or 0),
        attributes=_attribute_values(raw.get("attributes")), resource_attributes=resource_values,
        scope_name=scope.get("name"), scope_version=scope.get("version"), origin=origin,
        events=tuple(Event(str(e.get("name") or ""), _attribute_values(e.get("attributes")))
                     for e in raw.get("events") or ()),
    )


# ==================================================================== rendering


def _search_value(value: Val) -> dict[str, Any]:
    """A typed value as the AnyValue Tempo's engine emits (``asAnyValue``)."""
    kind, payload = value
    if kind == STRING:
        return {"stringValue": payload}
    if kind == INT:
        return {"intValue": str(payload)}
    if kind == FLOAT:
        return {"doubleValue": _go_number(payload)}
    if kind == BOOL:
        return {"boolValue": payload}
    if kind == DURATION:
        return {"stringValue": go_duration(payload)}
    if kind == STATUS:
        return {"stringValue": STATUS_NAMES[payload]}
    if kind == KIND:
        return {"stringValue": KIND_NAMES[payload]}
    return {"arrayValue": {"values": [_search_value(item) for item in payload]}}


def _search_span(node: Node, query: Query) -> dict[str, Any]:
    span = node.span
    attributes = [{"key": key, "value": _search_value(value)} for key, value in shown_attributes(query, node)]
    return _omit_empty([
        ("spanID", span.span_id), ("name", span.name if shows_name(query) else None),
        ("startTimeUnixNano", str(span.start) if span.start else None),
        ("durationNanos", str(span.end - span.start) if span.end > span.start else None),
        ("attributes", attributes),
    ])


def _search_spanset(spanset: Spanset, query: Query, spss: int) -> dict[str, Any]:
    """Newest spans first, cut to ``spss``; ``matched`` counts them before the cut."""
    nodes = sorted(spanset.nodes, key=lambda n: n.span.start, reverse=True)[:spss]
    return _omit_empty([
        ("spans", [_search_span(node, query) for node in nodes]), ("matched", len(spanset.nodes)),
        ("attributes", [{"key": key, "value": _search_value(value)} for key, value in spanset.attributes]),
    ])


@dataclass
class _TraceHit:
    """A matching trace, combined over its matching fragments like Tempo's combiner does."""

    trace_id: str
    root_service: str = ""
    root_name: str = ""
    start: int = 0
    duration_ms: int = 0
    stats: dict[str, list[int]] = field(default_factory=dict)
    spansets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, fragment: Fragment, spansets: list[Spanset], query: Query, spss: int) -> None:
        """First non-empty root names, earliest start, longest duration, summed service stats,
        and per ``by()`` group the spanset with the higher ``matched`` (combine.go)."""
        self.root_service = self.root_service or (fragment.root_service or "")
        self.root_name = self.root_name or (fragment.root_name or "")
        self.start = fragment.start if not self.start else min(self.start, fragment.start)
        self.duration_ms = max(self.duration_ms, fragment.duration // 1_000_000)
        for service, (count, errors) in fragment.service_stats.items():
            total = self.stats.setdefault(service, [0, 0])
            total[0] += count
            total[1] += errors
        for spanset in spansets:
            rendered = _search_spanset(spanset, query, spss)
            key = json.dumps([a for a in rendered.get("attributes", []) if a["key"].startswith("by")])
            if key not in self.spansets or self.spansets[key]["matched"] < rendered["matched"]:
                self.spansets[key] = rendered

    def json(self) -> dict[str, Any]:
        """TraceSearchMetadata as Tempo prints it: traceID without leading zeros."""
        spansets = list(self.spansets.values())
        stats = {service: _omit_empty([("spanCount", c), ("errorCount", e)]) for service, (c, e) in
                 sorted(self.stats.items())}
        return _omit_empty([
            ("traceID", self.trace_id.lstrip("0")), ("rootServiceName", self.root_service or NO_ROOT_SERVICE),
            ("rootTraceName", self.root_name), ("startTimeUnixNano", str(self.start) if self.start else None),
            ("durationMs", self.duration_ms), ("spanSet", spansets[0] if spansets else None),
            ("spanSets", spansets), ("serviceStats", stats),
        ])


def _trace_json(spans: Sequence[Span]) -> list[dict[str, Any]]:
    """resourceSpans: spans grouped by the resource and scope entry they were pushed in."""
    batches: dict[_Batch, list[dict[str, Any]]] = {}
    for span in spans:
        origin: _Origin = span.origin
        batches.setdefault(origin.batch, []).append(origin.json)
    by_resource: dict[int, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for batch, rendered in batches.items():
        key = id(batch.resource)
        if key not in by_resource:
            by_resource[key] = {"resource": batch.resource, "scopeSpans": []}
            if batch.resource_schema_url:
                by_resource[key]["schemaUrl"] = batch.resource_schema_url
            out.append(by_resource[key])
        scope_spans = {"scope": batch.scope, "spans": rendered}
        if batch.scope_schema_url:
            scope_spans["schemaUrl"] = batch.scope_schema_url
        by_resource[key]["scopeSpans"].append(scope_spans)
    return out


# ======================================================================= storage


@dataclass(eq=False)
class _Row:
    """A stored fragment, its stored size (the JSON of its spans) and its column sizes.

    ``columns`` caches the bytes of each column (``column_bytes``) once a query has read it.
    """

    fragment: Fragment
    size: int
    columns: dict[str, int] = field(default_factory=dict)

    def inspected(self, read: _Read, matched: int) -> int:
        """What one search reading this fragment inspects: the trace-level columns, the span
        columns ``read`` names, and the span IDs of the ``matched`` spans it returns."""
        returned = 0 if read.structure else matched  # with structure, every span ID is read already
        total = TRACE_COLUMN_BYTES + read.per_span * len(self.fragment.spans) + SPAN_ID_BYTES * returned
        for column in read.columns:
            if column not in self.columns:
                self.columns[column] = column_bytes(self.fragment, column)
            total += self.columns[column]
        return total


# What a search inspects, modelled on vParquet (the benchmark's amplification figure must be
# comparable with a real Tempo's inspectedBytes, which counts the column chunks it reads, not
# whole rows). Every fragment in the range costs its trace-level columns: trace ID (16 B) and
# start/end (16 B). Fixed-size span columns cost their width for every span of the fragment;
# variable-size ones (names, attributes) are summed per fragment by ``column_bytes``.
TRACE_COLUMN_BYTES: Final = 16 + 16
SPAN_ID_BYTES: Final = 8
_FIXED_SPAN_COLUMNS: Final = {"status": 1, "kind": 1, "duration": 8, "span:id": 8, "span:parentID": 8,
                              "nestedSetLeft": 4, "nestedSetRight": 4, "nestedSetParent": 4, "childCount": 4}
# A structural operator reads every span's ID and its nested-set numbers.
_STRUCTURE_BYTES: Final = SPAN_ID_BYTES + 3 * 4
_FREE_INTRINSICS: Final = frozenset({"trace:id"})  # in the trace-level columns already


@dataclass(frozen=True)
class _Read:
    """The columns one query reads: ``per_span`` bytes of fixed-size columns for each span,
    the variable-size ``columns`` (see ``column_bytes``), and whether it needs the structure."""

    per_span: int
    columns: tuple[str, ...]
    structure: bool


@functools.lru_cache(maxsize=1024)
def columns_read(query: Query) -> _Read:
    """The columns ``query`` references: every intrinsic and attribute it names (filters,
    ``by``, ``select``, aggregates), an unscoped ``.x`` both as span and resource attribute."""
    structure = any(isinstance(node, SpansetOp) and node.op not in {"AND", "OR"}
                    for node in _walk(query.root))
    per_span = _STRUCTURE_BYTES if structure else 0
    columns: list[str] = []
    fixed: set[str] = set()  # a column is read once, however often the query names it
    for ref in query.output:
        if isinstance(ref, Attribute):
            scopes = ("span", "resource") if not ref.scope else (ref.scope,)
            columns.extend(f"{scope}.{ref.name}" for scope in scopes)
        elif ref.name in _FIXED_SPAN_COLUMNS:
            if ref.name not in fixed:
                fixed.add(ref.name)
                per_span += _FIXED_SPAN_COLUMNS[ref.name]
        elif ref.name not in _FREE_INTRINSICS:
            columns.append(ref.name)
    return _Read(per_span, tuple(dict.fromkeys(columns)), structure)


def _walk(node: Any) -> Iterable[Any]:
    """``node`` and every AST node below it."""
    yield node
    if not dataclasses.is_dataclass(node):
        return
    for value in (getattr(node, f.name) for f in dataclasses.fields(node)):
        for item in value if isinstance(value, tuple) else (value,):
            if dataclasses.is_dataclass(item):
                yield from _walk(item)


def column_bytes(fragment: Fragment, column: str) -> int:
    """The bytes of one variable-size column in one fragment.

    ``span.x``: key length + value size on each span that has it; ``resource.x`` the same once
    per resource (dedicated-column style); ``name`` and ``statusMessage``: UTF-8 length per span;
    ``rootName``, ``rootServiceName``: once per fragment, ``traceDuration`` 8 B; instrumentation
    name and version once per scope; ``event.x`` and ``event:name`` as ``span.x`` and ``name``, per event.
    """
    spans = fragment.spans
    scope, _, key = column.partition(".")
    if scope == "event" and key:
        return sum(len(key) + _value_bytes(v) for s in spans for e in s.events
                   if (v := e.attributes.get(key)) is not None)
    if column == "event:name":
        return sum(len(e.name.encode()) for s in spans for e in s.events)
    if scope == "span" and key:
        return sum(len(key) + _value_bytes(v) for s in spans if (v := s.attributes.get(key)) is not None)
    if scope == "resource" and key:
        resources = {id(s.resource_attributes): s.resource_attributes for s in spans}
        return sum(len(key) + _value_bytes(v) for r in resources.values() if (v := r.get(key)) is not None)
    if column in {"name", "statusMessage"}:
        return sum(len((s.name if column == "name" else s.status_message).encode()) for s in spans)
    if column in {"rootName", "rootServiceName"}:
        return len(((fragment.root_name if column == "rootName" else fragment.root_service) or "").encode())
    if column == "traceDuration":
        return 8
    scopes = {id(s.origin.batch) if s.origin is not None else 0: s for s in spans}.values()
    return sum(len(((s.scope_name if column == "instrumentation:name" else s.scope_version) or "").encode())
               for s in scopes)


def _value_bytes(value: Val) -> int:
    """A stored value: strings their UTF-8 length, booleans 1 B, numbers 8 B, arrays their items."""
    kind, payload = value
    if kind == STRING:
        return len(payload.encode())
    if kind == ARRAY:
        return sum(_value_bytes(item) for item in payload)
    return 1 if kind == BOOL else 8


def _dedupe(spans: Iterable[Span]) -> list[Span]:
    """The first span for each span ID: how merged fragments drop duplicates."""
    seen: dict[str, Span] = {}
    for span in spans:
        seen.setdefault(span.span_id, span)
    return list(seen.values())


def _row(trace_id: str, spans: Sequence[Span]) -> _Row:
    return _Row(Fragment(trace_id, spans), sum(span.origin.size for span in spans))


# ========================================================================= HTTP


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    inspected: int = 0  # a search's inspectedBytes, for the request log


class _HttpError(Exception):
    """A 4xx/5xx with Tempo's plain-text body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _text(status: int, message: str) -> _Response:
    return _Response(status, message.encode(), TEXT)


def _json_response(payload: Any, status: int = 200) -> _Response:
    return _Response(status, json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(), JSON)


def _answer(payload: dict[str, Any] | _Response, encode: Callable[[dict[str, Any]], bytes], *,
            binary: bool) -> _Response:
    """A 200 answer's payload as JSON, or as ``encode`` makes it protobuf when asked to be;
    anything else (a v1 404) is sent as it is."""
    if isinstance(payload, _Response):
        return payload
    return _Response(200, encode(payload), protobuf.PROTOBUF) if binary else _json_response(payload)


def _route_of(path: str) -> str:
    if path == "/api/search":
        return "search"
    if path.startswith(("/api/traces/", "/api/v2/traces/")):
        return "trace"
    if path == TAGS or (path.startswith(TAG_VALUES) and path.endswith("/values")):
        return "tags"
    return "other"


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_uint(name: str, text: str, bits: int) -> int:
    """Go's ``strconv.ParseUint(text, 10, bits)`` with Tempo's ``invalid <name>:`` prefix."""
    if not text.isascii() or not text.isdigit():
        raise _HttpError(400, f"invalid {name}: strconv.ParseUint: parsing {_go_quote(text)}: invalid syntax")
    value = int(text)
    if value >= 2**bits:
        raise _HttpError(400, f"invalid {name}: strconv.ParseUint: parsing {_go_quote(text)}: "
                              "value out of range")
    return value


def _parse_int(name: str, text: str) -> int:
    """Go's ``strconv.Atoi`` with Tempo's ``invalid <name>:`` prefix."""
    digits = text[1:] if text[:1] in {"+", "-"} else text
    if not digits.isascii() or not digits.isdigit():
        raise _HttpError(400, f"invalid {name}: strconv.Atoi: parsing {_go_quote(text)}: invalid syntax")
    return int(text)


def parse_trace_id(text: str) -> str:
    """Tempo's HexStringToTraceID: hex only (1-based position in errors), odd length allowed,
    left-padded to 128 bits. Returns 32 lowercase hex digits."""
    for position, ch in enumerate(text, start=1):
        if ch not in "0123456789abcdefABCDEF":
            raise _HttpError(400, f"trace IDs can only contain hex characters: invalid character "
                                  f"'{ch}' at position {position}")
    padded = "0" + text if len(text) % 2 else text
    if len(padded) > 32:
        raise _HttpError(400, "trace IDs can't be larger than 128 bits")
    return padded.lower().zfill(32)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog of 5 refuses bursts of concurrent clients

    def __init__(self, double: TempoDouble) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.double = double

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up on a kept-alive connection are normal; anything else is reported."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the double; keep-alive, so clients reuse connections."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def do_GET(self) -> None:
        """Answer a GET."""
        self._send(self.server.double._answer(self.path, self.headers.get("Accept", "")))

    def do_POST(self) -> None:
        """OTLP/HTTP ingest on /v1/traces, JSON or protobuf (Tempo's distributor, port 4318).

        Queries are GET only.
        """
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            self._send(_text(405, "method not allowed"))
            return
        binary = self.headers.get("Content-Type", "").startswith("application/x-protobuf")
        try:
            self.server.double.push(protobuf.otlp_request(body) if binary else json.loads(body))
        except (ValueError, KeyError, TypeError, DecodeError) as err:
            self._send(_text(400, f"invalid OTLP/{'protobuf' if binary else 'JSON'}: {err}"))
            return
        self._send(_json_response({}))

    def log_message(self, *args: Any) -> None:
        """Quiet: the request log is ``TempoDouble.requests``."""

    def _send(self, response: _Response) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout fault)
            self.close_connection = True


# ==================================================================== the double


class TempoDouble:
    """A Grafana Tempo test double on ``127.0.0.1:<ephemeral port>``.

    ``with TempoDouble(now=lambda: T) as tempo: tempo.push(otlp); httpx.get(tempo.url + ...)``.
    Every ``push`` makes a new fragment for each trace it touches (queries are evaluated per
    fragment, as in Tempo); ``compact`` merges them. ``now`` and ``query_end_cutoff`` drive
    the default window and the end clamp; ``seed`` picks which traces a ``limit`` cut keeps.
    """

    def __init__(self, *, query_end_cutoff: float = 0.0, now: Callable[[], float] = time.time,
                 default_limit: int = 20, max_limit: int = 262144, max_window_hours: int = 168,
                 seed: int = 0, max_bytes_per_trace: int | None = None) -> None:
        self.query_end_cutoff = query_end_cutoff
        self.now = now
        self.default_limit = default_limit
        self.max_limit = max_limit
        self.max_window_hours = max_window_hours
        self.seed = seed
        self.max_bytes_per_trace = max_bytes_per_trace
        self._lock = threading.Lock()
        self._rows: list[_Row] = []
        self._faults: list[_QueuedFault] = []
        self._requests: list[Request] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------- data

    def push(self, request: Mapping[str, Any]) -> None:
        """Ingest one OTLP/JSON ExportTraceServiceRequest: one new fragment per trace in it."""
        by_trace: dict[str, list[Span]] = {}
        for span in decode_request(request):
            by_trace.setdefault(span.trace_id, []).append(span)
        rows = [_row(trace_id, spans) for trace_id, spans in by_trace.items()]
        with self._lock:
            self._rows.extend(rows)

    def compact(self) -> None:
        """Merge every trace's fragments into one, as Tempo's compactor eventually does."""
        with self._lock:
            by_trace: dict[str, list[Span]] = {}
            for row in self._rows:
                by_trace.setdefault(row.fragment.trace_id, []).extend(row.fragment.spans)
            self._rows = [_row(trace_id, _dedupe(spans)) for trace_id, spans in by_trace.items()]

    @property
    def trace_ids(self) -> list[str]:
        """Every stored trace ID (32 hex), sorted."""
        with self._lock:
            return sorted({row.fragment.trace_id for row in self._rows})

    @property
    def stored_bytes(self) -> int:
        """The stored size of every fragment (its spans' JSON): what a search would read if
        it read whole rows, and the denominator of the benchmark's amplification."""
        with self._lock:
            return sum(row.size for row in self._rows)

    def fragment_count(self, trace_id: str | None = None) -> int:
        """Stored fragments, of one trace or of all."""
        with self._lock:
            return sum(1 for row in self._rows if trace_id in {None, row.fragment.trace_id})

    # ----------------------------------------------------------- faults

    def inject(self, fault: Fault) -> None:
        """Queue a fault; matching requests use queued faults first in, first out."""
        with self._lock:
            self._faults.append(_QueuedFault(fault, fault.times))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, route: str) -> Fault | None:
        """The first queued fault for ``route``, used once; it leaves the queue when used up."""
        with self._lock:
            for queued in self._faults:
                if queued.fault.route in {"any", route}:
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        self._faults.remove(queued)
                    return queued.fault
        return None

    # ---------------------------------------------------------- request log

    @property
    def requests(self) -> list[Request]:
        """A snapshot of every request answered so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, route: str) -> int:
        """Requests answered on ``search``, ``trace`` or ``other`` routes."""
        return sum(1 for request in self.requests if request.route == route)

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------ server

    def start(self) -> Self:
        """Serve on 127.0.0.1 with an ephemeral port, in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="tempo-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow (fault-delayed) answers are woken up and dropped."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if self._server is None:
            raise RuntimeError("the Tempo double is not running: use start() or a with block")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---------------------------------------------------------- answering

    def _answer(self, raw_path: str, accept: str = "") -> _Response:
        """The response to ``GET raw_path``, faults applied, logged in ``requests``."""
        parts = urllib.parse.urlsplit(raw_path)
        path = parts.path
        params = {key: values[0] for key, values in
                  urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()}
        fault = self._take_fault(_route_of(path))
        if fault is not None and fault.delay > 0:
            self._stopping.wait(fault.delay)
        response = self._faulty(fault, path, params, accept) if fault else self._route(path, params, accept)
        with self._lock:
            self._requests.append(Request(path, params, response.status, len(response.body),
                                          fault.kind if fault else None, response.inspected))
        return response

    def _faulty(self, fault: Fault, path: str, params: dict[str, str], accept: str) -> _Response:
        if fault.kind == "status":
            response = _text(fault.status, fault.body if fault.body is not None else
                             _DEFAULT_FAULT_BODIES.get(fault.status, "injected fault"))
            if fault.retry_after is not None:
                seconds = float(fault.retry_after)
                response.headers["Retry-After"] = str(int(seconds)) if seconds.is_integer() else str(seconds)
            return response
        if fault.kind == "invalid_json":
            return _Response(200, b"<html>oops", "text/html")
        if fault.kind == "incomplete_jobs" and _route_of(path) == "search":
            return self._route(path, params, accept, incomplete=True)
        response = self._route(path, params, accept)
        if fault.kind == "truncated_json":
            return _Response(200, response.body[: len(response.body) // 2], response.content_type)
        return response

    def _route(self, path: str, params: dict[str, str], accept: str, *,
               incomplete: bool = False) -> _Response:
        try:
            if path in {"/api/echo", "/api/status/buildinfo", "/ready"}:
                return _static_answer(path)
            binary = protobuf.PROTOBUF in accept  # matched as a substring, as Tempo does
            if path == "/api/search":
                found = self._search(params, incomplete=incomplete)
                response = _answer(found, protobuf.search, binary=binary)
                response.inspected = int(found["metrics"].get("inspectedBytes", 0))
                return response
            if _route_of(path) == "tags":
                return _json_response(self._tags(path, params))
            for prefix, version in (("/api/v2/traces/", 2), ("/api/traces/", 1)):
                if path.startswith(prefix) and len(path) > len(prefix):
                    trace = self._trace(urllib.parse.unquote(path[len(prefix):]), params, version)
                    encode = protobuf.trace_v2 if version == 2 else protobuf.trace_v1
                    return _answer(trace, encode, binary=binary)
            return _text(404, "404 page not found\n")
        except _HttpError as err:
            return _text(err.status, err.message)

    # ------------------------------------------------------------- search

    def _search(self, params: dict[str, str], *, incomplete: bool) -> dict[str, Any]:
        if "tags" in params and "q" in params:
            raise _HttpError(400, "invalid request: can't specify tags and q in the same query")
        if "tags" in params:
            raise _HttpError(400, "tag search (tags=) is not supported by the Tempo test double; use q")
        start, end = self._window(params)
        limit = self._limit(params)
        spss = self._spss(params)
        try:
            query = parse_query(params.get("q", ""))
        except TraceQLError as err:
            raise _HttpError(400, f"invalid TraceQL query: {err}") from None
        if end - start > self.max_window_hours * 3600:
            raise _HttpError(400, f"range specified by start and end exceeds "
                                  f"{go_duration(self.max_window_hours * 3_600_000_000_000)}. "
                                  f"received start={start} end={end}")
        try:
            hits, inspected = self._matches(query, start * 1_000_000_000, end * 1_000_000_000, spss)
        except TraceQLRuntimeError as err:
            raise _HttpError(500, str(err)) from None
        complete = len(hits) <= limit
        if not complete:
            hits = self._cut(hits, limit, most_recent=query.most_recent)
        if incomplete:
            hits, complete = hits[: len(hits) // 2], False
        hits.sort(key=lambda hit: (-hit.start, hit.trace_id))
        completed = TOTAL_JOBS if complete else 1 if incomplete else TOTAL_JOBS - 1
        metrics = _omit_empty([("inspectedBytes", str(inspected) if inspected else None),
                               ("completedJobs", completed), ("totalJobs", TOTAL_JOBS)])
        return {"traces": [hit.json() for hit in hits], "metrics": metrics}

    def _matches(self, query: Query, start_ns: int, end_ns: int, spss: int) -> tuple[list[_TraceHit], int]:
        """Evaluate per fragment; keep fragments whose [start, end] overlaps the window.

        Also the bytes inspected: the columns the query reads of every fragment in range
        (``_Row.inspected``), not whole rows, as a real Tempo counts them.
        """
        with self._lock:
            rows = list(self._rows)
        read = columns_read(query)
        hits: dict[str, _TraceHit] = {}
        inspected = 0
        for row in rows:
            fragment = row.fragment
            if fragment.start > end_ns or fragment.end < start_ns:
                continue
            spansets = evaluate(query, fragment)
            inspected += row.inspected(read, len({id(n) for ss in spansets for n in ss.nodes}))
            if spansets:
                hit = hits.setdefault(fragment.trace_id, _TraceHit(fragment.trace_id))
                hit.add(fragment, spansets, query, spss)
        return list(hits.values()), inspected

    def _cut(self, hits: list[_TraceHit], limit: int, *, most_recent: bool) -> list[_TraceHit]:
        """More matches than ``limit``: an arbitrary subset (not simply the newest), as Tempo's
        first-come combiner gives; ``most_recent=true`` keeps the newest."""
        if most_recent:
            return sorted(hits, key=lambda hit: -hit.start)[:limit]
        ordered = sorted(hits, key=lambda hit: hit.trace_id)
        return random.Random(self.seed).sample(ordered, limit)  # noqa: S311 - sampling, not security

    def _window(self, params: dict[str, str]) -> tuple[int, int]:
        """Unix seconds per tempo.md §1.1/§1.2: defaults, the end clamp, then the checks."""
        now = self.now()
        latest = math.floor(now - self.query_end_cutoff)
        if "start" in params or "end" in params:
            start = _parse_uint("start", params.get("start", "0"), 32)
            end = _parse_uint("end", params.get("end", "0"), 32)
        elif params.get("since"):
            since = parse_duration(params["since"])
            if since is None:
                raise _HttpError(400, f"invalid since: not a valid duration string: "
                                      f"{_go_quote(params['since'])}")
            start, end = latest - since // 1_000_000_000, latest
        else:
            start, end = math.floor(now - RECENT_WINDOW_SECONDS), latest
        if end > latest:
            end = latest
            if start > end:
                start = math.floor(now - RECENT_WINDOW_SECONDS)
        if end <= start:
            raise _HttpError(400, "http parameter start must be before end. "
                                  f"received start={start} end={end}")
        return start, end

    def _limit(self, params: dict[str, str]) -> int:
        if "limit" not in params:
            return self.default_limit
        limit = _parse_int("limit", params["limit"])
        if limit <= 0:
            raise _HttpError(400, "invalid limit: must be a positive number")
        if limit > self.max_limit:
            raise _HttpError(400, f"limit {limit} exceeds max limit {self.max_limit}")
        return limit

    def _spss(self, params: dict[str, str]) -> int:
        if "spss" not in params:
            return DEFAULT_SPSS
        spss = _parse_int("spss", params["spss"])
        if spss < 0:
            raise _HttpError(400, "invalid spss: must be a non-negative number")
        if spss > MAX_SPSS:
            raise _HttpError(400, f"spans per span set exceeds {MAX_SPSS}. received {spss}")
        return spss or DEFAULT_SPSS

    # ---------------------------------------------------------------- tags

    def _tags(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """Tag names or values of the fragments overlapping the window (``_window``'s rules)."""
        start, end = self._window(params)
        first, last = start * 1_000_000_000, end * 1_000_000_000
        with self._lock:
            rows = [row for row in self._rows if row.fragment.start <= last and row.fragment.end >= first]
        spans = [span for row in rows for span in row.fragment.spans]
        try:
            if path == TAGS:
                answer = tags.tag_names(spans, params.get("scope", ""))
            else:
                identifier = urllib.parse.unquote(path[len(TAG_VALUES):-len("/values")])
                answer = tags.tag_values(spans, identifier)
        except tags.TagRequestError as err:
            raise _HttpError(400, str(err)) from None
        inspected = sum(row.size for row in rows)
        return {**answer, "metrics": {"inspectedBytes": str(inspected)} if inspected else {}}

    # -------------------------------------------------------- trace by ID

    def _trace(self, raw_id: str, params: dict[str, str], version: int) -> dict[str, Any] | _Response:
        trace_id = parse_trace_id(raw_id)
        if "q" in params:
            raise _HttpError(400, "q on trace by ID is not supported by the Tempo test double")
        start = _parse_uint("start", params["start"], 32) if params.get("start") else None
        end = _parse_uint("end", params["end"], 32) if params.get("end") else None
        with self._lock:
            rows = [row for row in self._rows if row.fragment.trace_id == trace_id]
        spans = _dedupe(span for row in rows for span in row.fragment.spans
                        if (start is None or row.fragment.end >= start * 1_000_000_000)
                        and (end is None or row.fragment.start <= end * 1_000_000_000))
        if not spans:
            return _Response(404) if version == 1 else {"trace": {}, "metrics": {}}
        kept, partial = self._size_limited(spans)
        if version == 1:
            if partial:
                raise _HttpError(422, "trace exceeds max size")
            return {"batches": _trace_json(kept)}
        body: dict[str, Any] = {"trace": {"resourceSpans": _trace_json(kept)},
                                "metrics": {"inspectedBytes": str(sum(row.size for row in rows))}}
        if partial:
            body["status"] = "PARTIAL"
            body["message"] = f"trace exceeds max size (max bytes: {self.max_bytes_per_trace})"
        return body

    def _size_limited(self, spans: list[Span]) -> tuple[list[Span], bool]:
        """The spans that fit ``max_bytes_per_trace`` (all of them when there is no limit)."""
        if self.max_bytes_per_trace is None:
            return spans, False
        kept: list[Span] = []
        size = 0
        for span in spans:
            size += span.origin.size
            if size > self.max_bytes_per_trace:
                return kept, True
            kept.append(span)
        return kept, False


def _static_answer(path: str) -> _Response:
    if path == "/api/echo":
        return _text(200, "echo\n")
    if path == "/ready":
        return _text(200, "ready")
    return _json_response({"version": "tempo-double", "revision": "", "branch": "", "buildUser": "",
                           "buildDate": "", "goVersion": ""})
