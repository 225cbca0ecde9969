"""One window of one rule: evaluated against Tempo, then committed with what it notifies.

The one path from a window to the store, for the daemon's runs and for backfill alike: the
rule version is on record before its first window, the evaluation is bounded by
``schedule.evaluation_timeout``, and a failure of any kind becomes a ``failed`` record (the
checkpoint stays, so the window is evaluated again) rather than an exception.

A window may be judged twice (design: settled verdicts). The provisional pass judges what
Tempo has soon after the window and keeps, per trace, the spans it saw; the final pass, once
the window has settled, searches again and fetches only what can have changed, and amends:
late violations, retractions, confirmations. A window that is already settled when first
judged gets a single, final pass.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from checker.errors import TraceSourceError
from checker.store import Amendment, WindowRecord
from checker.tempo.run import Provisional, WindowResult, evaluate_window
from checker.tempo.search_cache import SearchCache
from checker.traceql import compile_rule

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime, timedelta

    from checker.daemon.metrics import Metrics
    from checker.daemon.windows import Window
    from checker.engine import Violation
    from checker.notify.policy import NotifyPolicy, WindowNotice
    from checker.rules.rule import Rule
    from checker.store import Outcome, ProvisionalWindow, Store
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
                 tempo_settings: TempoSettings, timeout: timedelta, trace_idle: timedelta,
                 clock: Callable[[], datetime], on_notify: Callable[[], None]) -> None:
        self.store = store
        self.tempo = tempo
        self.policy = policy
        self.metrics = metrics
        self.tempo_settings = tempo_settings
        self.timeout = timeout
        self.trace_idle = trace_idle
        self.clock = clock
        self.on_notify = on_notify  # called when a commit added notifications to the outbox
        # Margin searches asked once per stretch of time, shared by every rule and window.
        self.search_cache = SearchCache(int(tempo_settings.search_cache),
                                        lambda: clock().timestamp()) if tempo_settings.search_cache else None
        self._recorded: set[tuple[str, str]] = set()

    async def commit_window(self, rule: Rule, window: Window, *, backfill: str | None = None,
                            notify: bool = True, provisional: bool = False,
                            settle_checkpoint: str | None = None) -> CommittedWindow:
        """Evaluate ``rule`` over ``window`` and commit the record.

        ``backfill`` is the backfill's checkpoint key: the record moves that checkpoint and is
        marked as a backfill in the ledger. Without ``notify`` nothing enters the outbox. A
        ``provisional`` verdict keeps what it judged for the final pass; a final one moves the
        ``settle_checkpoint`` too (nothing is left to settle in the window).

        :raises CheckpointMoved: another worker committed this window first.
        """
        await self.record_version(rule)
        record = await self.evaluate(rule, window, provisional=provisional)
        record = replace(record, settle_checkpoint=settle_checkpoint)
        if backfill is not None:
            record = replace(record, backfill=True, checkpoint=backfill)
        notice = self.policy.notice(rule, window) if notify else None
        if notice is not None and provisional:
            notice = replace(notice, verdict="provisional")
        return await self._commit(rule, record, notice)

    async def commit_final(self, rule: Rule, windows: list[ProvisionalWindow],
                           settle_checkpoint: str) -> CommittedWindow:
        """The final pass over consecutive provisional windows: one record that amends them.

        :raises CheckpointMoved: another worker settled these windows first.
        """
        await self.record_version(rule)
        span = (windows[0].start, windows[-1].end)
        ids = [w.evaluation_id for w in windows]
        earlier = await asyncio.to_thread(self.store.provisional_violations, rule.id, ids)
        # A trace judged by several windows with different spans grew between them: the verdict
        # of the first may stand on fewer spans than the last saw, so it is judged again.
        judged: dict[str, frozenset[str] | None] = {}
        for window in windows:
            for trace, spans in window.judged.items():
                judged[trace] = spans if judged.get(trace, spans) == spans else None
        # A rule edited since: no earlier verdict stands, every trace is judged by the new version.
        edited = any(w.rule_version != rule.version for w in windows)
        if edited:
            judged = dict.fromkeys(judged)
        before = Provisional(judged, frozenset(v.trace_id for v in earlier))
        record = await self.evaluate(rule, span, before=before)
        record = replace(record, checkpoint=settle_checkpoint)
        notice = self.policy.notice(rule, span)
        if record.outcome == "failed":
            return await self._commit(rule, record, None)
        holding = {v.trace_id for v in record.violations}
        unjudged = record.unjudged
        standing = holding | record.unchanged
        kept = [v for v in earlier if v.trace_id in standing]
        # Not judged on the finished trace (Tempo returned it in part, or no longer has it): neither
        # confirmed nor retracted; it stays provisional and the record is incomplete.
        unsettled = [v for v in earlier if v.trace_id not in standing and v.trace_id in unjudged]
        retracted = [(v, f"rule {rule.id} was edited (now version {rule.version[:12]}) and the finished "
                      "trace does not violate it" if edited else v.retraction_reason())
                     for v in earlier if v.trace_id not in standing | unjudged]
        record = replace(
            record, violations=(*record.violations, *(v for v in kept if v.trace_id not in holding)),
            outcome=_outcome(bool(unjudged), bool(holding or kept)),
            amendment=Amendment(tuple(ids), tuple(v.trace_id for v in kept),
                                {v.trace_id: why for v, why in retracted},
                                tuple(v.trace_id for v in unsettled)))
        if notice is not None:
            notice = replace(notice, verdict="amendment", confirmed=tuple(kept), retracted=tuple(retracted))
        committed = await self._commit(rule, record, notice)
        late, withdrawn = len(committed.new_violations), len(retracted)
        self.metrics.amendments.labels(rule.id, "late").inc(late)
        self.metrics.amendments.labels(rule.id, "retracted").inc(withdrawn)
        log.info("window.settled", rule=rule.id, window_start=span[0].isoformat(),
                 window_end=span[1].isoformat(), windows=len(windows), confirmed=len(kept),
                 late=late, retracted=withdrawn, refetched=record.candidates)
        return committed

    async def _commit(self, rule: Rule, record: WindowRecord, notice: WindowNotice | None) -> CommittedWindow:
        committed = await asyncio.to_thread(self.store.commit, record, notice)
        if notice is not None:
            self.on_notify()
        self.metrics.evaluations.labels(rule.id, record.outcome).inc()
        self.metrics.evaluation_seconds.labels(rule.id).observe(record.duration)
        for violation in committed.new_violations:
            self.metrics.violations.labels(rule.id, violation.severity).inc()
        return CommittedWindow(record, committed.new_violations)

    async def commit_skipped(self, rule: Rule, window: Window, reason: str, *,
                             settle_checkpoint: str | None = None, checkpoint: str | None = None) -> None:
        """Record a window that will never be evaluated, so the ledger shows the gap."""
        start, end = window
        await asyncio.to_thread(self.store.commit, WindowRecord(
            rule, start, end, self.clock(), 0.0, "skipped", error=f"not evaluated: {reason}",
            checkpoint=checkpoint, settle_checkpoint=settle_checkpoint))
        self.metrics.evaluations.labels(rule.id, "skipped").inc()

    async def record_version(self, rule: Rule) -> None:
        """Every evaluated version of a rule is on record (once per process)."""
        if (rule.id, rule.version) not in self._recorded:
            await asyncio.to_thread(self.store.record_rule, rule)
            self._recorded.add((rule.id, rule.version))

    async def evaluate(self, rule: Rule, window: Window, *, provisional: bool = False,
                       before: Provisional | None = None) -> WindowRecord:
        """Every log line inside (Tempo retries included) names the rule and the window."""
        start, end = window
        with structlog.contextvars.bound_contextvars(rule=rule.id, window_start=start.isoformat(),
                                                     window_end=end.isoformat()):
            return await self._evaluate_bound(rule, start, end, provisional, before)

    async def _evaluate_bound(self, rule: Rule, start: datetime, end: datetime, provisional: bool,
                              before: Provisional | None) -> WindowRecord:
        started, clock = self.clock(), time.monotonic()
        plan_text = ""
        tempo = self.tempo_settings
        timeout = self.timeout.total_seconds()
        # A trace judged provisionally that ended within trace_idle may still grow.
        idle = math.floor((started - self.trace_idle).timestamp() * 1e9) if provisional else None
        try:
            plan_text = "\n".join(compile_rule(rule.invariant).describe())
            result = await asyncio.wait_for(evaluate_window(
                [rule], self.tempo, int(start.timestamp()), int(end.timestamp()),
                margin=math.ceil(tempo.trace_margin.total_seconds()),
                latest=math.floor(started.timestamp() - tempo.query_end_cutoff.total_seconds()),
                idle_since_ns=idle, provisional=before, cache=self.search_cache,
            ), timeout)
        except TimeoutError:
            error = f"evaluation timed out after {timeout:g}s (schedule.evaluation_timeout)"
        except TraceSourceError as err:
            error = str(err)
        except Exception as err:  # a bug must not stop the daemon: record it, retry the window
            log.exception("window.internal_error")
            error = f"internal error: {type(err).__name__}: {err}"
        else:
            record = _record(rule, result, window=(start, end), started=started,
                             seconds=time.monotonic() - clock, plan=plan_text)
            if provisional:
                record = replace(record, verdict="provisional", judged=result.judged)
            log.info("window.evaluated", outcome=record.outcome, verdict=record.verdict,
                     candidates=record.candidates, violations=len(record.violations),
                     seconds=round(record.duration, 3))
            return record
        log.error("window.failed", error=error, detail="the checkpoint stays; the next run retries")
        return WindowRecord(rule, start, end, started, time.monotonic() - clock, "failed",
                            plan=plan_text, error=error)


def _record(rule: Rule, result: WindowResult, *, window: Window, started: datetime, seconds: float,
            plan: str) -> WindowRecord:
    outcome = result.outcomes[0]
    unjudged = result.unjudged
    return WindowRecord(
        rule, *window, started, seconds, _outcome(bool(unjudged), bool(outcome.violations)),
        scope_size=outcome.scope_size, candidates=len(outcome.candidates), plan=plan,
        error=f"{len(unjudged)} candidates not judged: " + ", ".join(unjudged) if unjudged else None,
        violations=tuple(outcome.violations), unjudged=frozenset(result.missing + result.partial),
        unchanged=result.unchanged)


def _outcome(unjudged: bool, violating: bool) -> Outcome:
    return "incomplete" if unjudged else "violations" if violating else "ok"
