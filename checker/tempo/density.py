"""How many traces a query matches per second, to size search pages before asking.

A full page is never trusted (``TempoClient._enumerate``): it is thrown away and its range
searched again in parts, so every full page is bytes read for nothing. With one fixed limit a
dense window costs a full page every time it is searched. Here each answer seen teaches the
query's density, and the next range's limit is chosen to hold about twice what it expects, so
that a range searched before (or one like it) fits in its first page.

A limit larger than needed costs nothing: Tempo sends the traces that match, not the limit.
What bounds it is one answer's size (``tempo.max_search_bytes``) and the memory to decode it.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

HEADROOM = 2  # the limit asked for, over the traces expected
# A full page shows at least ``limit`` traces; how many more to guess (as the old 4-way split did).
FULL_PAGE_GUESS = 4
# Of a search answer per trace with spss=1: 0.3 KB from a real Tempo in JSON, 0.45-0.66 KB
# from the double; protobuf is 0.25 KB. Budgeted as JSON, the answer a proxy may still send.
BYTES_PER_TRACE = 600
# Each trace of a decoded JSON answer takes ~3 KB of Python objects: 20,000 are ~60 MB.
LIMIT_CEILING = 20_000
MAX_QUERIES = 1024  # queries remembered, least recently used forgotten
RATES_KEPT = 32  # recent rates kept per query; the estimate is their maximum


class Density:
    """Traces per second per query, from recent answers, in bounded memory.

    The estimate is the largest of the query's last ``RATES_KEPT`` rates: traffic that rises
    is followed at once and a quiet spell is forgotten slowly, since guessing high is cheap
    and guessing low costs a discarded page.
    """

    def __init__(self, floor: int, ceiling: int) -> None:
        self.floor = floor  # tempo.search_limit: no first page asks for less
        self.ceiling = max(floor, ceiling)
        self._rates: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rates)

    def rate(self, query: str) -> float:
        """Expected matches per second of ``query``; 0 before any answer."""
        rates = self._rates.get(query)
        return max(rates) if rates else 0.0

    def limit(self, query: str, seconds: int) -> int:
        """The limit for a first page over ``seconds``: twice the traces expected, within bounds."""
        expected = self.rate(query) * max(1, seconds)
        return max(self.floor, min(self.ceiling, math.ceil(HEADROOM * expected)))

    def observe(self, query: str, seconds: int, found: int, *, full: bool) -> None:
        """Learn from one answer: ``found`` traces over ``seconds``, a full page or not.

        A full page only says "at least": it counts ``FULL_PAGE_GUESS`` times over.
        """
        rate = found * (FULL_PAGE_GUESS if full else 1) / max(1, seconds)
        rates = self._rates.get(query)
        if rates is None:
            rates = self._rates[query] = deque(maxlen=RATES_KEPT)
            if len(self._rates) > MAX_QUERIES:
                self._rates.popitem(last=False)
        else:
            self._rates.move_to_end(query)
        rates.append(rate)

    def shrink(self, limit: int) -> None:
        """An answer to ``limit`` was over the byte budget: no later page asks for more than half."""
        self.ceiling = max(self.floor, min(self.ceiling, limit // 2))

    def parts(self, query: str, seconds: int, limit: int) -> int:
        """Into how many parts to cut a range whose page at ``limit`` was full.

        One (ask again with a higher limit) while the whole range fits one answer; otherwise
        as many as make each part's expected traces fit the ceiling, never fewer than two.
        """
        needed = HEADROOM * self.rate(query) * max(1, seconds)
        if limit < self.ceiling and needed <= self.ceiling:
            return 1
        return max(2, math.ceil(needed / self.ceiling))
