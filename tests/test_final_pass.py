"""The final pass over a window: what it fetches again, and what it takes as unchanged.

Against the Tempo test double over real HTTP: a trace judged whole whose spans did not change
is not fetched again; one that grew, an unfinished one and a dropped violator are.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from otlp_build import attribute
from tempo_double import TempoDouble

from checker.rules.load import load_text
from checker.tempo.client import MAX_QUERY_BYTES, TempoClient
from checker.tempo.errors import TempoError
from checker.tempo.run import (
    MAX_SEEN_SPANS,
    Provisional,
    RuleOutcome,
    WindowResult,
    evaluate_window,
    is_unfinished,
)
from checker.tempo.settings import TempoSettings
from checker.traceql.syntax import unseen_spans
from checker.traces.model import Span, Trace

if TYPE_CHECKING:
    from collections.abc import Iterator

NOW = 2_000_000_000
WINDOW = (NOW - 120, NOW - 60)
RULE = load_text("rules:\n  - id: audited\n    condition: |\n      when { pii.access }\n"
                 "      always { audit.log }\n", "r.yaml").rules[0]


def span(trace: int, n: int, name: str, *, parent: int | None = None, at: float = NOW - 100,
         ends: float | None = None) -> dict[str, Any]:
    start = int(at * 1e9)
    made: dict[str, Any] = {
        "traceId": f"{trace:032x}", "spanId": f"{trace:08x}{n:08x}", "name": name, "kind": 1,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(int((ends or at + 0.001) * 1e9)),
        "attributes": []}
    if parent is not None:
        made["parentSpanId"] = f"{trace:08x}{parent:08x}"
    return made


def push(tempo: TempoDouble, *spans: dict[str, Any]) -> None:
    tempo.push({"resourceSpans": [{"resource": {"attributes": [attribute("service.name", "api")]},
                                   "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}]}]})


def evaluate(tempo: TempoDouble, **options: Any) -> WindowResult:
    async def run() -> WindowResult:
        async with TempoClient(TempoSettings(url=tempo.url, retries=0), backoff=0.0) as client:
            return await evaluate_window([RULE], client, *WINDOW, margin=600, latest=NOW, **options)

    return asyncio.run(run())


@pytest.fixture
def tempo() -> Iterator[TempoDouble]:
    with TempoDouble(now=lambda: NOW) as double:
        yield double


def violators(result: WindowResult) -> set[int]:
    return {int(v.trace_id, 16) for v in result.violations}


class TestProvisionalPass:
    def test_judged_traces_keep_their_spans_and_unfinished_ones_none(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 1, "GET /a"), span(1, 2, "pii.access", parent=1))  # whole
        push(tempo, span(2, 2, "pii.access", parent=1))  # its parent has not arrived
        push(tempo, span(3, 1, "GET /c"), span(3, 2, "pii.access", parent=1, ends=NOW - 10))  # recent
        result = evaluate(tempo, idle_since_ns=(NOW - 30) * 10**9)
        assert {1, 2, 3} == violators(result)
        # Only the spans the rule looks at (pii.access, audit.log) are kept: no other span can
        # change its verdict.
        assert {f"{1:032x}": frozenset({f"{1:08x}{2:08x}"}), f"{2:032x}": None, f"{3:032x}": None
                } == result.outcomes[0].judged


class TestFinalPass:
    def provisional(self, tempo: TempoDouble) -> Provisional:
        first = evaluate(tempo, idle_since_ns=(NOW - 30) * 10**9)
        return Provisional(first.outcomes[0].judged, frozenset(v.trace_id for v in first.violations))

    def test_unchanged_whole_traces_are_not_fetched_again(self, tempo: TempoDouble) -> None:
        for n in (1, 2, 3):
            push(tempo, span(n, 1, "GET /a"), span(n, 2, "pii.access", parent=1))
        before = self.provisional(tempo)
        tempo.clear_requests()
        result = evaluate(tempo, provisional={RULE.id: before})
        assert 0 == tempo.count("trace")
        assert {f"{n:032x}" for n in (1, 2, 3)} == result.outcomes[0].unchanged
        assert [] == result.violations  # their verdicts stand: the caller keeps them

    def test_a_grown_trace_is_fetched_and_judged_again(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 1, "GET /a"), span(1, 2, "pii.access", parent=1))
        push(tempo, span(2, 1, "GET /b"), span(2, 2, "pii.access", parent=1))
        before = self.provisional(tempo)
        push(tempo, span(1, 3, "audit.log", parent=1))  # a late part of trace 1: compliant now
        push(tempo, span(2, 3, "cache.get", parent=1))  # trace 2 grew, but no span the rule reads
        tempo.clear_requests()
        result = evaluate(tempo, provisional={RULE.id: before})
        assert {f"{2:032x}"} == result.outcomes[0].unchanged
        assert set() == violators(result)
        assert 1 == tempo.count("trace")

    def test_unfinished_traces_and_dropped_violators_are_fetched(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 2, "pii.access", parent=1))  # unfinished: no parent yet
        push(tempo, span(2, 1, "GET /b"), span(2, 2, "pii.access", parent=1))
        before = self.provisional(tempo)
        push(tempo, span(1, 1, "GET /a"))  # the parent arrives
        # trace 2's audit.log arrives in the same fragment as a copy of its root: the clear search
        # now matches it, so it is no longer a candidate, and is fetched to confirm the retraction.
        push(tempo, span(2, 1, "GET /b"), span(2, 3, "audit.log", parent=1),
             span(2, 4, "pii.access", parent=1))
        tempo.clear_requests()
        result = evaluate(tempo, provisional={RULE.id: before})
        assert {1} == violators(result)
        assert 2 == tempo.count("trace")

    def test_a_tempo_refusing_the_question_gets_every_trace_fetched(
            self, tempo: TempoDouble, monkeypatch: pytest.MonkeyPatch) -> None:
        # A Tempo without the trace:id/span:id intrinsics answers 400: never stuck, only dearer.
        for n in (1, 2):
            push(tempo, span(n, 1, "GET /a"), span(n, 2, "pii.access", parent=1))
        before = self.provisional(tempo)
        search_all = TempoClient.search_all

        async def refusing(client: TempoClient, query: str, start: int, end: int) -> set[str]:
            if "span:id" in query:
                raise TempoError("parse error", url=f"{tempo.url}/api/search", status=400)
            return await search_all(client, query, start, end)

        monkeypatch.setattr(TempoClient, "search_all", refusing)
        tempo.clear_requests()
        result = evaluate(tempo, provisional={RULE.id: before})
        assert set() == result.outcomes[0].unchanged
        assert {1, 2} == violators(result)
        assert 2 == tempo.count("trace")

    def test_a_late_trigger_is_a_new_candidate(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 1, "GET /a"))
        before = self.provisional(tempo)
        assert before.judged == {}
        push(tempo, span(1, 2, "pii.access", parent=1))
        assert {1} == violators(evaluate(tempo, provisional={RULE.id: before}))

    def test_one_search_asks_whether_anything_arrived(self, tempo: TempoDouble) -> None:
        for n in (1, 2):
            push(tempo, span(n, 1, "GET /a"), span(n, 2, "pii.access", parent=1))
        before = self.provisional(tempo)
        tempo.clear_requests()
        evaluate(tempo, provisional={RULE.id: before})
        searches = [r for r in tempo.requests if r.route == "search"]
        assert 1 == sum("span:id" in r.params.get("q", "") for r in searches)


AUTHORISED = load_text("rules:\n  - id: authorised\n    condition: |\n      when { pii.access }\n"
                       "      always { auth.check }\n", "r.yaml").rules[0]


class TestFinalPassOfSeveralRules:
    """Each rule's own provisional pass decides what it may skip; a trace is fetched once for all."""

    def evaluate_both(self, tempo: TempoDouble, **options: Any) -> dict[str, RuleOutcome]:
        async def run() -> WindowResult:
            async with TempoClient(TempoSettings(url=tempo.url, retries=0), backoff=0.0) as client:
                return await evaluate_window([RULE, AUTHORISED], client, *WINDOW, margin=600, latest=NOW,
                                             **options)

        return {o.rule.id: o for o in asyncio.run(run()).outcomes}

    def provisional(self, outcome: RuleOutcome) -> Provisional:
        return Provisional(outcome.judged, frozenset(v.trace_id for v in outcome.violations))

    def test_a_trace_whole_for_one_rule_only_is_skipped_for_that_rule_only(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 1, "GET /a"), span(1, 2, "pii.access", parent=1))
        first = self.evaluate_both(tempo, idle_since_ns=(NOW - 30) * 10**9)
        trace = f"{1:032x}"
        audited = self.provisional(first[RULE.id])
        authorised = Provisional({trace: None}, frozenset({trace}))  # unfinished when this rule judged it
        tempo.clear_requests()
        final = self.evaluate_both(tempo, provisional={RULE.id: audited, AUTHORISED.id: authorised})
        assert {trace} == final[RULE.id].unchanged
        assert set() == final[AUTHORISED.id].unchanged
        assert [trace] == [v.trace_id for v in final[AUTHORISED.id].violations]  # judged again
        assert 1 == tempo.count("trace")

    def test_a_span_only_one_rule_reads_makes_the_trace_judged_again(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 1, "GET /a"), span(1, 2, "pii.access", parent=1))
        first = self.evaluate_both(tempo, idle_since_ns=(NOW - 30) * 10**9)
        push(tempo, span(1, 3, "auth.check", parent=1))  # late: only `authorised` reads it
        tempo.clear_requests()
        before = {o.rule.id: self.provisional(o) for o in first.values()}
        final = self.evaluate_both(tempo, provisional=before)
        assert 1 == tempo.count("trace")  # once, for both rules
        assert [f"{1:032x}"] == [v.trace_id for v in final[RULE.id].violations]  # still no audit.log
        assert [] == final[AUTHORISED.id].violations  # retracted by its caller: it holds no more
        searches = [r.params["q"] for r in tempo.requests if "span:id" in r.params.get("q", "")]
        assert 1 == len(searches)  # one question for both rules, each with its names


class TestWholeTraceRules:
    """A rule reading a trace intrinsic can change its verdict on a late span of any name."""

    LONG = load_text("rules:\n  - id: long\n    condition: 'never { db.where(trace:duration > 1s) }'\n",
                     "r.yaml").rules[0]

    def evaluate(self, tempo: TempoDouble, **options: Any) -> RuleOutcome:
        async def run() -> WindowResult:
            async with TempoClient(TempoSettings(url=tempo.url, retries=0), backoff=0.0) as client:
                return await evaluate_window([self.LONG], client, *WINDOW, margin=600, latest=NOW, **options)

        return asyncio.run(run()).outcomes[0]

    def test_a_late_span_of_another_name_makes_the_trace_judged_again(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 1, "GET /a"), span(1, 2, "db", parent=1))
        first = self.evaluate(tempo, idle_since_ns=(NOW - 30) * 10**9)
        trace = f"{1:032x}"
        assert [] == first.violations
        assert frozenset({f"{1:08x}{1:08x}", f"{1:08x}{2:08x}"}) == first.judged[trace]  # every span
        push(tempo, span(1, 3, "cache.get", parent=1, at=NOW - 99, ends=NOW - 95))  # 5 s long now
        before = Provisional(first.judged, frozenset())
        final = self.evaluate(tempo, provisional={self.LONG.id: before})
        assert set() == final.unchanged
        assert [trace] == [v.trace_id for v in final.violations]


class TestUnseenSpans:
    def test_the_double_returns_exactly_the_traces_with_new_spans(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 1, "GET /a"), span(1, 2, "x", parent=1))
        push(tempo, span(0x100, 1, "GET /b"), span(0x100, 2, "x", parent=1))
        seen = {f"{n:032x}": frozenset({f"{n:08x}{1:08x}", f"{n:08x}{2:08x}"}) for n in (1, 0x100)}
        query = unseen_spans({frozenset({"GET /a", "GET /b", "x", "late"}): seen})
        assert '"1"' in query  # Tempo prints IDs without leading zeros: both forms are asked

        def found() -> set[str]:
            async def run() -> set[str]:
                async with TempoClient(TempoSettings(url=tempo.url, retries=0), backoff=0.0) as client:
                    return await client.search_all(query, NOW - 700, NOW)
            return {int(t, 16) for t in asyncio.run(run())}

        assert set() == found()
        push(tempo, span(1, 3, "ignored", parent=1))  # a name the rules do not read
        push(tempo, span(0x100, 3, "late", parent=1))
        assert {0x100} == found()

    def test_the_question_fills_each_request(self, tempo: TempoDouble) -> None:
        count = 150
        for n in range(1, count + 1):
            push(tempo, span(n, 1, "GET /a"), span(n, 2, "pii.access", parent=1))
        first = evaluate(tempo, idle_since_ns=(NOW - 30) * 10**9)
        before = Provisional(first.outcomes[0].judged, frozenset(v.trace_id for v in first.violations))
        tempo.clear_requests()
        unchanged = evaluate(tempo, provisional={RULE.id: before}).outcomes[0].unchanged
        assert {f"{n:032x}" for n in range(1, count + 1)} == unchanged
        asked = [r.params["q"] for r in tempo.requests if "span:id" in r.params.get("q", "")]
        one = len(str(httpx.QueryParams({"q": unseen_spans(
            {frozenset({"pii.access", "audit.log"}): {f"{7:032x}": frozenset({f"{7:08x}{2:08x}"})}})})))
        assert len(asked) <= -(-count * one // MAX_QUERY_BYTES) + 1  # about full requests, not halves
        assert all(len(str(httpx.QueryParams({"q": q}))) <= MAX_QUERY_BYTES for q in asked)

    def test_a_trace_too_big_to_list_is_fetched_again_instead(self, tempo: TempoDouble) -> None:
        push(tempo, span(1, 1, "GET /a"), span(1, 2, "pii.access", parent=1),
             *(span(1, n, "pii.access", parent=1) for n in range(3, MAX_SEEN_SPANS + 3)))
        push(tempo, span(2, 1, "GET /b"), span(2, 2, "pii.access", parent=1))
        first = evaluate(tempo, idle_since_ns=(NOW - 30) * 10**9)
        before = Provisional(first.outcomes[0].judged, frozenset(v.trace_id for v in first.violations))
        tempo.clear_requests()
        result = evaluate(tempo, provisional={RULE.id: before})
        assert {f"{2:032x}"} == result.outcomes[0].unchanged
        assert 1 == tempo.count("trace")
        assert {1} == violators(result)


class TestUnfinished:
    def test_an_absent_parent_or_a_recent_end(self) -> None:
        root = Span("t", "1", "root", start_ns=0, end_ns=10)
        child = Span("t", "2", "child", parent_span_id="1", start_ns=1, end_ns=5)
        orphan = Span("t", "3", "orphan", parent_span_id="9", start_ns=1, end_ns=5)
        assert not is_unfinished(Trace("t", [root, child]), idle_since_ns=10)
        assert is_unfinished(Trace("t", [root, orphan]), idle_since_ns=10)
        assert is_unfinished(Trace("t", [root, child]), idle_since_ns=9)
