"""Tempo's tag API, answered from stored spans: ``/api/v2/search/tags`` and tag values v2.

Shapes pinned to ``tempo-recordings/samples/tags_v2.json`` (names sorted, scopes in the
order resource, span, intrinsic, ``metrics.inspectedBytes`` a string; the recording has no
events, so where the event scope goes is a guess) and to Tempo's API
docs for tag values (``{"tagValues": [{"type": "string", "value": ...}], "metrics": {...}}``);
empty lists are left out, as Tempo's JSON leaves them out.
Only the identifiers the checker asks about are understood (``name``, ``span.x``,
``resource.x``, ``event.x``, ``.x``, each name bare or "quoted"); any other is a 400, never a silent
empty answer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from .traceql import ARRAY, Span, Val

if TYPE_CHECKING:
    from collections.abc import Iterable

# The intrinsic scope of a real Tempo 3.1, as recorded: fixed, whatever the data.
INTRINSICS: Final = (
    "duration", "event:name", "event:timeSinceStart", "instrumentation:name",
    "instrumentation:version", "kind", "link:spanID", "link:traceID", "name", "rootName",
    "rootServiceName", "span:duration", "span:id", "span:kind", "span:name", "span:parentID",
    "span:status", "span:statusMessage", "status", "statusMessage", "trace:duration", "trace:id",
    "trace:rootName", "trace:rootService", "traceDuration",
)
SCOPE_ORDER: Final = ("resource", "span", "event", "intrinsic")  # event: not recorded, placed by guess
# Scopes Tempo accepts that the double has no data for (its spans keep no links).
EMPTY_SCOPES: Final = frozenset({"link", "instrumentation"})
_IDENTIFIER = re.compile(
    r'(?P<scope>span|resource|event|)\.(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[\w.:/-]+))')


class TagRequestError(ValueError):
    """A tag request Tempo answers 400, with Tempo's wording."""


def tag_names(spans: Iterable[Span], scope: str) -> dict[str, Any]:
    """The scopes part of a tags v2 answer; ``scope`` "" (or "all") for every scope."""
    if scope not in {"", "all", *SCOPE_ORDER, *EMPTY_SCOPES}:
        raise TagRequestError(f"invalid scope: {scope}")
    names: dict[str, set[str]] = {"resource": set(), "span": set(), "event": set()}
    for span in spans:
        names["resource"].update(span.resource_attributes)
        names["span"].update(span.attributes)
        names["event"].update(key for event in span.events for key in event.attributes)
    found = {**{key: sorted(value) for key, value in names.items()}, "intrinsic": list(INTRINSICS)}
    wanted = SCOPE_ORDER if scope in {"", "all"} else (scope,)
    scopes = [{"name": name, "tags": found[name]} for name in wanted if found.get(name)]
    return {"scopes": scopes} if scopes else {}  # Tempo's JSON omits empty lists


def tag_values(spans: Iterable[Span], identifier: str) -> dict[str, Any]:
    """The tagValues part of a tag values v2 answer: each distinct value once, sorted."""
    scopes, name = parse_identifier(identifier)
    values: set[tuple[str, str]] = set()
    for span in spans:
        if name is None:
            values.add(("string", span.name))
            continue
        for scope in scopes:
            for attributes in _scoped(span, scope):
                values.update(_rendered(attributes.get(name)))
    listed = [{"type": kind, "value": value} for kind, value in sorted(values)]
    return {"tagValues": listed} if listed else {}


def _scoped(span: Span, scope: str) -> list[dict[str, Val]]:
    """The attribute maps of ``span`` in ``scope``: its own, its resource's, or each event's."""
    if scope == "event":
        return [event.attributes for event in span.events]
    return [span.attributes if scope == "span" else span.resource_attributes]


def parse_identifier(identifier: str) -> tuple[tuple[str, ...], str | None]:
    """(scopes, attribute name) of a tag values identifier; name None for the span name."""
    if identifier in {"name", "span:name"}:
        return (), None
    match = _IDENTIFIER.fullmatch(identifier)
    if match is None:
        raise TagRequestError(f"please provide a valid tagName: {identifier!r} is not an identifier "
                              "the Tempo test double knows (name, span.x, resource.x, event.x, .x)")
    quoted = match["quoted"]
    name = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match["bare"]
    return (match["scope"],) if match["scope"] else ("span", "resource"), name


def _rendered(value: Val | None) -> list[tuple[str, str]]:
    """A stored value as Tempo lists it (each element of an array on its own)."""
    if value is None:
        return []
    kind, payload = value
    if kind == ARRAY:
        return [pair for item in payload for pair in _rendered(item)]
    if isinstance(payload, bool):
        return [(kind, "true" if payload else "false")]
    return [(kind, str(payload))]
