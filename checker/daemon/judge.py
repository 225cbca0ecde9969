"""One window of one rule: evaluated against Tempo, then committed with what it notifies.

The one path from a window to the store, for the daemon's runs and for backfill alike: the
rule version is on record before its first window, the evaluation is bounded by
``schedule.evaluation_timeout``, and a failure of any kind becomes a ``failed`` record (the
checkpoint stays, so the window is evaluated again) rather than an exception.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from checker.errors import TraceSourceError
from checker.store import WindowRecord
from checker.tempo.run import evaluate_window
from checker.traceql import compile_rule

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime, timedelta

    from checker.daemon.metrics import Metrics
    from checker.daemon.windows import Window
    from checker.engine import Violation
    from checker.notify.policy import NotifyPolicy
    from checker.rules.rule import Rule
    from checker.store import Outcome, Store
    from checker.tempo.client import TempoClient
    from checker.tempo.settings import TempoSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CommittedWindow:
    """A window as the store now holds it, and the violations it recorded for the first time."""

    record: WindowRecord
    new_violations: list[Violation]


class WindowJudge:
    """Evaluates and commits single windows; it keeps no position (its callers do)."""

    def __init__(self, store: Store, tempo: TempoClient, policy: NotifyPolicy, metrics: Metrics, *,
                 tempo_settings: TempoSettings, timeout: timedelta, clock: Callable[[], datetime],
                 on_notify: Callable[[], None]) -> None:
        self.store = store
        self.tempo = tempo
        self.policy = policy
        self.metrics = metrics
        self.tempo_settings = tempo_settings
        self.timeout = timeout
        self.clock = clock
        self.on_notify = on_notify  # called when a commit added notifications to the outbox
        self._recorded: set[tuple[str, str]] = set()

    async def commit_window(self, rule: Rule, window: Window, *, backfill: str | None = None,
                            notify: bool = True) -> CommittedWindow:
        """Evaluate ``rule`` over ``window`` and commit the record.

        ``backfill`` is the backfill's checkpoint key: the record moves that checkpoint and is
        marked as a backfill in the ledger. Without ``notify`` nothing enters the outbox.

        :raises CheckpointMoved: another worker committed this window first.
        """
        await self.record_version(rule)
        record = await self.evaluate(rule, window)
        if backfill is not None:
            record = replace(record, backfill=True, checkpoint=backfill)
        notice = self.policy.notice(rule, window) if notify else None
        committed = await asyncio.to_thread(self.store.commit, record, notice)
        if notice is not None:
            self.on_notify()
        self.metrics.evaluations.labels(rule.id, record.outcome).inc()
        self.metrics.evaluation_seconds.labels(rule.id).observe(record.duration)
        for violation in committed.new_violations:
            self.metrics.violations.labels(rule.id, violation.severity).inc()
        return CommittedWindow(record, committed.new_violations)

    async def commit_skipped(self, rule: Rule, window: Window, reason: str) -> None:
        """Record a window that will never be evaluated, so the ledger shows the gap."""
        start, end = window
        await asyncio.to_thread(self.store.commit, WindowRecord(
            rule, start, end, self.clock(), 0.0, "skipped", error=f"not evaluated: {reason}"))
        self.metrics.evaluations.labels(rule.id, "skipped").inc()

    async def record_version(self, rule: Rule) -> None:
        """Every evaluated version of a rule is on record (once per process)."""
        if (rule.id, rule.version) not in self._recorded:
            await asyncio.to_thread(self.store.record_rule, rule)
            self._recorded.add((rule.id, rule.version))

    async def evaluate(self, rule: Rule, window: Window) -> WindowRecord:
        """Every log line inside (Tempo retries included) names the rule and the window."""
        start, end = window
        with structlog.contextvars.bound_contextvars(rule=rule.id, window_start=start.isoformat(),
                                                     window_end=end.isoformat()):
            return await self._evaluate_bound(rule, start, end)

    async def _evaluate_bound(self, rule: Rule, start: datetime, end: datetime) -> WindowRecord:
        started, clock = self.clock(), time.monotonic()
        plan_text = ""
        tempo = self.tempo_settings
        timeout = self.timeout.total_seconds()
        try:
            plan_text = "\n".join(compile_rule(rule.invariant).describe())
            result = await asyncio.wait_for(evaluate_window(
                [rule], self.tempo, int(start.timestamp()), int(end.timestamp()),
                margin=math.ceil(tempo.trace_margin.total_seconds()),
                latest=math.floor(started.timestamp() - tempo.query_end_cutoff.total_seconds()),
            ), timeout)
        except TimeoutError:
            error = f"evaluation timed out after {timeout:g}s (schedule.evaluation_timeout)"
        except TraceSourceError as err:
            error = str(err)
        except Exception as err:  # a bug must not stop the daemon: record it, retry the window
            log.exception("window.internal_error")
            error = f"internal error: {type(err).__name__}: {err}"
        else:
            outcome = result.outcomes[0]
            unjudged = result.unjudged
            name: Outcome = "incomplete" if unjudged else "violations" if outcome.violations else "ok"
            record = WindowRecord(
                rule, start, end, started, time.monotonic() - clock, name,
                scope_size=outcome.scope_size, candidates=len(outcome.candidates), plan=plan_text,
                error=f"{len(unjudged)} candidates not judged: " + ", ".join(unjudged) if unjudged else None,
                violations=tuple(outcome.violations))
            log.info("window.evaluated", outcome=name, candidates=record.candidates,
                     violations=len(record.violations), seconds=round(record.duration, 3))
            return record
        log.error("window.failed", error=error, detail="the checkpoint stays; the next run retries")
        return WindowRecord(rule, start, end, started, time.monotonic() - clock, "failed",
                            plan=plan_text, error=error)
