"""Which windows a rule evaluates next (design.md "Windows, lateness and completeness").

Pure functions of the checkpoint and the clock, so the catch-up behaviour can be tested
without a scheduler: windows are contiguous, whole seconds, never longer than the rule's
period, and end ``evaluation_delay`` before now; a backlog beyond ``max_catchup`` becomes one
explicit skipped span instead of silently vanishing.

An ``every`` rule's windows lie on the epoch grid of its period (``every: 10s``: they end at
multiples of 10 s), so rules with the same period have the same windows whatever their start
and can be evaluated together (``groups``); a checkpoint off the grid (a first run, an older
version's windows) gets one shorter window to reach it. A cron rule's windows follow its
checkpoint, as its firings do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from checker.rules.durations import parse_timedelta

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

    from checker.config import ScheduleSettings
    from checker.rules.rule import Rule

Window = tuple[datetime, datetime]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RuleSchedule:
    """When a rule runs and how its windows are cut."""

    period: timedelta
    delay: timedelta
    cron: str | None = None
    settle: timedelta = timedelta(0)  # the final pass: when a window is this old (0: only one pass)

    def trigger(self) -> BaseTrigger:
        """APScheduler's trigger: the rule's cron expression (UTC), else its interval.

        An interval fires when a window of the grid becomes due (its end plus the delay), so
        the rules with one period fire together and their windows are evaluated at once. No
        jitter here: APScheduler adds it to the previous firing, which would drift off the grid
        (the daemon delays the whole group instead, ``spread``).
        """
        if self.cron is not None:
            return CronTrigger.from_crontab(self.cron, timezone=UTC)
        first_due = EPOCH + timedelta(seconds=math.ceil(self.delay.total_seconds()))
        return IntervalTrigger(seconds=self.period.total_seconds(), timezone=UTC, start_date=first_due)

    def spread(self, jitter: timedelta) -> float:
        """The longest random delay of a run, in whole seconds.

        ``jitter``, but at most a third of the period, so runs cannot pile up.
        """
        seconds = math.ceil(jitter.total_seconds())
        limit = math.floor(self.period.total_seconds() / 3)
        return float(min(seconds, limit)) if seconds and limit else 0.0

    @property
    def aligned(self) -> bool:
        """Whether windows lie on the epoch grid of the period (every rule but a cron one)."""
        return self.cron is None


@dataclass(frozen=True)
class Due:
    """What one run of a rule must do, oldest first."""

    skipped: Window | None = None
    windows: list[Window] = field(default_factory=list)


def schedule_of(rule: Rule, defaults: ScheduleSettings) -> RuleSchedule:
    """A rule's own ``every``/``cron``/``evaluation_delay``/``settle``, else the config's schedule.

    A ``settle`` shorter than the delay is raised to it: a window is final no sooner than judged.
    """
    delay = _duration(rule.evaluation_delay) or defaults.evaluation_delay
    settle = max(delay, _duration(rule.settle) or defaults.settle)
    if rule.cron is not None:
        return RuleSchedule(cron_period(rule.cron), delay, rule.cron, settle)
    return RuleSchedule(whole_seconds(_duration(rule.every) or defaults.every), delay, settle=settle)


def whole_seconds(period: timedelta) -> timedelta:
    """Tempo searches whole seconds, so windows are cut in whole seconds, at least one."""
    return timedelta(seconds=max(1, math.ceil(period.total_seconds())))


def cron_period(expression: str) -> timedelta:
    """The gap between two consecutive firings: a cron rule's windows are at most that long."""
    trigger = CronTrigger.from_crontab(expression, timezone=UTC)
    first = trigger.get_next_fire_time(None, datetime.now(UTC))
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    if first is None or second is None:
        return timedelta(days=1)
    gap: timedelta = second - first
    return max(timedelta(seconds=1), gap)


def utcnow() -> datetime:
    """The daemon's clock; tests pass their own."""
    return datetime.now(UTC)


def floor_second(moment: datetime) -> datetime:
    """Tempo's search takes whole seconds."""
    return moment.replace(microsecond=0)


def due_windows(checkpoint: datetime, now: datetime, schedule: RuleSchedule,
                max_catchup: timedelta, *, tail: bool = False) -> Due:
    """The windows from ``checkpoint`` to ``now - delay``, at most ``schedule.period`` each.

    Aligned windows stop at the last grid point before ``now - delay``: the part after it is a
    window not yet whole, which the next firing of the trigger evaluates whole. With ``tail``
    (``run --once``, which no trigger follows) that part is a window too, and the next run's
    first window reaches the grid again. The backlog kept is never less than two periods: a
    weekly rule, or a daily one that fires a second late, is a normal run, not a gap.
    """
    max_catchup = max(max_catchup, 2 * schedule.period)
    until = floor_second(now - schedule.delay)
    end = grid_floor(until, schedule.period) if schedule.aligned else until
    if tail and until > max(end, checkpoint):
        due = due_windows(checkpoint, now, schedule, max_catchup)
        return replace(due, windows=[*due.windows, (max(end, checkpoint), until)])
    if end <= checkpoint:
        return Due()
    skipped = None
    start = checkpoint
    if end - checkpoint > max_catchup and (resume := floor_second(end - max_catchup)) > checkpoint:
        start = grid_ceil(resume, schedule.period) if schedule.aligned else resume
        skipped = (checkpoint, start)
    if schedule.aligned:
        return Due(skipped, split_aligned(start, end, schedule.period))
    return Due(skipped, split(start, end, schedule.period))


def grid_floor(moment: datetime, step: timedelta) -> datetime:
    """The latest multiple of ``step`` since the epoch at or before ``moment``."""
    return EPOCH + step * ((moment - EPOCH) // step)


def grid_ceil(moment: datetime, step: timedelta) -> datetime:
    """The earliest multiple of ``step`` since the epoch at or after ``moment``."""
    floor = grid_floor(moment, step)
    return floor if floor == moment else floor + step


def split_aligned(start: datetime, end: datetime, period: timedelta) -> list[Window]:
    """``[start, end)`` cut at the multiples of ``period``: the first window may be shorter."""
    first = min(end, grid_ceil(start, period))
    return ([(start, first)] if start < first else []) + split(first, end, period)


class Judged(Protocol):
    """A window judged provisionally (the store's ``ProvisionalWindow``)."""

    @property
    def start(self) -> datetime: ...  # noqa: D102

    @property
    def end(self) -> datetime: ...  # noqa: D102


J = TypeVar("J", bound=Judged)


def settle_batches(pending: list[J], settled: datetime, until: datetime, schedule: RuleSchedule,
                   judged_until: datetime | None = None) -> list[list[J]]:
    """The provisional windows to judge finally now, in batches searched together.

    A final pass searches a batch of consecutive windows at once, so settling costs a fraction
    of the provisional passes' searches: a batch is the windows starting in one cell of the epoch
    grid of ``batch_span`` (about the time between a window's first look and its settling), so
    a window's final verdict comes at most that much after ``settle``, and rules with the same
    schedule have the same batches (settled together, ``groups``). The newest batch waits until
    its cell has ended while windows judged after it (up to ``judged_until``, the rule's
    checkpoint; None: more may come) will join it.
    """
    span = batch_span(schedule)
    batches: list[list[J]] = []
    for window in pending:
        if window.end > until or window.start < settled:
            continue
        last = batches[-1][-1] if batches else None
        if last is not None and window.start == last.end and _cell(window, span) == _cell(last, span):
            batches[-1].append(window)
        else:
            batches.append([window])
    newest = batches[-1] if batches else None
    coming = judged_until is None or (newest is not None and judged_until > newest[-1].end)
    if newest is not None and coming and until < _cell(newest[0], span) + span:  # more of it settles soon
        batches.pop()
    return batches


def batch_span(schedule: RuleSchedule) -> timedelta:
    """``max(period, settle - delay)`` rounded up to whole periods, so no aligned window straddles two."""
    wanted = max(schedule.period, schedule.settle - schedule.delay)
    return schedule.period * math.ceil(wanted / schedule.period)


def _cell(window: Judged, span: timedelta) -> datetime:
    """Where the batch holding ``window`` starts at the latest."""
    return grid_floor(window.start, span)


def split(start: datetime, end: datetime, period: timedelta) -> list[Window]:
    """``[start, end)`` cut into consecutive windows of at most ``period``."""
    windows = []
    while start < end:
        stop = min(start + period, end)
        windows.append((start, stop))
        start = stop
    return windows


def _duration(text: str | None) -> timedelta | None:
    """A rule's own duration field; absent or zero means "use the schedule's"."""
    return (parse_timedelta(text) or None) if text else None
