"""One rule's run: every due window, oldest first, each committed before the next starts.

The checkpoint moves only with a committed window, so a crash, a Tempo outage or a timeout
leaves it where it was and the next run evaluates the same window again; nothing is skipped
unless the backlog exceeds ``max_catchup``, and then the skipped span is recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import SQLAlchemyError

from checker.daemon.windows import due_windows, floor_second
from checker.store import CheckpointMoved, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime, timedelta

    from checker.config import ScheduleSettings
    from checker.daemon.judge import WindowJudge
    from checker.daemon.windows import RuleSchedule
    from checker.rules.rule import Rule
    from checker.store import Store

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
    """Moves each rule's checkpoint over its due windows, one committed window at a time.

    ``checkpoints`` is shared with the lag metric: it holds the position of every rule this
    process runs, and nothing else writes it.
    """

    def __init__(self, judge: WindowJudge, store: Store, schedule: ScheduleSettings, *,
                 query_end_cutoff: timedelta, checkpoints: dict[str, datetime],
                 clock: Callable[[], datetime]) -> None:
        self.judge = judge
        self.store = store
        self.schedule = schedule
        self.query_end_cutoff = query_end_cutoff
        self.checkpoints = checkpoints
        self.clock = clock
        self._stopping = False

    def stop(self) -> None:
        """Finish the window being evaluated, start no other (shutdown)."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopping

    def forget(self, rule_id: str) -> None:
        """A removed rule leaves the lag metric."""
        self.checkpoints.pop(rule_id, None)

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
        first = floor_second(now - self.schedule.initial_lookback)
        checkpoint = await asyncio.to_thread(self.store.start_checkpoint, rule.id, first)
        self.checkpoints[rule.id] = checkpoint
        # Tempo hides its newest query_end_cutoff from search: a window never ends inside it.
        searchable = replace(schedule, delay=max(schedule.delay, self.query_end_cutoff))
        due = due_windows(checkpoint, now, searchable, self.schedule.max_catchup)
        if due.skipped is not None:
            await self._skip(rule, due.skipped)
            summary.windows += 1
        for window in due.windows:
            latest = current(rule.id)
            if self._stopping or latest is None:
                return
            rule = latest
            committed = await self.judge.commit_window(rule, window)
            record = committed.record
            if record.outcome == "failed":
                summary.failed = record.error
                return
            if current(rule.id) is not None:  # a rule removed meanwhile leaves the lag metric
                self.checkpoints[rule.id] = record.end
            summary.windows += 1
            summary.violations += len(committed.new_violations)
            summary.incomplete += record.outcome == "incomplete"

    async def _skip(self, rule: Rule, window: tuple[datetime, datetime]) -> None:
        start, end = window
        limit = self.schedule.max_catchup
        log.warning("window.skipped", rule=rule.id, window_start=start.isoformat(),
                    window_end=end.isoformat(),
                    detail=f"backlog longer than max_catchup ({limit}); recorded as skipped")
        await self.judge.commit_skipped(rule, window, f"the backlog exceeded max_catchup ({limit})")
        self.checkpoints[rule.id] = end
