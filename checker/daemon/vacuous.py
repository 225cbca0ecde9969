"""Rules that have had no trace in scope for a long time: alive in the metrics, dead in effect.

Why: a rule that never matches looks exactly like a rule that passes. Its span names or
attributes may not be what the instrumentation emits (a renamed attribute, a route-named span),
and nothing else would ever say so. Each committed window's scope count is noted here; a rule
with none for ``schedule.vacuous_after`` is logged as a warning, once per such stretch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from datetime import datetime, timedelta

log = structlog.get_logger(__name__)


class VacuousRules:
    """The last moment each rule had a trace in scope, measured since this process first saw it."""

    def __init__(self, after: timedelta) -> None:
        self.after = after
        self._since: dict[str, datetime] = {}  # start of the stretch with nothing in scope

    def saw(self, rule_id: str, window: tuple[datetime, datetime], in_scope: int) -> None:
        """One window of ``rule_id`` with ``in_scope`` traces in its scope."""
        start, end = window
        if in_scope:
            self._since.pop(rule_id, None)
            return
        since = self._since.setdefault(rule_id, start)
        if end - since >= self.after:
            log.warning("rule.vacuous", rule=rule_id, since=since.isoformat(), until=end.isoformat(),
                        detail=f"no trace in scope for {end - since}: the rule may never match",
                        hint="check its span names and attributes against what the instrumentation "
                        "emits (betrace validate warns about the usual mistakes)")
            self._since[rule_id] = end  # warned: the next warning after another stretch as long
