"""Searches over the margin around a window, answered once per stretch of time and query.

Why: a search that adds candidates looks ``trace_margin`` around its window (10 minutes on each
side by default), so with ``every: 10s`` each stretch of time was searched about 120 times by
consecutive windows, and Tempo read the same blocks over and over. Here each stretch is asked
once per query and its trace IDs are kept (in memory, bounded, rebuilt from Tempo after a
restart); a later window asks Tempo only for the stretches no earlier answer covers.

Two rules keep it exact:

- Only searches whose every use adds candidates come here (``QueryPlan.reusable``): a kept
  stretch may start or end beyond the range asked, which can only add candidates, each
  confirmed on the whole trace.
- A kept answer stands in for a new one only if Tempo had at least as long to receive that
  stretch's spans when it answered as the window being judged has had now, and only for
  provisional passes: a final pass asks Tempo afresh (the daemon passes no cache), so a part
  that arrived since, however late for its own time, is seen as before. Stretches younger than
  the window are asked every time and not kept.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from checker.tempo.client import TempoClient

# What one kept trace ID costs in memory: a 32-character str in a frozenset (measured, CPython 3.11).
ID_BYTES = 123
BLOCK_BYTES = 400  # each kept stretch's own bookkeeping


@dataclass(frozen=True)
class _Stretch:
    """One query's trace IDs over [start, end] (unix seconds), as Tempo answered at ``asked_at``."""

    query: str
    start: int
    end: int
    asked_at: int
    ids: frozenset[str]

    @property
    def size(self) -> int:
        return BLOCK_BYTES + ID_BYTES * len(self.ids)

    def stands_for(self, age: int) -> bool:
        """Whether Tempo had had ``age`` seconds after the stretch's end when it answered."""
        return self.asked_at - self.end >= age


class SearchCache:
    """Kept answers of the margin searches, least recently used dropped past ``max_bytes``."""

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._by_query: dict[str, dict[tuple[int, int], _Stretch]] = {}
        self._recent: OrderedDict[tuple[str, int, int], None] = OrderedDict()  # least recent first
        self.bytes = 0

    async def superset(self, client: TempoClient, query: str, span: tuple[int, int], *,
                       window_end: int) -> set[str]:
        """At least every trace ``query`` matches over ``span``, for a window ending at ``window_end``.

        The part up to ``window_end`` that no usable stretch covers is asked and kept; the part
        after it is asked and not kept (it is younger than the window).
        """
        start, end = span
        now = math.floor(self._clock())
        age = now - window_end
        found: set[str] = set()
        position = start
        for stretch in self._usable(query, start, end, age):
            if stretch.end <= position:
                continue
            if stretch.start > position:
                found |= await self._ask(client, query, (position, stretch.start), now=now,
                                         window_end=window_end)
            found |= stretch.ids
            if (key := (query, stretch.start, stretch.end)) in self._recent:  # not dropped meanwhile
                self._recent.move_to_end(key)
            position = stretch.end
            if position >= end:
                return found
        return found | await self._ask(client, query, (position, end), now=now, window_end=window_end)

    def _usable(self, query: str, start: int, end: int, age: int) -> list[_Stretch]:
        kept = self._by_query.get(query, {}).values()
        return sorted((s for s in kept if s.start < end and s.end > start and s.stands_for(age)),
                      key=lambda s: (s.start, -s.end))

    async def _ask(self, client: TempoClient, query: str, span: tuple[int, int], *, now: int,
                   window_end: int) -> set[str]:
        """Tempo's answer over ``span``; the part up to ``window_end`` is kept."""
        start, end = span
        if end <= start:  # a point: the stretch before it covers it (ranges include their ends)
            return set()
        cut = min(end, window_end)
        if cut <= start:
            return await client.search_all(query, start, end)
        kept = await client.search_all(query, start, cut)
        self._keep(_Stretch(query, start, cut, now, frozenset(kept)))
        if end > cut:
            return kept | await client.search_all(query, cut, end)
        return kept

    def _keep(self, stretch: _Stretch) -> None:
        if stretch.size > self.max_bytes:
            return
        self._drop((stretch.query, stretch.start, stretch.end))
        self._by_query.setdefault(stretch.query, {})[(stretch.start, stretch.end)] = stretch
        self._recent[(stretch.query, stretch.start, stretch.end)] = None
        self.bytes += stretch.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._recent)))

    def _drop(self, key: tuple[str, int, int]) -> None:
        query, start, end = key
        kept = self._by_query.get(query, {})
        stretch = kept.pop((start, end), None)
        if stretch is None:
            return
        self._recent.pop(key)
        self.bytes -= stretch.size
        if not kept:
            del self._by_query[query]
