"""The due rules' runs: every due window, oldest first, each committed before the next starts.

The checkpoint moves only with a committed window, so a crash, a Tempo outage or a timeout
leaves it where it was and the next run evaluates the same window again; nothing is skipped
unless the backlog exceeds ``max_catchup``, and then the skipped span is recorded.

Each rule has a second checkpoint, ``settle:<rule>``: the end of its windows judged finally.
A run first settles the provisional windows that are ``settle`` old, a few at a time (one
final pass searches them together), then judges the new windows: provisionally, or at once
finally when they are already settled (a catch-up). Both passes are due jobs found again from
the store, so a crash between them loses nothing.

Rules are run by shards (``groups``): a shard's rules are locked together, and within it the
rules whose next window (or final-pass batch) is identical are evaluated together, the oldest
window first, so a rule that is behind catches up and then joins the others.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

import structlog
from sqlalchemy.exc import SQLAlchemyError

from checker.daemon.groups import rotated, shards, together
from checker.daemon.judge import Member, Settling
from checker.daemon.windows import due_windows, floor_second, settle_batches
from checker.store import CheckpointMoved, StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from datetime import datetime, timedelta

    from checker.config import ScheduleSettings
    from checker.daemon.judge import MemberResult, WindowJudge
    from checker.daemon.windows import RuleSchedule, Window
    from checker.rules.rule import Rule
    from checker.store import ProvisionalWindow, Store

log = structlog.get_logger(__name__)
T = TypeVar("T")


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


@dataclass
class _Lane:
    """One rule's place in a run: its positions and the work still ahead of it."""

    rule: Rule
    schedule: RuleSchedule
    summary: RunSummary
    checkpoint: datetime
    settled: datetime
    batches: list[list[ProvisionalWindow]] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    done: bool = False  # stopped: a failed window, the rule removed, the window taken, an error


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
        self._parallel = asyncio.Semaphore(schedule.parallel_rules)
        # Where this process starts its next run in the list of shards: replicas start apart.
        self._turn = random.randrange(1 << 16)  # noqa: S311  (spreading work, not a secret)

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

    async def run_rules(self, due: Sequence[tuple[Rule, RuleSchedule]],
                        current: Callable[[str], Rule | None] | None = None, *,
                        tail: bool = False) -> list[RunSummary]:
        """Evaluate every window of these rules that is due now, shard by shard.

        A shard whose rules another worker holds is left to it (those rules are ``busy``);
        ``schedule.parallel_rules`` shards run at once. ``current`` gives a rule's version in
        force before each window, so a long catch-up picks up an edited rule at its next window
        and stops at once for a removed one. With ``tail`` the part after the last grid point is
        evaluated too (``due_windows``).
        """
        rules = {rule.id: (rule, schedule) for rule, schedule in due}
        lookup = current or (lambda rule_id: rules[rule_id][0] if rule_id in rules else None)
        summaries = {rule_id: RunSummary(rule_id) for rule_id in rules}
        schedules = {rule_id: schedule for rule_id, (_, schedule) in rules.items()}
        cut = shards(schedules)
        self._turn += 1

        async def one(shard: list[str]) -> None:
            async with self._parallel:
                await self._run_shard([rules[rule_id] for rule_id in shard], summaries, lookup, tail)

        await asyncio.gather(*(one(shard) for shard in rotated(cut, self._turn)))
        return [summaries[rule.id] for rule, _ in due]

    async def _run_shard(self, shard: list[tuple[Rule, RuleSchedule]], summaries: dict[str, RunSummary],
                         current: Callable[[str], Rule | None], tail: bool) -> None:
        """Lock the shard's rules that are free, then run those together."""
        try:
            locks = await asyncio.to_thread(self.store.try_lock_many, [rule.id for rule, _ in shard])
        except (StoreError, SQLAlchemyError) as err:
            for rule, _ in shard:
                _failed(rule.id, summaries[rule.id], err)
            return
        try:
            for rule, _ in shard:
                if rule.id not in locks.held:
                    log.info("rule.busy", rule=rule.id, detail="another worker is evaluating this rule")
                    summaries[rule.id].busy = True
            held = [(rule, schedule) for rule, schedule in shard if rule.id in locks.held]
            if held:
                await self._run_locked(held, summaries, current, tail)
        except Exception as err:  # noqa: BLE001  (a bug must not stop the other shards; checkpoints stay)
            for rule, _ in shard:
                if rule.id in locks.held and summaries[rule.id].failed is None:
                    _failed(rule.id, summaries[rule.id], err)
        finally:
            await asyncio.to_thread(locks.release)

    async def _run_locked(self, held: list[tuple[Rule, RuleSchedule]], summaries: dict[str, RunSummary],
                          current: Callable[[str], Rule | None], tail: bool) -> None:
        now = self.clock()
        lanes = [lane for rule, schedule in held
                 if (lane := await _guarded(rule.id, summaries[rule.id], self._start(
                     rule, schedule, summaries[rule.id], now))) is not None]
        await self._settle(lanes)
        for lane in lanes:
            planned = None if lane.done else await _guarded(lane.rule.id, lane.summary,
                                                            self._plan(lane, now, tail))
            if planned is None:
                lane.done = True
        await self._judge(lanes, current, now)

    async def _start(self, rule: Rule, schedule: RuleSchedule, summary: RunSummary, now: datetime) -> _Lane:
        """The rule's positions, and its provisional windows that are ready to settle."""
        first = floor_second(now - self.schedule.initial_lookback)
        checkpoint = await asyncio.to_thread(self.store.start_checkpoint, rule.id, first)
        self.checkpoints[rule.id] = checkpoint
        # Windows committed before settled verdicts existed count as final.
        settled = await asyncio.to_thread(self.store.start_checkpoint, settle_key(rule.id), checkpoint)
        until = floor_second(now - schedule.settle)
        pending: list[ProvisionalWindow] = await asyncio.to_thread(
            self.store.provisional_windows, rule.id, settled, until)
        lane = _Lane(rule, schedule, summary, checkpoint, settled)
        lane.batches = settle_batches(pending, settled, until, schedule, judged_until=checkpoint)
        return lane

    async def _settle(self, lanes: list[_Lane]) -> None:
        """Judge finally the provisional windows that are ``settle`` old, identical batches together.

        A final pass that failed (recorded, retried next run) holds back no provisional alert:
        the rule goes on to its new windows.
        """
        while not self._stopping:
            heads = {lane.rule.id: (lane.batches[0][0].start, lane.batches[0][-1].end)
                     for lane in lanes if lane.batches and not lane.done}
            if not heads:
                break
            _span, ids = together(heads)[0]
            group = []
            for lane in (lane for lane in lanes if lane.rule.id in ids):
                if await _guarded(lane.rule.id, lane.summary, self._unsettled_gap(lane)):
                    group.append(lane)
                else:
                    lane.done = True
            results = await _each(len(group), self.judge.commit_final_group(
                [Settling(lane.rule, lane.batches[0], settle_key(lane.rule.id)) for lane in group]))
            for lane, result in zip(group, results, strict=True):
                self._settled_one(lane, lane.batches.pop(0), result)
        for lane in lanes:
            self.settled[lane.rule.id] = lane.settled

    async def _unsettled_gap(self, lane: _Lane) -> bool:
        """Record a span before the next batch never judged provisionally (a skipped backlog).

        The final-pass checkpoint then reaches the batch.
        """
        start = lane.batches[0][0].start
        if start != lane.settled:
            await self.judge.commit_skipped(lane.rule, (lane.settled, start), "no provisional verdict",
                                            checkpoint=settle_key(lane.rule.id))
            lane.settled = start
        return True

    def _settled_one(self, lane: _Lane, batch: list[ProvisionalWindow], result: MemberResult) -> None:
        summary = lane.summary
        if isinstance(result, Exception):
            _failed(lane.rule.id, summary, result)
            lane.done = True
            return
        if result.record.outcome == "failed":
            summary.failed = result.record.error
            lane.batches = []
            return
        lane.settled = result.record.end
        summary.settled += len(batch)
        summary.incomplete += result.record.outcome == "incomplete"
        summary.violations += len(result.new_violations)
        amendment = result.record.amendment
        summary.retracted += len(amendment.retracted) if amendment else 0

    async def _plan(self, lane: _Lane, now: datetime, tail: bool) -> _Lane:
        """The lane's due windows; a backlog beyond ``max_catchup`` is recorded as skipped first."""
        # Tempo hides its newest query_end_cutoff from search: a window never ends inside it.
        searchable = replace(lane.schedule, delay=max(lane.schedule.delay, self.query_end_cutoff))
        due = due_windows(lane.checkpoint, now, searchable, self.schedule.max_catchup, tail=tail)
        if due.skipped is not None:
            # With nothing before it left to settle, the skipped span is final as well.
            settles = lane.settled == due.skipped[0]
            await self._skip(lane.rule, due.skipped, settle=settles)
            if settles:
                lane.settled = self.settled[lane.rule.id] = due.skipped[1]
            lane.checkpoint = due.skipped[1]
            lane.summary.windows += 1
        lane.windows = due.windows
        return lane

    async def _judge(self, lanes: list[_Lane], current: Callable[[str], Rule | None], now: datetime) -> None:
        """The due windows, oldest first; the rules at an identical window are evaluated together."""
        while not self._stopping:
            for lane in lanes:
                latest = current(lane.rule.id) if lane.windows and not lane.done else None
                if latest is None:
                    lane.done = True
                else:
                    lane.rule = latest
            heads = {lane.rule.id: lane.windows[0] for lane in lanes if not lane.done}
            if not heads:
                return
            window, ids = together(heads)[0]
            group = [lane for lane in lanes if lane.rule.id in ids]
            members = []
            for lane in group:
                # A window already settled, with nothing before it left to settle, is judged once.
                final = lane.settled == window[0] and window[1] <= now - lane.schedule.settle
                members.append(Member(lane.rule, provisional=not final,
                                      settle_checkpoint=settle_key(lane.rule.id) if final else None))
            results = await _each(len(group), self.judge.commit_group(members, window))
            for lane, member, result in zip(group, members, results, strict=True):
                lane.windows.pop(0)
                self._judged_one(lane, result, final=not member.provisional, current=current)

    def _judged_one(self, lane: _Lane, result: MemberResult, *, final: bool,
                    current: Callable[[str], Rule | None]) -> None:
        summary = lane.summary
        if isinstance(result, Exception):
            _failed(lane.rule.id, summary, result)
            lane.done = True
            return
        record = result.record
        if record.outcome == "failed":
            summary.failed = record.error
            lane.done = True
            return
        if final:
            lane.settled = self.settled[lane.rule.id] = record.end
        lane.checkpoint = record.end
        if current(lane.rule.id) is not None:  # a rule removed meanwhile leaves the lag metric
            self.checkpoints[lane.rule.id] = record.end
        summary.windows += 1
        summary.violations += len(result.new_violations)
        summary.incomplete += record.outcome == "incomplete"

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


async def _guarded(rule_id: str, summary: RunSummary, step: Awaitable[T]) -> T | None:
    """One rule's step; its failure is reported on its summary and stops only that rule."""
    try:
        return await step
    except Exception as err:  # noqa: BLE001  (reported by _failed, by kind)
        _failed(rule_id, summary, err)
        return None


async def _each(count: int, step: Awaitable[list[MemberResult]]) -> list[MemberResult]:
    """A group's results; a failure of the whole step (the store before any commit) is each member's."""
    try:
        return await step
    except Exception as err:  # noqa: BLE001  (each member reports it, by kind)
        return [err] * count


def _failed(rule_id: str, summary: RunSummary, err: Exception) -> None:
    """Report why a rule's run stopped: its checkpoint stays, the next run goes on from it."""
    if isinstance(err, CheckpointMoved):
        log.warning("rule.window_taken", rule=rule_id, detail=str(err))
    elif isinstance(err, (StoreError, SQLAlchemyError)):
        summary.failed = f"store: {str(err).splitlines()[0]}"
        log.error("store.error", rule=rule_id, error=summary.failed)
    else:  # one rule's bug must not stop the others: its checkpoint stays
        summary.failed = f"internal error: {type(err).__name__}: {err}"
        log.error("rule.internal_error", rule=rule_id, error=summary.failed, exc_info=err)


def settle_key(rule_id: str) -> str:
    """The checkpoint of the rule's final passes."""
    return f"settle:{rule_id}"
