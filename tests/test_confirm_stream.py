"""Streaming confirmation: each candidate is fetched once, judged for every rule, then dropped.

Against the Tempo test double over real HTTP. How many traces are held at once is counted
with a ``Trace`` subclass whose instances report their own creation and collection.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

import pytest
from otlp_build import attribute
from tempo_double import TempoDouble

from checker.engine import Scanner
from checker.rules.load import load_text
from checker.tempo.client import FetchedTrace, TempoClient
from checker.tempo.run import WindowResult, evaluate_window
from checker.tempo.settings import TempoSettings
from checker.traces.model import Trace
from checker.traces.otlp import decode_request, group_traces

if TYPE_CHECKING:
    from collections.abc import Iterator

NOW = 2_000_000_000
WINDOW = (NOW - 120, NOW - 60)
TRACES = 40
RULES = load_text(
    "rules:\n"
    "  - id: audited\n    condition: |\n      when { pii.access }\n      always { audit.log }\n"
    "  - id: no-debug\n    condition: |\n      when { pii.access }\n      never { debug.dump }\n",
    "r.yaml").rules


def trace_spans(n: int) -> list[dict[str, Any]]:
    """Trace ``n``: pii.access, audited when even, dumped when divisible by 3."""
    names = ["pii.access", *(["audit.log"] if n % 2 == 0 else []), *(["debug.dump"] if n % 3 == 0 else [])]
    start = (NOW - 100) * 1_000_000_000
    return [{"traceId": f"{n + 1:032x}", "spanId": f"{n + 1:08x}{i:08x}", "name": name, "kind": 1,
             "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000)}
            for i, name in enumerate(names)]


@pytest.fixture
def tempo() -> Iterator[TempoDouble]:
    with TempoDouble(now=lambda: NOW) as double:
        for n in range(TRACES):
            double.push({"resourceSpans": [{
                "resource": {"attributes": [attribute("service.name", "api")]},
                "scopeSpans": [{"scope": {"name": "t"}, "spans": trace_spans(n)}]}]})
        yield double


class _Counted(Trace):
    """A trace that counts the live instances of its class."""

    live = 0
    peak = 0

    def __init__(self, trace: Trace) -> None:
        super().__init__(trace.trace_id, trace.spans)
        _Counted.live += 1
        _Counted.peak = max(_Counted.peak, _Counted.live)
        weakref.finalize(self, _Counted.collected)

    @staticmethod
    def collected() -> None:
        _Counted.live -= 1


class _CountingClient(TempoClient):
    """Hands out counted traces."""

    async def fetch(self, trace_id: str) -> FetchedTrace:
        fetched = await super().fetch(trace_id)
        assert fetched.trace is not None
        return FetchedTrace(trace_id, _Counted(fetched.trace), fetched.partial)


def evaluate(tempo: TempoDouble, concurrency: int,
             progress: list[tuple[int, int]] | None = None) -> tuple[WindowResult, int]:
    _Counted.live = _Counted.peak = 0

    async def run() -> tuple[WindowResult, int]:
        settings = TempoSettings(url=tempo.url, retries=0, concurrency=concurrency)
        async with _CountingClient(settings, backoff=0.0) as client:
            result = await evaluate_window(
                RULES, client, *WINDOW, margin=600, latest=NOW,
                on_fetched=None if progress is None else lambda done, total: progress.append((done, total)))
            return result, client.stats.fetches

    return asyncio.run(run())


class TestStreamingConfirmation:
    """Candidates are judged as they arrive, never all held."""

    @pytest.mark.parametrize("concurrency", [1, 3, 8])
    def test_traces_held_at_once_are_bounded_by_the_concurrency(self, tempo: TempoDouble,
                                                                 concurrency: int) -> None:
        evaluate(tempo, concurrency)
        assert 0 < _Counted.peak <= concurrency
        assert 0 == _Counted.live

    def test_each_candidate_is_fetched_once_and_judged_for_every_rule(self, tempo: TempoDouble) -> None:
        result, fetches = evaluate(tempo, 3)
        traces = [_local_trace(n) for n in range(TRACES)]
        expected = [(v.rule_id, v.trace_id) for rule in RULES for t in traces
                    for v in Scanner([rule]).check(t)]
        audited, no_debug = (outcome.candidates for outcome in result.outcomes)
        assert audited & no_debug  # some traces are candidates of both rules
        assert len(audited | no_debug) == fetches
        assert expected == [(v.rule_id, v.trace_id) for v in result.violations]
        assert [len(audited), len(no_debug)] == [outcome.in_scope for outcome in result.outcomes]
        # Each rule keeps what it judged, in trace ID order, for its own final pass.
        assert [sorted(audited), sorted(no_debug)] == [list(outcome.judged) for outcome in result.outcomes]

    def test_progress_counts_every_fetch(self, tempo: TempoDouble) -> None:
        progress: list[tuple[int, int]] = []
        evaluate(tempo, 4, progress)
        total = progress[-1][1]
        assert [(done, total) for done in range(1, total + 1)] == progress


def _local_trace(n: int) -> Trace:
    spans = decode_request({"resourceSpans": [{
        "resource": {"attributes": [attribute("service.name", "api")]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": trace_spans(n)}]}]})
    return next(iter(group_traces(spans)))
