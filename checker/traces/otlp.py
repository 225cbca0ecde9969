"""Read OTLP/JSON traces from files: one ExportTraceServiceRequest, or JSON Lines of them.

Accepts what real producers write: hex or base64 IDs (Tempo's trace JSON is base64),
``intValue`` as a string, enum names or numbers for kind and status, and Tempo's v1
``batches`` in place of ``resourceSpans``.
"""

from __future__ import annotations

import base64
import binascii
import json
import pickle
import re
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from checker.errors import SourceLocation, TraceSourceError
from checker.files import files_under
from checker.traces.model import Attributes, AttrValue, Span, Trace

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUSES = ("unset", "ok", "error")
_HEX = re.compile(r"[0-9a-fA-F]+")
SUFFIXES = (".json", ".jsonl", ".ndjson")
# Above this many bytes of input, spans are partitioned through temporary files so that
# memory stays bounded while still grouping each trace's spans across all files.
MEMORY_BUDGET_BYTES = 256 * 1024 * 1024
# All partition files are open at once while spilling: stay far below descriptor limits.
MAX_PARTITIONS = 64


class DecodeError(ValueError):
    """A JSON value that is not valid OTLP; the caller adds file and line.

    ``anchors`` are texts of the offending span (its spanId first), so that an error in a
    pretty-printed file can point at the span's line.
    """

    def __init__(self, message: str, anchors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.anchors = anchors


def normalise_id(raw: object, length: int, what: str) -> str:
    """Lowercase hex of ``length`` chars from hex (any case, zeros stripped) or base64."""
    if not isinstance(raw, str) or not raw:
        raise DecodeError(f"{what} is missing or not a string")
    if len(raw) <= length and _HEX.fullmatch(raw):
        return raw.lower().zfill(length)
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what} {raw!r} is neither hex nor base64") from None
    if len(decoded) * 2 != length:
        # Base64 IDs (Tempo's trace JSON) are always full length; a short one is a word.
        raise DecodeError(f"{what} {raw!r} is base64 of {len(decoded)} bytes, not {length // 2}")
    return decoded.hex()


def any_value(value: dict[str, Any]) -> AttrValue | None:
    """An OTLP AnyValue as a Python value; kvlist and empty values are not comparable."""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        items = (any_value(v) for v in value["arrayValue"].get("values", []))
        return tuple(v for v in items if v is not None)
    if "bytesValue" in value:
        return str(value["bytesValue"])
    return None


def attributes(items: Iterable[dict[str, Any]] | None) -> Attributes:
    """OTLP KeyValue list → dict, skipping values that cannot be compared."""
    out: Attributes = {}
    for item in items or ():
        value = any_value(item.get("value") or {})
        if value is not None:
            out[str(item["key"])] = value
    return out


def _enum(raw: object, names: tuple[str, ...], prefix: str) -> str:
    if isinstance(raw, int):
        return names[raw] if 0 <= raw < len(names) else names[0]
    text = str(raw).lower().removeprefix(prefix)
    return text if text in names else names[0]


def decode_span(raw: dict[str, Any], resource: Attributes) -> Span:
    """One OTLP span object."""
    status = raw.get("status") or {}
    parent = raw.get("parentSpanId")
    return Span(
        trace_id=normalise_id(raw.get("traceId"), 32, "traceId"),
        span_id=normalise_id(raw.get("spanId"), 16, "spanId"),
        parent_span_id=normalise_id(parent, 16, "parentSpanId") if parent else None,
        name=str(raw.get("name", "")),
        attributes=attributes(raw.get("attributes")),
        resource=resource,
        start_ns=int(raw.get("startTimeUnixNano") or 0),
        end_ns=int(raw.get("endTimeUnixNano") or 0),
        status=_enum(status.get("code", 0), _STATUSES, "status_code_"),
        status_message=str(status.get("message", "")),
        kind=_enum(raw.get("kind", 0), _KINDS, "span_kind_"),
    )


def decode_request(doc: object) -> Iterator[Span]:
    """Spans of one ExportTraceServiceRequest (or Tempo's ``{"batches": ...}`` / v2 body)."""
    if not isinstance(doc, dict):
        raise DecodeError("expected a JSON object with resourceSpans")
    body: dict[str, Any] = doc["trace"] if isinstance(doc.get("trace"), dict) else doc
    groups = body.get("resourceSpans", body.get("batches"))
    if groups is None:
        raise DecodeError("expected a JSON object with resourceSpans")
    try:
        for group in groups:
            resource = attributes((group.get("resource") or {}).get("attributes"))
            scopes = group.get("scopeSpans") or group.get("instrumentationLibrarySpans") or []
            for scope in scopes:
                for span in scope.get("spans") or []:
                    yield _decode_anchored(span, resource)
    except DecodeError:
        raise
    except (TypeError, KeyError, AttributeError, ValueError) as err:
        raise DecodeError(f"malformed OTLP: {err}") from None


def _decode_anchored(span: Any, resource: Attributes) -> Span:
    """Decode one span; an error carries the span's own texts to find it by."""
    try:
        return decode_span(span, resource)
    except (DecodeError, TypeError, KeyError, AttributeError, ValueError) as err:
        message = str(err) if isinstance(err, DecodeError) else f"malformed OTLP: {err}"
        fields = (span.get("spanId"), span.get("name")) if isinstance(span, dict) else ()
        raise DecodeError(message, tuple(f for f in fields if isinstance(f, str) and f)) from None


def read_spans(path: Path) -> Iterator[Span]:
    """Stream the spans of one file, JSON Lines or a single (possibly pretty) JSON object."""
    try:
        with path.open("rb") as handle:
            first = handle.readline()
            while first and not first.strip():
                first = handle.readline()
            try:
                json_lines = isinstance(json.loads(first), dict) if first else False
            except ValueError:  # not JSON, or not UTF-8: the whole-file read reports it
                json_lines = False
            if not json_lines:
                handle.seek(0)
                yield from _single_document(path, handle.read())
                return
            handle.seek(0)
            yield from _json_lines(path, handle)
    except OSError as err:
        raise TraceSourceError(f"{path}: cannot read: {err.strerror}") from None


def _single_document(path: Path, data: bytes) -> Iterator[Span]:
    if not data.strip():
        return
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as err:
        raise TraceSourceError(f"invalid JSON: {err.msg}",
                               location=SourceLocation(path, err.lineno, err.colno)) from None
    except UnicodeDecodeError as err:
        where = SourceLocation(path, data.count(b"\n", 0, err.start) + 1)
        raise TraceSourceError(f"not UTF-8 text: {err.reason}", location=where) from None
    try:
        yield from decode_request(doc)
    except DecodeError as err:
        raise TraceSourceError(str(err), location=_locate(path, data, err.anchors)) from None


def _locate(path: Path, data: bytes, anchors: tuple[str, ...]) -> SourceLocation:
    """The line of a bad span in a pretty-printed document, found by its spanId or name."""
    for anchor in anchors:
        for text in {json.dumps(anchor, ensure_ascii=False), json.dumps(anchor)}:
            at = data.find(text.encode())
            if at >= 0 and data.find(text.encode(), at + 1) < 0:
                return SourceLocation(path, data.count(b"\n", 0, at) + 1)
    return SourceLocation(path)


def _json_lines(path: Path, handle: Iterable[bytes]) -> Iterator[Span]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        where = SourceLocation(path, number)
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise TraceSourceError(f"invalid JSON: {err.msg} (column {err.colno})",
                                   location=where) from None
        except UnicodeDecodeError as err:
            raise TraceSourceError(f"not UTF-8 text: {err.reason}", location=where) from None
        try:
            yield from decode_request(doc)
        except DecodeError as err:
            raise TraceSourceError(str(err), location=where) from None


def group_traces(spans: Iterable[Span]) -> Iterator[Trace]:
    """Group spans by trace ID, in order of first appearance."""
    groups: dict[str, list[Span]] = {}
    for span in spans:
        groups.setdefault(span.trace_id, []).append(span)
    for trace_id, members in groups.items():
        yield Trace(trace_id, members)


def read_traces(paths: Iterable[Path], budget_bytes: int = MEMORY_BUDGET_BYTES) -> Iterator[Trace]:
    """Every trace in ``paths``, with its spans gathered from all files.

    :raises TraceSourceError: naming the file (and line) that cannot be read or decoded.
    """
    files, missing = files_under(paths, SUFFIXES)
    if missing:
        raise TraceSourceError(f"{missing[0]}: no such file or directory",
                               hint="--traces takes OTLP/JSON files or directories")
    total = sum(f.stat().st_size for f in files)
    spans = (span for f in files for span in read_spans(f))
    if total <= budget_bytes:
        yield from group_traces(spans)
        return
    yield from _partitioned(spans, partitions=min(MAX_PARTITIONS, 1 + total // budget_bytes * 4))


def _partitioned(spans: Iterable[Span], partitions: int) -> Iterator[Trace]:
    """Spill spans to ``partitions`` temporary files by trace ID, then group one file at a time."""
    with tempfile.TemporaryDirectory(prefix="betrace-") as tmp:
        buckets = [Path(tmp, f"{i}.pickle").open("wb") for i in range(partitions)]  # noqa: SIM115
        try:
            for span in spans:
                bucket = buckets[zlib.crc32(span.trace_id.encode()) % partitions]
                pickle.dump(span, bucket, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            for bucket in buckets:
                bucket.close()
        for i in range(partitions):
            yield from group_traces(_unpickle(Path(tmp, f"{i}.pickle")))


def _unpickle(path: Path) -> Iterator[Span]:
    with path.open("rb") as handle:
        while True:
            try:
                yield pickle.load(handle)  # noqa: S301 - our own temporary file
            except EOFError:
                return
