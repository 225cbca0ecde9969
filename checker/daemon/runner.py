"""One rule's run: every due window, oldest first, each committed before the next starts.

The checkpoint moves only with a committed window, so a crash, a Tempo outage or a timeout
leaves it where it was and the next run evaluates the same window again; nothing is skipped
unless the backlog exceeds ``max_catchup``, and then the skipped span is recorded.

Each rule has a second checkpoint, ``settle:<rule>``: the end of its windows judged finally.
A run first settles the provisional windows that are ``settle`` old, a few at a time (one
final pass searches them together), then judges the new windows: provisionally, or at once
finally when they are already settled (a catch-up). Both passes are due jobs found again from
the store, so a crash between them loses nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import SQLAlchemyError

from checker.daemon.windows import due_windows, floor_second, settle_batches
from checker.store import CheckpointMoved, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime, timedelta

    from checker.config import ScheduleSettings
    from checker.daemon.judge import WindowJudge
    from checker.daemon.windows import RuleSchedule
    from checker.rules.rule import Rule
    from checker.store import ProvisionalWindow, Store

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
    settled: int = 0  # provisional windows judged finally
    retracted: int = 0


class RuleRunner:
    """Moves each rule's checkpoints over its due windows, one committed window at a time.

    ``checkpoints`` and ``settled`` are shared with the lag metrics: they hold the positions of
    every rule this process runs, and nothing else writes them.
    """

    def __init__(self, judge: WindowJudge, store: Store, schedule: ScheduleSettings, *,
                 query_end_cutoff: timedelta, checkpoints: dict[str, datetime],
                 settled: dict[str, datetime], clock: Callable[[], datetime]) -> None:
        self.judge = judge
        self.store = store
        self.schedule = schedule
        self.query_end_cutoff = query_end_cutoff
        self.checkpoints = checkpoints
        self.settled = settled  # each rule's final-pass position, for the settle lag metric
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
        self.settled.pop(rule_id, None)

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
        # Windows committed before settled verdicts existed count as final.
        settled = await asyncio.to_thread(self.store.start_checkpoint, settle_key(rule.id), checkpoint)
        # A final pass that failed (recorded, retried next run) holds back no provisional alert.
        settled = await self._settle(rule, schedule, (settled, checkpoint), summary, now)
        self.settled[rule.id] = settled
        # Tempo hides its newest query_end_cutoff from search: a window never ends inside it.
        searchable = replace(schedule, delay=max(schedule.delay, self.query_end_cutoff))
        due = due_windows(checkpoint, now, searchable, self.schedule.max_catchup)
        if due.skipped is not None:
            # With nothing before it left to settle, the skipped span is final as well.
            settles = settled == due.skipped[0]
            await self._skip(rule, due.skipped, settle=settles)
            if settles:
                settled = self.settled[rule.id] = due.skipped[1]
            summary.windows += 1
        for window in due.windows:
            latest = current(rule.id)
            if self._stopping or latest is None:
                return
            rule = latest
            # A window already settled, with nothing before it left to settle, is judged once.
            final = settled == window[0] and window[1] <= now - schedule.settle
            committed = await self.judge.commit_window(
                rule, window, provisional=not final, settle_checkpoint=settle_key(rule.id) if final else None)
            record = committed.record
            if record.outcome == "failed":
                summary.failed = record.error
                return
            if final:
                settled = self.settled[rule.id] = record.end
            if current(rule.id) is not None:  # a rule removed meanwhile leaves the lag metric
                self.checkpoints[rule.id] = record.end
            summary.windows += 1
            summary.violations += len(committed.new_violations)
            summary.incomplete += record.outcome == "incomplete"

    async def _settle(self, rule: Rule, schedule: RuleSchedule, positions: tuple[datetime, datetime],
                      summary: RunSummary, now: datetime) -> datetime:
        """Judge finally the provisional windows that are ``settle`` old; returns the new position.

        ``positions`` are the rule's final-pass checkpoint and its own.
        """
        settled, checkpoint = positions
        until = floor_second(now - schedule.settle)
        pending: list[ProvisionalWindow] = await asyncio.to_thread(
            self.store.provisional_windows, rule.id, settled, until)
        for batch in settle_batches(pending, settled, until, schedule, judged_until=checkpoint):
            if self._stopping:
                break
            if batch[0].start != settled:  # a span never judged provisionally (a skipped backlog)
                await self.judge.commit_skipped(rule, (settled, batch[0].start), "no provisional verdict",
                                                checkpoint=settle_key(rule.id))
            committed = await self.judge.commit_final(rule, batch, settle_key(rule.id))
            if committed.record.outcome == "failed":
                summary.failed = committed.record.error
                break
            settled = committed.record.end
            summary.settled += len(batch)
            summary.incomplete += committed.record.outcome == "incomplete"
            summary.violations += len(committed.new_violations)
            amendment = committed.record.amendment
            summary.retracted += len(amendment.retracted) if amendment else 0
        return settled

    async def _skip(self, rule: Rule, window: tuple[datetime, datetime], *, settle: bool) -> None:
        """Record the skipped span; with ``settle`` it moves the final-pass checkpoint too."""
        start, end = window
        limit = self.schedule.max_catchup
        log.warning("window.skipped", rule=rule.id, window_start=start.isoformat(),
                    window_end=end.isoformat(),
                    detail=f"backlog longer than max_catchup ({limit}); recorded as skipped")
        await self.judge.commit_skipped(rule, window, f"the backlog exceeded max_catchup ({limit})",
                                        settle_checkpoint=settle_key(rule.id) if settle else None)
        self.checkpoints[rule.id] = end


def settle_key(rule_id: str) -> str:
    """The checkpoint of the rule's final passes."""
    return f"settle:{rule_id}"
