"""``betrace backfill``: one rule over a past period, window by window, resumable.

A backfill has its own checkpoint (named after the rule and the period), so rerunning the
same command after an interruption continues where it stopped; its evaluations are marked
``backfill`` in the ledger, and it notifies only when asked to. Each window takes the
daemon's own path to the store (``WindowJudge.commit_window``).
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tqdm import tqdm

from checker.daemon.windows import schedule_of, split
from checker.errors import UsageError

if TYPE_CHECKING:
    from checker.config import ScheduleSettings
    from checker.daemon.components import Components
    from checker.daemon.windows import Window


@dataclass
class BackfillSummary:
    """What a backfill did."""

    windows: int = 0
    remaining: int = 0
    violations: int = 0
    failed: str | None = None


def checkpoint_key(rule_id: str, start: datetime, end: datetime) -> str:
    """The backfill's own checkpoint: the same command resumes, another period starts afresh."""
    return f"backfill:{rule_id}:{int(start.timestamp())}-{int(end.timestamp())}"


def check_period_end(end: datetime, query_end_cutoff: timedelta) -> None:
    """Refuse a period Tempo cannot search yet, before anything is opened."""
    latest = datetime.now(UTC) - query_end_cutoff
    if end > latest:
        raise UsageError(f"--to {end.isoformat()} is inside Tempo's query_end_cutoff or in the future",
                         hint=f"end the period by {latest.replace(microsecond=0).isoformat()}")


async def backfill(parts: Components, schedule: ScheduleSettings, rule_id: str, period: Window, *,
                   notify: bool = False, progress: bool = False) -> BackfillSummary:
    """Evaluate ``rule_id`` over ``period``, continuing a backfill of the same period."""
    start, end = period
    rule = parts.live.rules.get(rule_id)
    if rule is None:
        raise UsageError(f"no enabled rule {rule_id!r} in {parts.live.directory}",
                         hint="betrace validate lists the rules and their errors")
    key = checkpoint_key(rule_id, start, end)
    resume = await asyncio.to_thread(parts.store.start_checkpoint, key, start)
    windows = split(resume, end, schedule_of(rule, schedule).period)
    summary = BackfillSummary(remaining=len(windows))
    with tqdm(total=len(windows), desc=f"backfill {rule_id}", unit="window", disable=not progress,
              file=sys.stderr) as bar:
        for window in windows:
            committed = await parts.judge.commit_window(rule, window, backfill=key, notify=notify)
            if committed.record.outcome == "failed":
                summary.failed = committed.record.error
                break
            summary.windows += 1
            summary.remaining -= 1
            summary.violations += len(committed.new_violations)
            bar.update()
    if notify:
        await parts.dispatcher.drain()
    return summary


def whole_seconds(start: float, end: float) -> tuple[datetime, datetime]:
    """The period as whole UTC seconds (Tempo searches whole seconds)."""
    first = datetime.fromtimestamp(math.floor(start), UTC)
    last = datetime.fromtimestamp(math.ceil(end), UTC)
    if last - first < timedelta(seconds=1):
        raise UsageError("the period is empty: --to must be after --from")
    return first, last
