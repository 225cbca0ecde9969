"""Tempo's protobuf answers: the same traces and pages as its JSON, and JSON still understood.

The recorded answers of a real Tempo (tempo-recordings/samples) pin the field numbers; the
double serves protobuf when asked, encoded from its own declarations of Tempo's messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from recordings import RECORDINGS, needs_recordings
from tempo_double import Fault, TempoDouble
from tempo_double import protobuf as double_protobuf

from checker.tempo.client import FetchedTrace, TempoClient
from checker.tempo.errors import TempoError
from checker.tempo.settings import TempoSettings
from checker.tempo.tempopb import PROTOBUF

if TYPE_CHECKING:
    from checker.traces.model import Trace

RECORDED = "37816bdd0a7309cb4a1252e4da70e672"  # the trace of the recorded trace-by-ID answers
Handler = Callable[[httpx.Request], httpx.Response]


def run(handler: Handler | None, coro: Callable[[TempoClient], Any], url: str = "http://tempo.test",
        **config: Any) -> Any:
    settings = TempoSettings(url=url, **config)
    transport = None if handler is None else httpx.MockTransport(handler)

    async def main() -> Any:
        async with TempoClient(settings, backoff=0.0, transport=transport) as client:
            return await coro(client)

    return asyncio.run(main())


def recorded(name: str) -> bytes:
    assert RECORDINGS is not None
    return (RECORDINGS / "samples" / name).read_bytes()


def serving(v2: httpx.Response, v1: httpx.Response | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/v2/"):
            return v2
        return v1 or httpx.Response(404)

    return handler


def spans(fetched: FetchedTrace) -> list[Any]:
    trace: Trace | None = fetched.trace
    assert trace is not None
    return list(trace.spans)


@needs_recordings
class TestRecordedAnswers:
    """Tempo's recorded protobuf answers decode to the trace its recorded JSON answers hold."""

    def test_v2(self) -> None:
        binary = run(serving(httpx.Response(200, content=recorded("trace_v2_protobuf.bin"),
                                            headers={"Content-Type": PROTOBUF})),
                     lambda c: c.fetch(RECORDED))
        text = run(serving(httpx.Response(200, content=recorded("trace_v2_json.json"),
                                          headers={"Content-Type": "application/json"})),
                   lambda c: c.fetch(RECORDED))
        assert (None, None) == (binary.partial, text.partial)
        assert spans(text) == spans(binary)
        assert len(spans(binary)) == 3

    def test_v1(self) -> None:
        binary = run(serving(httpx.Response(404, text="404 page not found"),
                             httpx.Response(200, content=recorded("trace_v1_protobuf.bin"),
                                            headers={"Content-Type": PROTOBUF})),
                     lambda c: c.fetch(RECORDED))
        text = run(serving(httpx.Response(404, text="404 page not found"),
                           httpx.Response(200, content=recorded("trace_v1_json.json"),
                                          headers={"Content-Type": "application/json"})),
                   lambda c: c.fetch(RECORDED))
        assert spans(text) == spans(binary)

    def test_the_double_answers_as_tempo_recorded(self) -> None:
        assert RECORDINGS is not None
        expected = run(serving(httpx.Response(200, content=recorded("trace_v2_json.json"),
                                              headers={"Content-Type": "application/json"})),
                       lambda c: c.fetch(RECORDED))
        with TempoDouble() as tempo:
            tempo.push(json.loads((RECORDINGS / "dataset.otlp.json").read_text()))
            fetched = run(None, lambda c: c.fetch(RECORDED), url=tempo.url)
            body = httpx.get(f"{tempo.url}/api/v2/traces/{RECORDED}", headers={"Accept": PROTOBUF}).content
        assert spans(expected) == spans(fetched)
        answer = double_protobuf.message("TraceByIDResponse")
        ours: Any = answer.FromString(body)
        tempos: Any = answer.FromString(recorded("trace_v2_protobuf.bin"))
        assert tempos.trace == ours.trace  # the same but for metrics.inspectedBytes


class TestProtobufAnswers:
    """Protobuf is asked for; JSON answers are still read; a bad binary answer is not believed."""

    def test_requests_ask_for_protobuf(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if request.url.path == "/api/search":
                return httpx.Response(200, json={"traces": [], "metrics": {}})
            return httpx.Response(200, json={"trace": {}, "metrics": {}})

        run(handler, lambda c: c.search_all("{ }", 0, 10))
        run(handler, lambda c: c.fetch(RECORDED))
        assert [PROTOBUF, PROTOBUF] == [r.headers["Accept"] for r in seen]

    def test_a_garbled_binary_answer_is_retried_then_reported(self) -> None:
        handler = serving(httpx.Response(200, content=b"\xff\xff\xff", headers={"Content-Type": PROTOBUF}))
        with pytest.raises(TempoError, match="not a protobuf TraceByIDResponse") as caught:
            run(handler, lambda c: c.fetch(RECORDED), retries=1)
        assert caught.value.retryable

    def test_a_binary_search_answer_without_metrics_is_not_believed(self) -> None:
        body = double_protobuf.search({"traces": [{"traceID": "abcd"}]})

        def handler(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=body, headers={"Content-Type": PROTOBUF})

        with pytest.raises(TempoError, match="no metrics object"):
            run(handler, lambda c: c.search_all("{ }", 0, 10), retries=0)

    def test_an_unfinished_binary_search_is_retried(self) -> None:
        with TempoDouble(now=lambda: 2_000_000_000) as tempo:
            tempo.push(_one_trace())
            tempo.inject(Fault(route="search", kind="incomplete_jobs"))
            ids = run(None, lambda c: c.search_all("{ }", 2_000_000_000 - 600, 2_000_000_000 - 60),
                      url=tempo.url)
            assert 2 == tempo.count("search")
        assert {"0" * 31 + "1"} == ids

    def test_a_partial_binary_trace_is_not_judged(self) -> None:
        with TempoDouble(max_bytes_per_trace=10) as tempo:
            tempo.push(_one_trace())
            fetched = run(None, lambda c: c.fetch("0" * 31 + "1"), url=tempo.url)
        assert fetched.partial is not None
        assert "trace exceeds max size" in fetched.partial

    def test_binary_answers_are_smaller(self) -> None:
        with TempoDouble(now=lambda: 2_000_000_000) as tempo:
            tempo.push(_one_trace())
            for accept in ("application/json", PROTOBUF):
                httpx.get(f"{tempo.url}/api/v2/traces/1", headers={"Accept": accept})
                httpx.get(f"{tempo.url}/api/search", headers={"Accept": accept},
                          params={"q": "{ }", "start": 2_000_000_000 - 600, "end": 2_000_000_000 - 60})
            trace_json, search_json, trace_binary, search_binary = (
                r.response_bytes for r in tempo.requests)
        assert trace_binary < trace_json / 2
        assert search_binary < search_json / 2


def _one_trace() -> dict[str, Any]:
    start = (2_000_000_000 - 100) * 1_000_000_000
    return {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "api"}}]}, "scopeSpans": [{"spans": [
            {"traceId": "0" * 31 + "1", "spanId": f"{n + 1:016x}", "name": f"step.{n}", "kind": 2,
             "startTimeUnixNano": str(start + n), "endTimeUnixNano": str(start + n + 1000),
             "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}]}
            for n in range(5)]}]}]}
