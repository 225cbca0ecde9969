"""One window of a group of rules: evaluated against Tempo once, then committed rule by rule.

The one path from a window to the store, for the daemon's runs and for backfill alike: the
rule versions are on record before their first window, the evaluation is bounded by
``schedule.evaluation_timeout``, and a failure of any kind becomes a ``failed`` record (the
checkpoint stays, so the window is evaluated again) rather than an exception. The rules of a
group share the searches and each candidate's fetch (``evaluate_window``); each still has its
own record, checkpoint, ledger entry, notifications and metrics. A Tempo failure fails every
rule of the window; a bug in judging one rule fails that rule's window alone.

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
from checker.selftrace import NO_TRACER
from checker.store import Amendment, WindowRecord
from checker.tempo.run import Provisional, WindowResult, evaluate_window
from checker.tempo.search_cache import SearchCache
from checker.traceql import compile_rule

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import datetime, timedelta

    from opentelemetry import trace

    from checker.daemon.metrics import Metrics
    from checker.daemon.vacuous import VacuousRules
    from checker.daemon.windows import Window
    from checker.engine import Violation
    from checker.notify.policy import NotifyPolicy, WindowNotice
    from checker.rules.rule import Rule
    from checker.store import Outcome, ProvisionalWindow, Store
    from checker.tempo.client import TempoClient
    from checker.tempo.run import RuleOutcome
    from checker.tempo.settings import TempoSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CommittedWindow:
    """A window as the store now holds it, and the violations it recorded for the first time."""

    record: WindowRecord
    new_violations: list[Violation]


@dataclass(frozen=True)
class Member:
    """One rule's part in a group's window: how its verdict is committed.

    A ``provisional`` verdict keeps what it judged for the final pass; a final one moves the
    ``settle_checkpoint`` too (nothing is left to settle in the window).
    """

    rule: Rule
    provisional: bool = False
    settle_checkpoint: str | None = None


@dataclass(frozen=True)
class Settling:
    """One rule's provisional windows, judged finally in a group's final pass."""

    rule: Rule
    windows: list[ProvisionalWindow]
    settle_checkpoint: str


# Per member: its committed window, or why it could not be committed (``CheckpointMoved``: another
# worker committed it first; a store error), so that one rule's trouble never stops the others.
MemberResult = CommittedWindow | Exception


class WindowJudge:
    """Evaluates and commits windows; it keeps no position (its callers do)."""

    def __init__(self, store: Store, tempo: TempoClient, policy: NotifyPolicy, metrics: Metrics, *,
                 tempo_settings: TempoSettings, timeout: timedelta, trace_idle: timedelta,
                 clock: Callable[[], datetime], on_notify: Callable[[], None],
                 vacuous: VacuousRules, tracer: trace.Tracer = NO_TRACER) -> None:
        self.store = store
        self.tracer = tracer  # a span per window evaluation, Tempo's requests below it
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
        self.vacuous = vacuous  # rules with nothing in scope for long, logged

    async def commit_window(self, rule: Rule, window: Window, *, backfill: str | None = None,
                            notify: bool = True, provisional: bool = False,
                            settle_checkpoint: str | None = None) -> CommittedWindow:
        """Evaluate ``rule`` alone over ``window`` and commit the record (``commit_group``).

        :raises CheckpointMoved: another worker committed this window first.
        """
        [committed] = await self.commit_group([Member(rule, provisional, settle_checkpoint)], window,
                                              backfill=backfill, notify=notify)
        if isinstance(committed, Exception):
            raise committed
        return committed

    async def commit_group(self, members: list[Member], window: Window, *, backfill: str | None = None,
                           notify: bool = True) -> list[MemberResult]:
        """Evaluate the members' rules over ``window`` together, then commit each rule's record.

        ``backfill`` is the backfill's checkpoint key: the record moves that checkpoint and is
        marked as a backfill in the ledger. Without ``notify`` nothing enters the outbox.
        """
        failures = await self._record_versions([m.rule for m in members])
        ready = [m for m in members if m.rule.id not in failures]
        records = await self.evaluate([m.rule for m in ready], window,
                                      provisional=any(m.provisional for m in ready)) if ready else []
        results: dict[str, MemberResult] = dict(failures)
        for member, evaluated in zip(ready, records, strict=True):
            record = replace(evaluated, settle_checkpoint=member.settle_checkpoint)
            if not member.provisional:  # judged at once finally, beside provisional members
                record = replace(record, verdict="final", judged=None)
            if backfill is not None:
                record = replace(record, backfill=True, checkpoint=backfill)
            notice = self.policy.notice(member.rule, window) if notify else None
            if notice is not None and member.provisional:
                notice = replace(notice, verdict="provisional")
            results[member.rule.id] = await _caught(self._commit(member.rule, record, notice))
        return [results[m.rule.id] for m in members]

    async def commit_final_group(self, settlings: list[Settling]) -> list[MemberResult]:
        """The final pass over the same consecutive provisional windows of several rules.

        One evaluation for all (searches shared, each trace fetched once); each rule's own
        provisional verdicts decide what it may skip, and each gets one record that amends its
        provisional windows.
        """
        failures = await self._record_versions([s.rule for s in settlings])
        earlier: dict[str, list[Violation]] = {}
        for settling in settlings:
            if settling.rule.id not in failures:
                try:
                    earlier[settling.rule.id] = await asyncio.to_thread(
                        self.store.provisional_violations, settling.rule.id,
                        [w.evaluation_id for w in settling.windows])
                except Exception as err:  # noqa: BLE001  (this rule's failure, reported by the runner)
                    failures[settling.rule.id] = err
        ready = [s for s in settlings if s.rule.id not in failures]
        edited = {s.rule.id: any(w.rule_version != s.rule.version for w in s.windows) for s in ready}
        before = {s.rule.id: Provisional(_judged(s.windows, edited=edited[s.rule.id]),
                                         frozenset(v.trace_id for v in earlier[s.rule.id]))
                  for s in ready}
        span = (settlings[0].windows[0].start, settlings[0].windows[-1].end)
        records = await self.evaluate([s.rule for s in ready], span, before=before) if ready else []
        results: dict[str, MemberResult] = dict(failures)
        for settling, record in zip(ready, records, strict=True):
            results[settling.rule.id] = await _caught(self._amend(
                settling, record, earlier[settling.rule.id], edited=edited[settling.rule.id]))
        return [results[s.rule.id] for s in settlings]

    async def _amend(self, settling: Settling, record: WindowRecord, earlier: list[Violation], *,
                     edited: bool) -> CommittedWindow:
        """Commit one rule's final pass: late violations, confirmations, retractions."""
        rule, windows = settling.rule, settling.windows
        span = (record.start, record.end)
        ids = [w.evaluation_id for w in windows]
        record = replace(record, checkpoint=settling.settle_checkpoint)
        if record.outcome == "failed":
            return await self._commit(rule, record, None)
        notice = self.policy.notice(rule, span)
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
            self.metrics.violation(violation)
        # A window's first look counts its scope; a final pass over it would count it again.
        if record.amendment is None and record.scope_size is not None and record.outcome != "failed":
            self.metrics.in_scope.labels(rule.id).inc(record.scope_size)
            self.vacuous.saw(rule.id, (record.start, record.end), record.scope_size)
        return CommittedWindow(record, committed.new_violations)

    async def commit_skipped(self, rule: Rule, window: Window, reason: str, *,
                             settle_checkpoint: str | None = None, checkpoint: str | None = None) -> None:
        """Record a window that will never be evaluated, so the ledger shows the gap."""
        start, end = window
        await asyncio.to_thread(self.store.commit, WindowRecord(
            rule, start, end, self.clock(), 0.0, "skipped", error=f"not evaluated: {reason}",
            checkpoint=checkpoint, settle_checkpoint=settle_checkpoint))
        self.metrics.evaluations.labels(rule.id, "skipped").inc()

    async def _record_versions(self, rules: list[Rule]) -> dict[str, Exception]:
        """Put each rule's version on record; the rules that could not be, and why (judged no further)."""
        failures: dict[str, Exception] = {}
        for rule in rules:
            try:
                await self.record_version(rule)
            except Exception as err:  # noqa: BLE001  (this rule's failure, reported by the runner)
                failures[rule.id] = err
        return failures

    async def record_version(self, rule: Rule) -> None:
        """Every evaluated version of a rule is on record (once per process)."""
        if (rule.id, rule.version) not in self._recorded:
            await asyncio.to_thread(self.store.record_rule, rule)
            self._recorded.add((rule.id, rule.version))

    async def evaluate(self, rules: list[Rule], window: Window, *, provisional: bool = False,
                       before: Mapping[str, Provisional] | None = None) -> list[WindowRecord]:
        """One record per rule, in order; every log line inside (Tempo retries included) names the window.

        ``provisional`` records what each trace judged whole showed (``judged``), for the final pass.
        """
        start, end = window
        names = {"rule": rules[0].id} if len(rules) == 1 else {"rules": [r.id for r in rules]}
        with structlog.contextvars.bound_contextvars(**names, window_start=start.isoformat(),
                                                     window_end=end.isoformat()), \
                self.tracer.start_as_current_span("betrace.window", attributes={
                    "betrace.rules": [r.id for r in rules], "betrace.window_start": start.isoformat(),
                    "betrace.window_end": end.isoformat(), "betrace.provisional": provisional}) as span:
            records = await self._evaluate_bound(rules, start, end, provisional, before)
            span.set_attributes({"betrace.candidates": sum(r.candidates for r in records),
                                 "betrace.violations": sum(len(r.violations) for r in records),
                                 "betrace.failed": sum(r.outcome == "failed" for r in records)})
            return records

    async def _evaluate_bound(self, rules: list[Rule], start: datetime, end: datetime, provisional: bool,
                              before: Mapping[str, Provisional] | None) -> list[WindowRecord]:
        started, clock = self.clock(), time.monotonic()
        # A trace judged provisionally that ended within trace_idle may still grow.
        idle = math.floor((started - self.trace_idle).timestamp() * 1e9) if provisional else None
        plans: dict[str, str] = {}
        errors: dict[str, str] = {}
        for rule in rules:
            try:
                plans[rule.id] = "\n".join(compile_rule(rule.invariant).describe())
            except Exception as err:  # a bug must not stop the daemon: record it, retry the window
                log.exception("window.internal_error", rule=rule.id)
                errors[rule.id] = f"internal error: {type(err).__name__}: {err}"
        judged = [rule for rule in rules if rule.id not in errors]
        records: dict[str, WindowRecord] = {}
        result = await self._search_and_judge(judged, (start, end), started, idle, before) if judged else None
        if isinstance(result, str):
            errors |= dict.fromkeys(plans, result)
        elif result is not None:
            for outcome in result.outcomes:
                if outcome.error is not None:
                    errors[outcome.rule.id] = outcome.error
                    continue
                record = _record(result, outcome, window=(start, end), started=started,
                                 seconds=time.monotonic() - clock, plan=plans[outcome.rule.id])
                if provisional:
                    record = replace(record, verdict="provisional", judged=outcome.judged)
                log.info("window.evaluated", rule=outcome.rule.id, outcome=record.outcome,
                         verdict=record.verdict, candidates=record.candidates,
                         violations=len(record.violations), seconds=round(record.duration, 3))
                records[outcome.rule.id] = record
        for rule_id, error in errors.items():
            log.error("window.failed", rule=rule_id, error=error,
                      detail="the checkpoint stays; the next run retries")
        return [records.get(rule.id) or WindowRecord(
            rule, start, end, started, time.monotonic() - clock, "failed", plan=plans.get(rule.id, ""),
            error=errors.get(rule.id, "internal error: the rule was not evaluated")) for rule in rules]


    async def _search_and_judge(self, rules: list[Rule], window: Window, started: datetime, idle: int | None,
                                before: Mapping[str, Provisional] | None) -> WindowResult | str:
        """The group's evaluation, or why it failed for every rule of the group."""
        tempo = self.tempo_settings
        timeout = self.timeout.total_seconds()
        try:
            return await asyncio.wait_for(evaluate_window(
                rules, self.tempo, int(window[0].timestamp()), int(window[1].timestamp()),
                margin=math.ceil(tempo.trace_margin.total_seconds()),
                latest=math.floor(started.timestamp() - tempo.query_end_cutoff.total_seconds()),
                idle_since_ns=idle, provisional=before,
                # Provisional passes only (``idle`` is set for them): a final pass asks Tempo afresh,
                # so a part that arrived since, however late for its own time, is seen.
                cache=self.search_cache if idle is not None else None,
            ), timeout)
        except TimeoutError:
            return f"evaluation timed out after {timeout:g}s (schedule.evaluation_timeout)"
        except TraceSourceError as err:
            return str(err)
        except Exception as err:  # a bug must not stop the daemon: record it, retry the window
            log.exception("window.internal_error")
            return f"internal error: {type(err).__name__}: {err}"


async def _caught(commit: Awaitable[CommittedWindow]) -> MemberResult:
    """The commit, or its exception: one rule's store trouble is its caller's to report, not the group's."""
    try:
        return await commit
    except Exception as err:  # noqa: BLE001  (handed back to the runner, which reports it per rule)
        return err


def _judged(windows: list[ProvisionalWindow], *, edited: bool) -> dict[str, frozenset[str] | None]:
    """What a rule's provisional windows judged, for its final pass.

    A trace judged by several windows with different spans grew between them: the verdict of
    the first may stand on fewer spans than the last saw, so it is judged again. A rule edited
    since: no earlier verdict stands, every trace is judged by the new version.
    """
    judged: dict[str, frozenset[str] | None] = {}
    for window in windows:
        for trace, spans in window.judged.items():
            judged[trace] = spans if judged.get(trace, spans) == spans else None
    return dict.fromkeys(judged) if edited else judged


def _record(result: WindowResult, outcome: RuleOutcome, *, window: Window, started: datetime,
            seconds: float, plan: str) -> WindowRecord:
    unjudged = result.unjudged_of(outcome)
    lost = frozenset(t for t in (*result.missing, *result.partial) if t in outcome.candidates)
    return WindowRecord(
        outcome.rule, *window, started, seconds, _outcome(bool(unjudged), bool(outcome.violations)),
        scope_size=outcome.scope_size, candidates=len(outcome.candidates), plan=plan,
        error=f"{len(unjudged)} candidates not judged: " + ", ".join(unjudged) if unjudged else None,
        violations=tuple(outcome.violations), unjudged=lost, unchanged=outcome.unchanged)


def _outcome(unjudged: bool, violating: bool) -> Outcome:
    return "incomplete" if unjudged else "violations" if violating else "ok"
