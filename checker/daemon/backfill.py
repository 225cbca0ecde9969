"""``betrace backfill``: one rule over a past period, window by window, resumable.

A backfill has its own checkpoint (named after the rule and the period), so rerunning the
same command after an interruption continues where it stopped; its evaluations are marked
``backfill`` in the ledger, and it notifies only when asked to.
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tqdm import tqdm

from checker.daemon.service import Daemon
from checker.daemon.windows import split
from checker.errors import UsageError

if TYPE_CHECKING:
    from checker.config import Settings


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


async def backfill(settings: Settings, rule_id: str, start: datetime, end: datetime, *,
                   notify: bool = False, progress: bool = False) -> BackfillSummary:
    """Evaluate ``rule_id`` over ``[start, end)``, continuing a backfill of the same period."""
    latest = datetime.now(UTC) - settings.tempo.query_end_cutoff
    if end > latest:
        raise UsageError(f"--to {end.isoformat()} is inside Tempo's query_end_cutoff or in the future",
                         hint=f"end the period by {latest.replace(microsecond=0).isoformat()}")
    daemon = await Daemon.open(settings)
    try:
        rule = daemon.live.rules.get(rule_id)
        if rule is None:
            raise UsageError(f"no enabled rule {rule_id!r} in {settings.rules_dir}",
                             hint="betrace validate lists the rules and their errors")
        key = checkpoint_key(rule_id, start, end)
        resume = await asyncio.to_thread(daemon.store.start_checkpoint, key, start)
        windows = split(resume, end, daemon.schedules[rule_id].period)
        summary = BackfillSummary(remaining=len(windows))
        await daemon.runner.record_version(rule)
        with tqdm(total=len(windows), desc=f"backfill {rule_id}", unit="window", disable=not progress,
                  file=sys.stderr) as bar:
            for window in windows:
                record = replace(await daemon.runner.evaluate(rule, window), backfill=True, checkpoint=key)
                notice = daemon.runner.policy.notice(rule, window) if notify else None
                committed = await asyncio.to_thread(daemon.store.commit, record, notice)
                if record.outcome == "failed":
                    summary.failed = record.error
                    break
                summary.windows += 1
                summary.remaining -= 1
                summary.violations += len(committed.new_violations)
                bar.update()
        if notify:
            await daemon.dispatcher.drain()
        return summary
    finally:
        await daemon.close()


def whole_seconds(start: float, end: float) -> tuple[datetime, datetime]:
    """The period as whole UTC seconds (Tempo searches whole seconds)."""
    first = datetime.fromtimestamp(math.floor(start), UTC)
    last = datetime.fromtimestamp(math.ceil(end), UTC)
    if last - first < timedelta(seconds=1):
        raise UsageError("the period is empty: --to must be after --from")
    return first, last
