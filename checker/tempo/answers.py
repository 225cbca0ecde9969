"""What an answer must hold to be believed as Tempo's: search pages, traces by ID, tags.

A proxy, a load balancer or a half-started Tempo can answer 200 with ``{}``,
``{"error": "..."}`` or a page of HTML. Read with defaults, any of them looks like "no
traces, every job done", and a window holding a violation would be recorded as clean. So
an answer must show the keys Tempo always sends (tempo-recordings/samples): every search
answer carries a ``metrics`` object, which Tempo's combiner creates before any job runs.
Tempo's JSON omits zero numbers and empty lists, so ``traces``, ``completedJobs`` and
``totalJobs`` may be absent, but only when they are empty or zero: a window without any
block to search (a quiet hour in the past) answers ``{"traces": [], "metrics": {}}``.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import Any

from checker.tempo.errors import UnprovenAnswerError

HEX_ID = re.compile(r"[0-9a-fA-F]{1,32}")
UINT32 = 2**32
SHOWN = 200  # characters of a remote value quoted in a message


@dataclass(frozen=True)
class SearchPage:
    """One search answer: trace IDs padded to 32 hex, and whether Tempo ran every job."""

    ids: frozenset[str]
    complete: bool


def search_page(body: Any) -> SearchPage:
    """The page ``body`` proves to be, or ``UnprovenAnswerError`` saying what is missing."""
    if not isinstance(body, dict):
        raise UnprovenAnswerError(f"search answer is not a JSON object{_quoted(body)}")
    if "error" in body:  # never in Tempo's search answers; a gateway's {"error": ..., "metrics": {}}
        raise UnprovenAnswerError(f"search answer carries an error{_said(body)}")
    metrics = body.get("metrics")
    if not isinstance(metrics, dict):
        raise UnprovenAnswerError(f"search answer has no metrics object, so it is not Tempo's{_said(body)}")
    traces = body.get("traces", [])
    if not isinstance(traces, list):
        raise UnprovenAnswerError(f"search answer's traces is not a list{_said(body)}")
    completed, total = _count(metrics, "completedJobs"), _count(metrics, "totalJobs")
    if completed > total:
        raise UnprovenAnswerError(f"search answer reports {completed} of {total} jobs completed")
    if traces and total == 0:
        raise UnprovenAnswerError("search answer lists traces but reports no jobs (totalJobs)")
    return SearchPage(frozenset(_trace_id(item) for item in traces), completed == total)


def trace_v2(body: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The trace of a v2 answer (None when Tempo does not have it) and its PARTIAL message.

    Tempo's v2 never answers 404: a missing trace is ``{"trace": {}, "metrics": {}}``.
    """
    trace = body.get("trace") if isinstance(body, dict) else None
    if not isinstance(trace, dict):
        raise UnprovenAnswerError(f"trace answer has no trace object, so it is not Tempo's{_said(body)}")
    status = body.get("status")
    if status not in (None, "COMPLETE", "PARTIAL"):
        raise UnprovenAnswerError(f"trace answer has an unknown status{_quoted(status)}")
    partial = str(body.get("message") or "partial")[:SHOWN] if status == "PARTIAL" else None
    return _resource_spans(trace, "resourceSpans"), partial


def trace_v1(body: Any) -> dict[str, Any]:
    """The trace of a v1 answer; v1 answers a missing trace with 404, never with 200 and no spans."""
    if not isinstance(body, dict):
        raise UnprovenAnswerError(f"trace answer is not a JSON object{_quoted(body)}")
    key = "batches" if "batches" in body else "resourceSpans"
    container = _resource_spans(body, key)
    if container is None:
        raise UnprovenAnswerError(f"trace answer has no batches, so it is not Tempo's{_said(body)}")
    return container


def tag_names(body: Any, scope: str) -> frozenset[str]:
    """The names a tags v2 answer lists in ``scope``; absent scopes are empty (JSON omits them).

    Like a search answer, a tag answer always carries ``metrics`` (tags_v2.json).
    """
    scopes = _tag_answer(body, "scopes", "tag names")
    names: set[str] = set()
    for entry in scopes:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UnprovenAnswerError(f"tag names answer has a scope without a name{_quoted(entry)}")
        tags = entry.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise UnprovenAnswerError(f"tag names answer's tags are not a list of names{_quoted(tags)}")
        if entry["name"] == scope:
            names.update(tags)
    return frozenset(names)


def tag_values(body: Any) -> frozenset[tuple[str, str]]:
    """(type, value) pairs of a tag values v2 answer, e.g. ("string", "checkout")."""
    values = _tag_answer(body, "tagValues", "tag values")
    pairs: set[tuple[str, str]] = set()
    for item in values:
        kind = item.get("type") if isinstance(item, dict) else None
        value = item.get("value", "") if isinstance(item, dict) else None  # "" is omitted
        if not isinstance(kind, str) or not isinstance(value, str):
            raise UnprovenAnswerError(f"tag values answer has a bad value{_quoted(item)}")
        pairs.add((kind, value))
    return frozenset(pairs)


def _tag_answer(body: Any, key: str, what: str) -> list[Any]:
    """The list under ``key``, from an answer that is Tempo's.

    A names answer carries ``metrics`` (tags_v2.json); no values answer is recorded, so there
    its own ``tagValues`` list is proof enough, metrics or not.
    """
    if not isinstance(body, dict):
        raise UnprovenAnswerError(f"{what} answer is not a JSON object{_quoted(body)}")
    proven = isinstance(body.get("metrics"), dict) or (key == "tagValues" and key in body)
    if "error" in body or not proven:
        raise UnprovenAnswerError(f"{what} answer has no metrics object, so it is not Tempo's{_said(body)}")
    listed = body.get(key, [])
    if not isinstance(listed, list):
        raise UnprovenAnswerError(f"{what} answer's {key} is not a list")
    return listed


def _resource_spans(container: dict[str, Any], key: str) -> dict[str, Any] | None:
    spans = container.get(key, [])
    if not isinstance(spans, list):
        raise UnprovenAnswerError(f"trace answer's {key} is not a list")
    return {"resourceSpans": spans} if spans else None


def _count(metrics: dict[str, Any], key: str) -> int:
    value = metrics.get(key, 0)  # omitted when zero
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < UINT32:
        raise UnprovenAnswerError(f"search answer's metrics.{key} is not a job count{_quoted(value)}")
    return value


def _trace_id(item: Any) -> str:
    raw = item.get("traceID") if isinstance(item, dict) else None
    if not isinstance(raw, str) or not HEX_ID.fullmatch(raw):
        raise UnprovenAnswerError(f"search answer has a bad traceID{_quoted(raw)}")
    return raw.lower().zfill(32)


def _said(body: Any) -> str:
    """What a JSON error object said, e.g. ``{"error": "..."}`` from a proxy."""
    if isinstance(body, dict):
        for key in ("error", "message", "status"):
            if isinstance(body.get(key), str):
                return f": it says {body[key][:SHOWN]!r}"
    return ""


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxstring = short.maxother = SHOWN
    short.maxlevel = 2
    return short


_SHORT = _short_repr()


def _quoted(value: Any) -> str:
    """A short form of a remote value, however large or deep it is."""
    return f": {_SHORT.repr(value)}"
