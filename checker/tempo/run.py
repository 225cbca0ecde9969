"""Evaluate rules over one time window of Tempo: search, combine, fetch candidates, confirm.

Searches are shared between rules (one query, one enumeration per window); each candidate
trace is fetched once whatever the number of rules it is a candidate for, judged for all of
them as it arrives and then dropped, and a violation is only ever reported from the exact
evaluation of the whole fetched trace.
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from typing import TYPE_CHECKING

import structlog
from tqdm import tqdm

from checker.engine import Scanner
from checker.engine.compiled import span_names
from checker.errors import CheckerError
from checker.tempo.client import TempoClient, gather_strict
from checker.tempo.errors import TempoError
from checker.tempo.settings import TempoSettings
from checker.traceql import QueryPlan, compile_rule
from checker.traceql.plan import evaluate as evaluate_set
from checker.traceql.plan import searches
from checker.traceql.syntax import unseen_spans

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from checker.engine import Violation
    from checker.rules.rule import Rule
    from checker.tempo.client import ClientStats, FetchedTrace
    from checker.tempo.search_cache import SearchCache
    from checker.traceql.plan import Search
    from checker.traces.model import Trace


log = structlog.get_logger(__name__)

# How far around a window to look for the rest of a trace: the longest expected trace plus
# ingestion delay (shared/tempo.md §4.5).
DEFAULT_MARGIN = math.ceil(TempoSettings.model_fields["trace_margin"].default.total_seconds())


class Reach(StrEnum):
    """How much time one search of a window covers."""

    WINDOW = "window"
    MARGIN = "margin"  # trace_margin around the window
    REUSED = "reused"  # the margin, or more, partly from answers kept for earlier windows


@dataclass
class RuleOutcome:
    """What one rule's evaluation of a window found."""

    rule: Rule
    plan: QueryPlan
    candidates: frozenset[str] = frozenset()
    scope_size: int | None = None  # traces the scope searches matched; None when not searched
    in_scope: int = 0
    violations: list[Violation] = field(default_factory=list)
    # Each candidate judged: the span IDs seen whose names the rule reads, or None when the
    # final pass must fetch it again (``Provisional``).
    judged: dict[str, frozenset[str] | None] = field(default_factory=dict)
    # A final pass: the candidates whose provisional verdict stands (judged whole, nothing new since).
    unchanged: frozenset[str] = frozenset()
    error: str | None = None  # judging failed for this rule alone (a bug): its window fails, not the others


# The most spans of one trace the final pass's "anything new?" search lists (about 2 KiB of query).
MAX_SEEN_SPANS = 60


@dataclass(frozen=True)
class Provisional:
    """What a provisional pass judged, handed to the final pass over the same windows.

    ``judged`` maps each trace it judged to the IDs of the spans it saw whose names the rules
    look at (``span_names``: no other span can change a verdict), or to None when the final pass
    must fetch it again: it was unfinished (``is_unfinished``), or it has more such spans than
    one request can list (``MAX_SEEN_SPANS``). ``violators`` are the traces it found violating.
    """

    judged: Mapping[str, frozenset[str] | None]
    violators: frozenset[str]


def is_unfinished(trace: Trace, idle_since_ns: int) -> bool:
    """A trace that may still grow, so a later look may judge it otherwise.

    Either a span's parent has not arrived, or a span ended after ``idle_since_ns`` (less than
    ``schedule.trace_idle`` before it was judged).
    """
    ids = {span.span_id for span in trace.spans}
    return any((span.parent_span_id is not None and span.parent_span_id not in ids)
               or span.end_ns > idle_since_ns for span in trace.spans)


@dataclass
class WindowResult:
    """All rules over one window; ``missing`` are candidates Tempo no longer returns."""

    start: int
    end: int
    outcomes: list[RuleOutcome]
    missing: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # why each of ``partial`` was not judged

    @property
    def violations(self) -> list[Violation]:
        """Every violation, rule by rule."""
        return [v for o in self.outcomes for v in o.violations]

    @property
    def unjudged(self) -> list[str]:
        """Each candidate that could not be judged, and why: a window is never quietly clean."""
        return self.unjudged_of(None)

    def unjudged_of(self, outcome: RuleOutcome | None) -> list[str]:
        """``unjudged``, of one rule's candidates only: another rule's lost trace is not its gap."""
        wanted = None if outcome is None else outcome.candidates
        return [f"{t} (not found)" for t in self.missing if wanted is None or t in wanted] + [
            f"{t} ({self.reasons.get(t, 'returned only in part')})" for t in self.partial
            if wanted is None or t in wanted]


async def evaluate_window(
    rules: list[Rule], client: TempoClient, start: int, end: int,
    *, margin: int = DEFAULT_MARGIN, latest: int | None = None,
    on_fetched: Callable[[int, int], None] | None = None,
    idle_since_ns: int | None = None, provisional: Mapping[str, Provisional] | None = None,
    cache: SearchCache | None = None,
) -> WindowResult:
    """Run every rule over [start, end] (unix seconds) and confirm each candidate exactly.

    Anchor searches, and those that only clear candidates, cover the window; the others cover
    ``margin`` seconds more on each side (up to ``latest``, the newest second Tempo shows),
    because Tempo matches each trace fragment on its own time range and a trace's other
    fragments may lie outside (``QueryPlan.wide``). With a ``cache``, the margin searches that
    only add candidates are answered from what earlier windows asked (``SearchCache``).

    A final pass passes what each rule's ``provisional`` pass judged (by rule ID): a candidate
    judged whole then is fetched again only when one search says spans arrived since
    (``unseen_spans``); the provisional violators that are no longer candidates are fetched to
    confirm the retraction.
    ``idle_since_ns`` marks the traces judged now that may still grow (``is_unfinished``).
    """
    outcomes = [RuleOutcome(rule, compile_rule(rule.invariant)) for rule in rules if rule.enabled]
    wide = (max(0, start - margin), max(end, min(end + margin, latest or end + margin)))
    await _find_candidates(outcomes, client, (start, end), wide, cache)
    if provisional is not None:
        await _settled(client, outcomes, provisional, wide)
    result = WindowResult(start, end, outcomes)
    confirm = _Confirmation(result, idle_since_ns)
    await _fetch_each(client, sorted(set().union(*(o.candidates for o in outcomes))), confirm.judge,
                      on_fetched)
    confirm.finish()
    return result


async def _find_candidates(outcomes: list[RuleOutcome], client: TempoClient, window: tuple[int, int],
                           wide: tuple[int, int], cache: SearchCache | None) -> None:
    """Each rule's candidates and scope size, from each distinct (query, reach) searched once."""
    start, end = window

    def reach(plan: QueryPlan, search: Search) -> Reach:
        if search not in plan.wide:
            return Reach.WINDOW
        return Reach.REUSED if cache is not None and search in plan.reusable else Reach.MARGIN

    def ask(query: str, how: Reach) -> Awaitable[set[str]]:
        if how is Reach.WINDOW:
            return client.search_all(query, start, end)
        if how is Reach.REUSED and cache is not None:
            return cache.superset(client, query, wide, window_end=end)
        return client.search_all(query, *wide)

    keys = sorted({(s.query, reach(o.plan, s)) for o in outcomes for s in o.plan.searches})
    found = await gather_strict(*(ask(query, how) for query, how in keys))
    results = {key: frozenset(ids) for key, ids in zip(keys, found, strict=True)}
    for outcome in outcomes:

        def lookup(search: Search, plan: QueryPlan = outcome.plan) -> frozenset[str]:
            return results[(search.query, reach(plan, search))]

        outcome.candidates = evaluate_set(outcome.plan.candidates, lookup)
        if set(searches(outcome.plan.scope)) <= set(outcome.plan.searches):
            outcome.scope_size = len(evaluate_set(outcome.plan.scope, lookup))


async def _settled(client: TempoClient, outcomes: list[RuleOutcome], provisional: Mapping[str, Provisional],
                   wide: tuple[int, int]) -> None:
    """Each rule's candidates for its final pass: less its unchanged traces, plus its dropped violators.

    Each rule has its own provisional pass, so a trace's unchanged status is asked with that
    rule's spans and names; one search asks it for every rule (a trace new to any of them is
    fetched once and judged again for each rule that wants it).
    """
    whole: dict[str, dict[str, frozenset[str]]] = {}
    for outcome in outcomes:
        before = provisional.get(outcome.rule.id)
        if before is not None:
            whole[outcome.rule.id] = {t: spans for t in outcome.candidates
                                      if (spans := before.judged.get(t)) is not None}
    grown = await _grown(client, outcomes, whole, wide)
    for outcome in outcomes:
        before = provisional.get(outcome.rule.id)
        if before is not None:
            outcome.unchanged = frozenset(whole[outcome.rule.id]) - grown
            dropped = before.violators - outcome.candidates
            outcome.candidates = (outcome.candidates - outcome.unchanged) | dropped


async def _grown(client: TempoClient, outcomes: list[RuleOutcome],
                 whole: dict[str, dict[str, frozenset[str]]], wide: tuple[int, int]) -> frozenset[str]:
    """The traces judged whole that a span has joined since, for the rules that read its name.

    A Tempo that refuses the question (400: a version without the
    ``trace:id``/``span:id`` intrinsics) makes every one grown: they are all fetched again,
    dearer but never wrong, rather than the window never settling.
    """
    asked: dict[frozenset[str], dict[str, frozenset[str]]] = {}
    for outcome in outcomes:
        read = span_names(outcome.rule.invariant)
        # A rule reading the whole trace (None) asks about spans of any name: no name filter.
        names = asked.setdefault(frozenset() if read is None else read, {})
        for trace_id, spans in whole.get(outcome.rule.id, {}).items():
            # Two rules reading the same names judged it on different looks: only the spans both
            # saw are old (a span the other saw may be new to this rule).
            names[trace_id] = names[trace_id] & spans if trace_id in names else spans
    asked = {names: traces for names, traces in asked.items() if traces}
    if not asked:
        return frozenset()
    everything = frozenset().union(*asked.values())
    try:
        return frozenset(await client.search_all(unseen_spans(asked), *wide))
    except TempoError as err:
        if err.status != HTTPStatus.BAD_REQUEST:
            raise
        log.warning("tempo.unseen_spans_refused", error=str(err),
                    detail="every trace of the final pass is fetched again")
        return everything


async def _fetch_each(client: TempoClient, ids: list[str], judge: Callable[[FetchedTrace], None],
                      on_fetched: Callable[[int, int], None] | None) -> None:
    """Fetch every trace and hand each to ``judge`` as it arrives, ``tempo.concurrency`` at a time.

    A fixed pool of workers pulls from one iterator, so 100,000 candidates cost a handful of
    tasks, and a trace is referenced only while it is judged: no more traces are held at once
    than there are workers, whatever the number of candidates.
    """
    pending = iter(ids)
    done = 0

    async def worker() -> None:
        nonlocal done
        for trace_id in pending:
            # Judged inside one expression: no name keeps the trace while the next one is fetched.
            judge(await client.fetch(trace_id))
            done += 1
            if on_fetched is not None:
                on_fetched(done, len(ids))

    await gather_strict(*(worker() for _ in range(min(client.settings.concurrency, len(ids)))))


class _Confirmation:
    """Judges each fetched candidate at once for every rule it is a candidate of, then forgets it.

    Only the verdicts and the judged span IDs are kept (``WindowResult``), never the traces;
    ``finish`` puts them in trace ID order, as if the candidates had been judged in that order.
    """

    def __init__(self, result: WindowResult, idle_since_ns: int | None) -> None:
        self.result = result
        self._idle_since_ns = idle_since_ns
        self._scanners = [(outcome, Scanner([outcome.rule]), span_names(outcome.rule.invariant))
                          for outcome in result.outcomes]

    def judge(self, fetched: FetchedTrace) -> None:
        """Record what ``fetched`` shows; missing and partial traces are not judged."""
        trace_id, trace, result = fetched.trace_id, fetched.trace, self.result
        if fetched.partial:
            result.partial.append(trace_id)
            result.reasons[trace_id] = fetched.partial
            return
        if trace is None:
            result.missing.append(trace_id)
            return
        whole = self._idle_since_ns is None or not is_unfinished(trace, self._idle_since_ns)
        for outcome, scanner, names in self._scanners:
            if trace_id not in outcome.candidates or outcome.error is not None:
                continue
            try:
                seen = frozenset(s.span_id for s in trace.spans if names is None or s.name in names)
                # More spans than a request can list: the final pass fetches it again instead.
                outcome.judged[trace_id] = seen if whole and len(seen) <= MAX_SEEN_SPANS else None
                outcome.violations.extend(scanner.check(trace))
            except Exception as err:  # one rule's bug must not fail the rules judged with it
                log.exception("rule.judging_failed", rule=outcome.rule.id)
                outcome.error = f"internal error: {type(err).__name__}: {err}"

    def finish(self) -> None:
        """Put every list in trace ID order and count each rule's traces in scope."""
        result = self.result
        result.missing.sort()
        result.partial.sort()
        result.reasons = {trace_id: result.reasons[trace_id] for trace_id in result.partial}
        for outcome, scanner, _names in self._scanners:
            outcome.judged = dict(sorted(outcome.judged.items()))
            # A stable sort: the violations of one trace keep their order.
            outcome.violations.sort(key=lambda violation: violation.trace_id)
            outcome.in_scope = scanner.stats.in_scope


def scan_window(rules: list[Rule], settings: TempoSettings, start: int, end: int,
                *, latest: int | None = None,
                progress: bool = False) -> tuple[WindowResult, ClientStats]:
    """Synchronous entry point for the CLI, with a progress bar on a terminal."""

    async def run() -> tuple[WindowResult, ClientStats]:
        with tqdm(desc="fetching candidates", unit="trace", disable=not progress,
                  file=sys.stderr, leave=False) as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            async with TempoClient(settings) as client:
                margin = math.ceil(settings.trace_margin.total_seconds())
                result = await evaluate_window(rules, client, start, end, margin=margin,
                                               latest=latest, on_fetched=advance)
                for outcome in result.outcomes:
                    if outcome.error is not None:
                        raise CheckerError(f"rule {outcome.rule.id}: {outcome.error}",
                                           hint="a bug in the checker: please report it with the rule")
                return result, client.stats

    return asyncio.run(run())
