"""Which verdicts of ``scan --tempo`` may still change: spans keep reaching Tempo late.

Batch span processors, tail sampling (``decision_wait``), exporter retries and long requests
deliver parts of a trace seconds to minutes after the rest. A verdict on a trace that was still
growing less than ``--settle`` ago is therefore provisional: a late ``audit.log`` can clear it, a
late ``pii.access`` can add one. Files do not grow, so ``scan --traces`` has no such notion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from checker.errors import UsageError
from checker.timeparse import duration_seconds

if TYPE_CHECKING:
    from checker.engine import Violation

PROVISIONAL, FINAL = "provisional", "final"
DEFAULT_SETTLE = "10m"  # as tempo.trace_margin: the longest trace plus ingestion delay


@dataclass(frozen=True)
class Settle:
    """``cut`` = now - ``--settle``, in whole unix seconds: what ended before it is taken as whole."""

    cut: int
    text: str  # --settle as the user wrote it, for messages

    @classmethod
    def parse(cls, text: str, now: float) -> Settle:
        """From ``--settle``; a sign is refused by the duration parser, so it is never negative."""
        return cls(math.floor(now - duration_seconds(text)), text)

    def status(self, violation: Violation) -> str:
        """``provisional`` when the trace's newest span ends at or after ``cut``, else ``final``.

        Judged per trace, not per part of the window: every trace starting in the young part of
        the window also ends in it, and a long trace that started in the settled part may still
        be receiving spans, so the trace's end covers both cases and the window part only one.
        """
        return PROVISIONAL if violation.end_time_unix_nano >= self.cut * 10**9 else FINAL

    def young(self, start: int, end: int) -> int:
        """Seconds of the window [start, end) at or after ``cut``: Tempo may still fill them."""
        return max(0, end - max(start, self.cut))

    def settled_end(self, start: int, end: int) -> int:
        """The end of the window's settled part, for ``--settled-only``; refused when it has none."""
        if self.cut <= start:
            raise UsageError(f"--settled-only: the whole window is younger than --settle {self.text}",
                             hint="give an earlier --start (or a longer --since), or a shorter --settle")
        return min(end, self.cut)
