"""One rule's run: every due window, oldest first, each committed before the next starts.

The checkpoint moves only with a committed window, so a crash, a Tempo outage or a timeout
leaves it where it was and the next run evaluates the same window again; nothing is skipped
unless the backlog exceeds ``max_catchup``, and then the skipped span is recorded.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import SQLAlchemyError

from checker.daemon.notifying import notify_policy
from checker.daemon.windows import due_windows, floor_second, utcnow
from checker.errors import TraceSourceError
from checker.store import CheckpointMoved, StoreError, WindowRecord
from checker.tempo.run import evaluate_window
from checker.traceql import compile_rule

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from checker.config import Settings
    from checker.daemon.metrics import Metrics
    from checker.daemon.windows import RuleSchedule, Window
    from checker.rules.rule import Rule
    from checker.store import Outcome, Store
    from checker.tempo.client import TempoClient

log = structlog.get_logger(__name__)


@dataclass
class RunSummary:
    """What one run of one rule did, for ``run --once`` and the logs."""

    rule_id: str
    windows: int = 0
    violations: int = 0
    incomplete: int = 0
    failed: str | None = None
    busy: bool = False


class RuleRunner:
    """Evaluates rules' due windows against Tempo and commits them to the store."""

    def __init__(self, store: Store, tempo: TempoClient, settings: Settings, metrics: Metrics,
                 *, clock: Callable[[], datetime] = utcnow,
                 on_notify: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.tempo = tempo
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.on_notify = on_notify  # called when a commit added notifications to the outbox
        self.policy = notify_policy(settings)
        self.checkpoints: dict[str, datetime] = {}
        self._recorded: set[tuple[str, str]] = set()
        self.stopping = False  # set on shutdown: finish the current window, start no other

    async def run(self, rule: Rule, schedule: RuleSchedule,
                  current: Callable[[str], Rule | None] | None = None) -> RunSummary:
        """Evaluate every window of ``rule`` that is due now, unless another worker holds it.

        ``current`` gives the rule's version in force before each window, so a long catch-up
        picks up an edited rule at its next window and stops at once for a removed one.
        """
        summary = RunSummary(rule.id)
        try:
            lock = await asyncio.to_thread(self.store.try_lock, rule.id)
            if lock is None:
                log.info("rule.busy", rule=rule.id, detail="another worker is evaluating this rule")
                summary.busy = True
                return summary
            try:
                await self._run_locked(rule, schedule, summary, current or (lambda _rule_id: rule))
            finally:
                await asyncio.to_thread(lock.release)
        except CheckpointMoved as moved:
            log.warning("rule.window_taken", rule=rule.id, detail=str(moved))
        except (StoreError, SQLAlchemyError) as err:
            summary.failed = f"store: {str(err).splitlines()[0]}"
            log.error("store.error", rule=rule.id, error=summary.failed)  # noqa: TRY400
        except Exception as err:  # one rule's bug must not stop the others: its checkpoint stays
            summary.failed = f"internal error: {type(err).__name__}: {err}"
            log.exception("rule.internal_error", rule=rule.id)
        return summary

    async def _run_locked(self, rule: Rule, schedule: RuleSchedule, summary: RunSummary,
                          current: Callable[[str], Rule | None]) -> None:
        now = self.clock()
        lookback = self.settings.schedule.initial_lookback
        first = floor_second(now - lookback)
        checkpoint = await asyncio.to_thread(self.store.start_checkpoint, rule.id, first)
        self.checkpoints[rule.id] = checkpoint
        # Tempo hides its newest query_end_cutoff from search: a window never ends inside it.
        cutoff = self.settings.tempo.query_end_cutoff
        due = due_windows(checkpoint, now, replace(schedule, delay=max(schedule.delay, cutoff)),
                          self.settings.schedule.max_catchup)
        if due.skipped is not None:
            await self._skip(rule, due.skipped)
            summary.windows += 1
        for window in due.windows:
            latest = current(rule.id)
            if self.stopping or latest is None:
                return
            rule = latest
            await self.record_version(rule)
            record = await self.evaluate(rule, window)
            notice = self.policy.notice(rule, window)
            committed = await asyncio.to_thread(self.store.commit, record, notice)
            if notice is not None:
                self.on_notify()
            self.metrics.evaluations.labels(rule.id, record.outcome).inc()
            self.metrics.evaluation_seconds.labels(rule.id).observe(record.duration)
            for violation in committed.new_violations:
                self.metrics.violations.labels(rule.id, violation.severity).inc()
            if record.outcome == "failed":
                summary.failed = record.error
                return
            if current(rule.id) is not None:  # a rule removed meanwhile leaves the lag metric
                self.checkpoints[rule.id] = record.end
            summary.windows += 1
            summary.violations += len(committed.new_violations)
            summary.incomplete += record.outcome == "incomplete"

    async def record_version(self, rule: Rule) -> None:
        """Every evaluated version of a rule is on record (once per process)."""
        if (rule.id, rule.version) not in self._recorded:
            await asyncio.to_thread(self.store.record_rule, rule)
            self._recorded.add((rule.id, rule.version))

    async def _skip(self, rule: Rule, window: Window) -> None:
        start, end = window
        limit = self.settings.schedule.max_catchup
        log.warning("window.skipped", rule=rule.id, window_start=start.isoformat(),
                    window_end=end.isoformat(),
                    detail=f"backlog longer than max_catchup ({limit}); recorded as skipped")
        await asyncio.to_thread(self.store.commit, WindowRecord(
            rule, start, end, self.clock(), 0.0, "skipped",
            error=f"not evaluated: the backlog exceeded max_catchup ({limit})"))
        self.metrics.evaluations.labels(rule.id, "skipped").inc()
        self.checkpoints[rule.id] = end

    async def evaluate(self, rule: Rule, window: Window) -> WindowRecord:
        """Every log line inside (Tempo retries included) names the rule and the window."""
        start, end = window
        with structlog.contextvars.bound_contextvars(rule=rule.id, window_start=start.isoformat(),
                                                     window_end=end.isoformat()):
            return await self._evaluate_bound(rule, start, end)

    async def _evaluate_bound(self, rule: Rule, start: datetime, end: datetime) -> WindowRecord:
        started, clock = self.clock(), time.monotonic()
        plan_text = ""
        tempo = self.settings.tempo
        timeout = self.settings.schedule.evaluation_timeout.total_seconds()
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
