"""Read OTLP/JSON traces from files: one ExportTraceServiceRequest, or JSON Lines of them.

Accepts what real producers write: hex or base64 IDs (Tempo's trace JSON is base64),
``intValue`` as a string, enum names or numbers for kind and status, and Tempo's v1
``batches`` in place of ``resourceSpans``.

Memory stays bounded by the largest span group, never the file: a document that is not
one short line is streamed with ijson, one ``resourceSpans`` item at a time. Input is
untrusted: numbers out of range, absurd nesting and lone surrogates are refused or
neutralised here, so that nothing after decoding can crash on them.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import pickle
import re
import tempfile
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import ijson

from checker.errors import SourceLocation, TraceSourceError
from checker.files import files_under
from checker.rules.vocabulary import SPAN_KINDS, SPAN_STATUSES
from checker.traces.errors import DecodeError
from checker.traces.model import Attributes, AttrValue, Span, SpanEvent, SpanLink, Trace

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

_HEX = re.compile(r"[0-9a-fA-F]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
SUFFIXES = (".json", ".jsonl", ".ndjson")
# Above this many bytes of input, spans are partitioned through temporary files so that
# memory stays bounded while still grouping each trace's spans across all files.
MEMORY_BUDGET_BYTES = 256 * 1024 * 1024
# All partition files are open at once while spilling: stay far below descriptor limits.
MAX_PARTITIONS = 64
# A JSON Lines line longer than this is streamed like a whole document instead of loaded.
STREAM_LINE_BYTES = 8 * 1024 * 1024
# OTLP needs about 13 levels, plus 3 or 4 per nested array or kvlist value. ijson's memory
# grows with the square of the depth, so the limit is checked before it builds anything.
MAX_JSON_DEPTH = 128
MAX_VALUE_NESTING = 32
INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)
_BODY_KEYS = frozenset({"resourceSpans", "batches", "trace"})
NOT_A_REQUEST = "expected a JSON object with resourceSpans"
EMPTY_HINT = ("--traces takes OTLP/JSON files (ExportTraceServiceRequest objects, or JSON Lines "
              "of them) holding at least one span")


def clean_text(raw: object) -> str:
    r"""``raw`` as text that can always be encoded: lone surrogates become U+FFFD.

    JSON may escape half a surrogate pair (``"\ud800"``); Python keeps it, and any output
    (UTF-8 stdout, a JSON line, the store) would then fail half-way through.
    """
    text = str(raw)
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _shown(raw: object) -> str:
    """A value quoted in an error message, cut short: a hostile value may be megabytes."""
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def normalise_id(raw: object, length: int, what: str) -> str:
    """Lowercase hex of ``length`` chars from hex (any case, zeros stripped) or base64."""
    if not isinstance(raw, str) or not raw:
        raise DecodeError(f"{what} is missing or not a string")
    if len(raw) <= length and _HEX.fullmatch(raw):
        return raw.lower().zfill(length)
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what} {_shown(raw)} is neither hex nor base64") from None
    if len(decoded) * 2 != length:
        # Base64 IDs (Tempo's trace JSON) are always full length; a short one is a word.
        raise DecodeError(f"{what} {_shown(raw)} is base64 of {len(decoded)} bytes, not {length // 2}")
    return decoded.hex()


def integer(raw: object, what: str, bounds: tuple[int, int]) -> int:
    """An OTLP integer (a JSON number or a decimal string) within ``bounds``.

    ``int()`` alone would raise OverflowError on ``1e400`` and refuse 5000-digit strings
    with a message about Python's limits; both are just values out of range here.
    """
    value: int | None = None
    if isinstance(raw, int | float | str) and not isinstance(raw, bool) and len(str(raw)) <= 40:
        try:
            value = int(raw)
        except (ValueError, OverflowError):
            value = None
    if value is None or not bounds[0] <= value <= bounds[1]:
        raise DecodeError(f"{what} {_shown(raw)} is not an integer from {bounds[0]} to {bounds[1]}")
    return value


def _double(raw: Any) -> float:
    """A ``doubleValue``; an integer too large for a double is an error, not an OverflowError."""
    try:
        return float(raw)
    except OverflowError:
        raise DecodeError(f"doubleValue {str(raw)[:40]}... does not fit a double") from None


def any_value(value: dict[str, Any], nesting: int = 0) -> AttrValue | None:
    """An OTLP AnyValue as a Python value; kvlist and empty values are not comparable."""
    if "stringValue" in value:
        return clean_text(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return integer(value["intValue"], "intValue", INT64)
    if "doubleValue" in value:
        return _double(value["doubleValue"])
    if "arrayValue" in value:
        if nesting >= MAX_VALUE_NESTING:
            raise DecodeError(f"arrayValue nested more than {MAX_VALUE_NESTING} deep")
        items = (any_value(v, nesting + 1) for v in value["arrayValue"].get("values", []))
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
            out[clean_text(item["key"])] = value
    return out


def _enum(raw: object, names: tuple[str, ...], prefix: str) -> str:
    if isinstance(raw, int):
        return names[raw] if 0 <= raw < len(names) else names[0]
    text = str(raw).lower().removeprefix(prefix)
    return text if text in names else names[0]


def _events(items: Iterable[Any] | None) -> tuple[SpanEvent, ...]:
    return tuple(SpanEvent(clean_text(item.get("name", "")),
                           integer(item.get("timeUnixNano") or 0, "event timeUnixNano", UINT64),
                           attributes(item.get("attributes"))) for item in items or ())


def _links(items: Iterable[Any] | None) -> tuple[SpanLink, ...]:
    return tuple(SpanLink(normalise_id(item.get("traceId"), 32, "link traceId"),
                          normalise_id(item.get("spanId"), 16, "link spanId"),
                          attributes(item.get("attributes"))) for item in items or ())


def decode_span(raw: dict[str, Any], resource: Attributes) -> Span:
    """One OTLP span object, with its events and links."""
    status = raw.get("status") or {}
    parent = raw.get("parentSpanId")
    return Span(
        trace_id=normalise_id(raw.get("traceId"), 32, "traceId"),
        span_id=normalise_id(raw.get("spanId"), 16, "spanId"),
        parent_span_id=normalise_id(parent, 16, "parentSpanId") if parent else None,
        name=clean_text(raw.get("name", "")),
        attributes=attributes(raw.get("attributes")),
        resource=resource,
        start_ns=integer(raw.get("startTimeUnixNano") or 0, "startTimeUnixNano", UINT64),
        end_ns=integer(raw.get("endTimeUnixNano") or 0, "endTimeUnixNano", UINT64),
        status=_enum(status.get("code", 0), SPAN_STATUSES, "status_code_"),
        status_message=clean_text(status.get("message", "")),
        kind=_enum(raw.get("kind", 0), SPAN_KINDS, "span_kind_"),
        events=_events(raw.get("events")),
        links=_links(raw.get("links")),
    )


def decode_request(doc: object) -> Iterator[Span]:
    """Spans of one ExportTraceServiceRequest (or Tempo's ``{"batches": ...}`` / v2 body)."""
    if not isinstance(doc, dict):
        raise DecodeError(NOT_A_REQUEST)
    body: dict[str, Any] = doc["trace"] if isinstance(doc.get("trace"), dict) else doc
    for key in ("resourceSpans", "batches"):
        if key in body:
            if not isinstance(body[key], list):
                raise DecodeError(f"{key} is not a list")
            yield from decode_groups(body[key])
            return
    raise DecodeError(NOT_A_REQUEST)


def decode_groups(groups: Iterable[Any]) -> Iterator[Span]:
    """Spans of ``resourceSpans`` items, which may arrive one at a time from a stream."""
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


# --------------------------------------------------------------------------- files


def read_spans(path: Path) -> Iterator[Span]:
    """Stream the spans of one file, JSON Lines or a single (possibly pretty) JSON object.

    A file without a single span is an error: an empty export means the exporter, the
    path or the rotation is wrong, and scanning it would pass for a clean result.
    """
    count = 0
    try:
        with path.open("rb") as handle:
            for span in _file_spans(path, handle):
                count += 1
                yield span
            empty = handle.seek(0, 2) == 0
    except OSError as err:
        raise TraceSourceError(f"{path}: cannot read: {err.strerror}") from None
    if not count:
        raise TraceSourceError("the file is empty" if empty else "no spans in this file",
                               location=SourceLocation(path), hint=EMPTY_HINT)


def _file_spans(path: Path, handle: IO[bytes]) -> Iterator[Span]:
    # Windows tools write a byte order mark; Python's json skips it, yajl would not.
    body = len(codecs.BOM_UTF8) if handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0
    handle.seek(body)
    number, start = 0, body
    first = b"\n"
    while first and not first.strip():
        start = handle.tell()
        first = handle.readline(STREAM_LINE_BYTES)
        number += 1
    if not first:
        return
    handle.seek(start)
    whole = _Region(body, one_line=False)
    if _cut_short(first) or _one_line_object(first):
        yield from _json_lines(path, handle, number, whole)
    else:
        yield from _streamed(path, handle, whole)


def _one_line_object(line: bytes) -> bool:
    """Whether a short first line holds a whole JSON object: JSON Lines, or a compact document."""
    try:
        return isinstance(_loads(line), dict)
    except (ValueError, RecursionError):  # a pretty document's first line, or garbage
        return False


def _cut_short(line: bytes) -> bool:
    return len(line) >= STREAM_LINE_BYTES and not line.endswith(b"\n")


def _json_lines(path: Path, handle: IO[bytes], first: int, whole: _Region) -> Iterator[Span]:
    """Line by line; a long first line that is no whole document means the file is one."""
    number = first - 1
    while True:
        start = handle.tell()
        line = handle.readline(STREAM_LINE_BYTES)
        if not line:
            return
        number += 1
        if _cut_short(line):
            handle.seek(start)
            region = _Region(start, one_line=True, line=number)
            yield from _streamed(path, handle, region, whole if number == first else None)
            continue
        if line.strip():
            yield from _line_spans(path, number, line)


def _line_spans(path: Path, number: int, line: bytes) -> Iterator[Span]:
    where = SourceLocation(path, number)
    try:
        doc = _loads(line)
    except json.JSONDecodeError as err:
        raise TraceSourceError(f"invalid JSON: {err.msg} (column {err.colno})", location=where) from None
    except UnicodeDecodeError as err:
        raise TraceSourceError(f"not UTF-8 text: {err.reason}", location=where) from None
    except ValueError as err:
        raise TraceSourceError(f"invalid JSON: {err}", location=where) from None
    except RecursionError:
        raise TraceSourceError("invalid JSON: nested too deeply", location=where) from None
    try:
        yield from decode_request(doc)
    except DecodeError as err:
        raise TraceSourceError(str(err), location=where) from None


def _loads(data: bytes) -> Any:
    """``json.loads``, refusing what the streaming parser refuses too.

    Python's json accepts ``NaN`` and ``Infinity``, turns ``1e400`` into infinity and
    fails on 5000-digit integers with an unrelated message; ijson (yajl) rejects all of
    them, and a line must not mean something else than the same text in a document.
    """
    return json.loads(data, parse_constant=_no_constant, parse_float=_finite, parse_int=_int64)


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in {float("inf"), float("-inf")}:
        raise ValueError(f"number out of range: {_shown(text)}")
    return value


def _int64(text: str) -> int:
    if len(text) > 20 or not INT64[0] <= int(text) <= INT64[1]:
        raise ValueError(f"number out of range: {_shown(text)}")
    return int(text)


# ------------------------------------------------------------------ streamed documents


class _Region:
    """Where a streamed document is: from ``start`` (on ``line``) to the end of the file or of its line."""

    def __init__(self, start: int, *, one_line: bool, line: int = 1) -> None:
        self.start = start
        self.one_line = one_line
        self.line = line

    def at(self, path: Path) -> SourceLocation:
        """The whole region: its line, or the file."""
        return SourceLocation(path, self.line if self.one_line else None)


class _Reader:
    r"""A file-like view of a region for ijson, counting the bytes it hands out.

    It also rewrites each escaped lone surrogate (``\ud800``) to ``\ufffd``, as
    ``clean_text`` does for ``json``: yajl would make it ``?`` or fail with a
    UnicodeDecodeError. The rewrite keeps every byte where it was, so error offsets hold.
    ``exact_after`` makes it hand out one byte at a time past that many bytes, so that the
    byte at which the parser fails is known exactly.
    """

    def __init__(self, handle: IO[bytes], region: _Region, exact_after: int | None = None) -> None:
        handle.seek(region.start)
        self.handle = handle
        self.one_line = region.one_line
        self.exact_after = exact_after
        self.given = 0
        self.last_start = 0
        self.eof = False
        self.ready = b""
        self.held = b""

    @property
    def done(self) -> bool:
        """Whether the whole region was handed out."""
        return self.eof and not self.ready

    def read(self, size: int) -> bytes:
        if size == 0:  # ijson reads 0 bytes first to learn bytes from text
            return b""
        if self.exact_after is not None:
            size = 1 if self.given >= self.exact_after else min(size, self.exact_after - self.given)
        while len(self.ready) < size and not self.eof:
            raw = self.handle.readline(size) if self.one_line else self.handle.read(size)
            self.eof = not raw or (self.one_line and raw.endswith(b"\n"))
            ready, self.held = _defuse(self.held + raw, final=self.eof)
            self.ready += ready
        data, self.ready = self.ready[:size], self.ready[size:]
        self.last_start, self.given = self.given, self.given + len(data)
        return data


# An escaped backslash, a surrogate pair, or a lone surrogate, as JSON escapes them.
_ESCAPES = re.compile(rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
                      rb"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_ESCAPE = 6
_LONGEST_ESCAPE = 12


def _defuse(data: bytes, *, final: bool) -> tuple[bytes, bytes]:
    """``data`` with lone surrogate escapes replaced, less a tail that may still grow into one.

    ``data`` starts where no escape is open; what is held back starts likewise.
    """
    cut = len(data) if final else max(0, len(data) - _LONGEST_ESCAPE + 1)
    parts, at = [], 0
    for match in _ESCAPES.finditer(data):
        if match.start() >= cut:
            break
        cut = max(cut, match.end())
        if match.end() - match.start() == _LONE_ESCAPE:
            parts += [data[at:match.start()], b"\\ufffd"]
            at = match.end()
    parts.append(data[at:cut])
    return b"".join(parts), data[cut:]


def _streamed(path: Path, handle: IO[bytes], region: _Region,
              whole: _Region | None = None) -> Iterator[Span]:
    """One document read twice, never whole: a survey of its shape, then its span groups.

    ``whole`` is where to read instead when the region turns out not to be one document.
    """
    reader = _Reader(handle, region)
    try:
        key = _survey(ijson.basic_parse(reader, use_float=True))
    except (ijson.JSONError, DecodeError, UnicodeDecodeError) as err:
        if whole is not None and isinstance(err, ijson.JSONError):
            yield from _streamed(path, handle, whole)
            return
        raise _failure(path, handle, region, reader.last_start, err) from None
    groups = ijson.items(_Reader(handle, region), f"{key}.item", use_float=True)
    try:
        yield from decode_groups(groups)
    except DecodeError as err:
        raise TraceSourceError(str(err), location=_locate(path, handle, region, err.anchors)) from None
    except ijson.JSONError as err:  # the file changed between the two reads
        raise TraceSourceError(f"invalid JSON: {_yajl_message(err)}", location=region.at(path)) from None


def _survey(events: Iterable[tuple[str, Any]]) -> str:
    """The ijson prefix of the span groups; checks the depth before ijson builds anything."""
    kinds = _shape(events)
    body = "trace." if kinds.get("trace") == "start_map" else ""
    for key in ("resourceSpans", "batches"):
        kind = kinds.get(body + key)
        if kind == "start_array":
            return body + key
        if kind is not None:
            raise DecodeError(f"{key} is not a list")
    raise DecodeError(NOT_A_REQUEST)


def _shape(events: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """The first event of each value that may hold span groups, by its path."""
    stream = iter(events)
    if next(stream, ("", None))[0] != "start_map":
        raise DecodeError(NOT_A_REQUEST)
    depth, top, pending = 1, "", ""
    kinds: dict[str, str] = {}
    for event, value in stream:
        if pending:
            kinds[pending], pending = event, ""
        if event in {"start_map", "start_array"}:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise DecodeError(f"JSON nested more than {MAX_JSON_DEPTH} deep")
        elif event in {"end_map", "end_array"}:
            depth -= 1
        elif event == "map_key" and depth <= 2:
            top = value if depth == 1 else top
            pending = _watched(top, value, depth)
    return kinds


def _watched(top: str, key: str, depth: int) -> str:
    """The path of ``key`` if it may hold span groups (or Tempo's v2 ``trace``), else empty."""
    if key not in _BODY_KEYS:
        return ""
    if depth == 1:
        return key
    return f"trace.{key}" if top == "trace" else ""


def _failure(path: Path, handle: IO[bytes], region: _Region, last_start: int,
             err: Exception) -> TraceSourceError:
    """The survey's error at the exact line and column, found by a second, byte-exact run."""
    exact = _Reader(handle, region, exact_after=last_start)
    try:
        _survey(ijson.basic_parse(exact, use_float=True))
    except (ijson.JSONError, DecodeError, UnicodeDecodeError) as again:
        err = again
    offset = region.start + max(0, exact.given - 1)
    line, column = _position(handle, region, offset)
    if isinstance(err, DecodeError):
        # Read to its end, the document lacks something: no one place is to blame.
        return TraceSourceError(str(err), location=region.at(path) if exact.done
                                else SourceLocation(path, line, column))
    message = _yajl_message(err)
    if "UTF8" in message or isinstance(err, UnicodeDecodeError):
        return TraceSourceError("not UTF-8 text", location=SourceLocation(path, line))
    return TraceSourceError(f"invalid JSON: {message}", location=SourceLocation(path, line, column))


def _yajl_message(err: Exception) -> str:
    """The first line of yajl's message, in the words Python's json uses where they differ."""
    raw = err.args[0] if err.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    first = text.strip().splitlines()[0] if text.strip() else "incomplete document"
    first = re.sub(r"^(parse|lexical) error: ", "", first)
    if "overflow" in first:
        return "number out of range"
    return first


def _position(handle: IO[bytes], region: _Region, offset: int) -> tuple[int, int]:
    """1-based line and character column of byte ``offset``, reading the region again."""
    handle.seek(region.start)
    line, line_start, at = region.line, region.start, region.start
    while at < offset:
        chunk = handle.read(min(1 << 20, offset - at))
        if not chunk:
            break
        newlines = chunk.count(b"\n")
        if newlines:
            line += newlines
            line_start = at + chunk.rindex(b"\n") + 1
        at += len(chunk)
    handle.seek(line_start)
    column = len(handle.read(offset - line_start).decode("utf-8", "replace")) + 1
    return line, column


def _locate(path: Path, handle: IO[bytes], region: _Region,
            anchors: tuple[str, ...]) -> SourceLocation:
    """The line of a bad span, found by its spanId or name where that text is unique."""
    if region.one_line:
        return region.at(path)
    for anchor in anchors:
        for text in {json.dumps(anchor, ensure_ascii=False), json.dumps(anchor)}:
            found = _unique_offset(handle, region.start, text.encode("utf-8", "surrogatepass"))
            if found is not None:
                return SourceLocation(path, _position(handle, region, found)[0])
    return SourceLocation(path)


def _unique_offset(handle: IO[bytes], start: int, needle: bytes) -> int | None:
    """Where ``needle`` occurs in the file after ``start``, if it occurs exactly once."""
    handle.seek(start)
    found: list[int] = []
    tail, at = b"", start
    while len(found) < 2:
        chunk = handle.read(1 << 20)
        if not chunk:
            break
        window, base = tail + chunk, at - len(tail)
        hit = window.find(needle)
        while hit >= 0 and len(found) < 2:
            if base + hit not in found:
                found.append(base + hit)
            hit = window.find(needle, hit + 1)
        tail, at = window[-(len(needle) - 1):] if len(needle) > 1 else b"", at + len(chunk)
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------- traces


def group_traces(spans: Iterable[Span]) -> Iterator[Trace]:
    """Group spans by trace ID, in order of first appearance."""
    groups: dict[str, list[Span]] = {}
    for span in spans:
        groups.setdefault(span.trace_id, []).append(span)
    for trace_id, members in groups.items():
        yield Trace(trace_id, members)


def read_traces(paths: Iterable[Path], budget_bytes: int = MEMORY_BUDGET_BYTES) -> Iterator[Trace]:
    """Every trace in ``paths``, with its spans gathered from all files.

    :raises TraceSourceError: naming the file (and line) that cannot be read or decoded,
        or holds no span.
    """
    paths = list(paths)
    files, missing = files_under(paths, SUFFIXES)
    if missing:
        raise TraceSourceError(f"{missing[0]}: no such file or directory",
                               hint="--traces takes OTLP/JSON files or directories")
    if not files:
        raise TraceSourceError(f"{', '.join(map(str, paths))}: no {', '.join(SUFFIXES)} files",
                               hint=EMPTY_HINT)
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
