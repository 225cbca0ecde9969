"""What Tempo has seen over a window, asked only about what the rules use (``validate --tempo``).

Tempo's tag API answers from the same blocks as search: span names are the values of the
intrinsic ``name``, attribute names are listed per scope, and values per attribute. Only
attributes a rule compares with a string for equality have their values asked for, and only
in the scopes where their name was seen: the answer to anything else is already known. Event
attributes (``event.x``) are looked for in Tempo's event scope, asked only when a rule uses one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from checker.rules.vocabulary import Intrinsic
from checker.tempo.client import gather_strict
from checker.traceql.syntax import SCOPES, tag_identifier

if TYPE_CHECKING:
    from collections.abc import Sequence

    from checker.rules import model as m
    from checker.rules.usage import Usage
    from checker.tempo.client import TempoClient

STRING = "string"  # the tag values type of string attributes
EVENT = "event"  # the tag scope of span events' attributes


@dataclass(frozen=True)
class Seen:
    """Span names, attribute names per scope and string values per (scope, name) Tempo has seen."""

    span_names: frozenset[str]
    names: dict[str, frozenset[str]]
    values: dict[tuple[str, str], frozenset[str]]

    def scopes_of(self, attr: m.Attr) -> list[str]:
        """Where ``attr`` was seen: its own scope only, or, unscoped, the span's and the resource's."""
        wanted = (attr.scope,) if attr.scope else SCOPES
        return [scope for scope in wanted if attr.name in self.names.get(scope, frozenset())]

    def values_of(self, attr: m.Attr) -> frozenset[str]:
        """The string values seen for ``attr`` in every scope where it was seen."""
        return frozenset().union(*(self.values.get((scope, attr.name), frozenset())
                                   for scope in self.scopes_of(attr)))


async def seen(client: TempoClient, used: Sequence[Usage], start: int, end: int) -> Seen:
    """Ask Tempo what it saw in [start, end] of what ``used`` names; raises ``TempoError``."""
    asks_names = any(u.span_names for u in used)
    asks_attributes = any(u.attributes for u in used)
    scopes = (*SCOPES, EVENT) if any(a.scope == EVENT for u in used for a in u.attributes) else SCOPES
    names_of_spans, *scoped = await gather_strict(
        _strings(client, Intrinsic.NAME.traceql, start, end, ask=asks_names),
        *(_names(client, scope, start, end, ask=asks_attributes) for scope in scopes))
    partial = Seen(names_of_spans, dict(zip(scopes, scoped, strict=True)), {})
    keys = sorted({(scope, attr.name) for u in used for attr, values in u.values.items() if values
                   for scope in partial.scopes_of(attr)})
    values = await gather_strict(*(_strings(client, tag_identifier(scope, name), start, end)
                                   for scope, name in keys))
    return Seen(partial.span_names, partial.names, dict(zip(keys, values, strict=True)))


async def _names(client: TempoClient, scope: str, start: int, end: int, *, ask: bool) -> frozenset[str]:
    return await client.tag_names(scope, start, end) if ask else frozenset()


async def _strings(client: TempoClient, identifier: str, start: int, end: int, *,
                   ask: bool = True) -> frozenset[str]:
    """The string values of ``identifier``: a rule's string never equals a number or a boolean."""
    if not ask:
        return frozenset()
    return frozenset(value for kind, value in await client.tag_values(identifier, start, end)
                     if kind == STRING)
