"""Tempo client: status handling, retries, window splitting and trace decoding.

MockTransport, but the Tempo double over loopback for the adaptive page limits.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tempo_double import TempoDouble

from checker.cli import main
from checker.tempo.client import ClientStats, TempoClient
from checker.tempo.density import BYTES_PER_TRACE, MAX_QUERIES, RATES_KEPT, Density
from checker.tempo.errors import TempoError
from checker.tempo.settings import TempoSettings

if TYPE_CHECKING:
    from pathlib import Path

Handler = Callable[[httpx.Request], httpx.Response]
TRACE = "0000000000000000000000000000abcd"


def run(handler: Handler, coro: Callable[[TempoClient], Any], **config: Any) -> Any:
    settings = TempoSettings(url="http://tempo.test", **config)

    async def main() -> Any:
        async with TempoClient(settings, backoff=0.0, transport=httpx.MockTransport(handler)) as client:
            return await coro(client)

    return asyncio.run(main())


def search_body(ids: list[str], completed: int = 3, total: int = 3) -> dict[str, Any]:
    return {"traces": [{"traceID": i.lstrip("0")} for i in ids],
            "metrics": {"completedJobs": completed, "totalJobs": total}}


def sequence(*responses: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return handler, seen


class TestSearch:
    """Search requests carry integer seconds, and IDs come back padded to 32 hex."""

    def test_request_and_padding(self) -> None:
        handler, seen = sequence(httpx.Response(200, json=search_body([TRACE])))
        ids = run(handler, lambda c: c.search_all('{ name = "a" }', 100, 200), search_limit=50)
        assert {TRACE} == ids
        params = seen[0].url.params
        assert ("100", "200", "50", '{ name = "a" }') == (
            params["start"], params["end"], params["limit"], params["q"])

    def test_full_page_splits_the_window(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            start, end = int(request.url.params["start"]), int(request.url.params["end"])
            ids = [f"{t + 1:032x}" for t in range(start, end + 1)]  # one trace per second
            return httpx.Response(200, json=search_body(ids[:int(request.url.params["limit"])]))

        ids = run(handler, lambda c: c.search_all("{ }", 0, 16), search_limit=3)
        assert {f"{t + 1:032x}" for t in range(17)} == ids

    def test_unfinished_short_pages_are_retried_not_split(self) -> None:
        calls: list[tuple[str, str]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            p = request.url.params
            calls.append((p["start"], p["end"]))
            return httpx.Response(200, json=search_body([TRACE], 1 if len(calls) < 3 else 3, 3))

        assert {TRACE} == run(handler, lambda c: c.search_all("{ }", 0, 10))
        assert [("0", "10")] * 3 == calls

    def test_unfinished_full_pages_split(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            start, end = int(request.url.params["start"]), int(request.url.params["end"])
            ids = [f"{t + 1:032x}" for t in range(start, end + 1)]
            limit = int(request.url.params["limit"])
            full = len(ids) >= limit  # Tempo stops its jobs once it has the limit
            return httpx.Response(200, json=search_body(ids[:limit], 2 if full else 3, 3))

        ids = run(handler, lambda c: c.search_all("{ }", 0, 8), search_limit=3)
        assert {f"{t + 1:032x}" for t in range(9)} == ids

    def test_a_full_second_raises_the_limit(self) -> None:
        handler, seen = sequence(httpx.Response(200, json=search_body([TRACE, "1" * 32])))
        assert {TRACE, "1" * 32} == run(handler, lambda c: c.search_all("{ }", 0, 1), search_limit=2)
        assert ["2", "8"] == [r.url.params["limit"] for r in seen]

    def test_a_second_full_at_the_maximum_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("checker.tempo.client.MAX_SEARCH_LIMIT", 8)

        def handler(request: httpx.Request) -> httpx.Response:
            limit = int(request.url.params["limit"])
            return httpx.Response(200, json=search_body([f"{i + 1:032x}" for i in range(limit)]))

        with pytest.raises(TempoError, match="more than 8 traces"):
            run(handler, lambda c: c.search_all("{ }", 0, 1), search_limit=2)

    def test_long_windows_are_cut_to_168h(self) -> None:
        handler, seen = sequence(httpx.Response(200, json=search_body([])))
        run(handler, lambda c: c.search_all("{ }", 0, 200 * 3600))
        assert [("0", str(168 * 3600)), (str(168 * 3600), str(200 * 3600))] == [
            (r.url.params["start"], r.url.params["end"]) for r in seen]


class TestRetries:
    """429, 5xx, timeouts and broken connections retry; other 4xx fail at once with Tempo's words."""

    @pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
    def test_retryable_status(self, status: int) -> None:
        handler, seen = sequence(httpx.Response(status, text="job queue full"),
                                 httpx.Response(200, json=search_body([TRACE])))
        assert {TRACE} == run(handler, lambda c: c.search_all("{ }", 0, 10))
        assert 2 == len(seen)

    def test_gives_up_after_retries(self) -> None:
        handler, seen = sequence(httpx.Response(503, text="unavailable"))
        with pytest.raises(TempoError) as info:
            run(handler, lambda c: c.search_all("{ }", 0, 10), retries=2)
        assert 3 == len(seen)
        assert "http://tempo.test/api/search answered 503: unavailable" in str(info.value)
        assert info.value.retryable

    def test_bad_request_is_not_retried_and_shows_the_query(self) -> None:
        message = "invalid TraceQL query: parse error at line 1, col 9: syntax error: unexpected ="
        handler, seen = sequence(httpx.Response(400, text=message))
        with pytest.raises(TempoError) as info:
            run(handler, lambda c: c.search_all('{ name == "x" }', 0, 10))
        assert 1 == len(seen)
        assert message in str(info.value)
        assert 'query was: { name == "x" }' in str(info.value)
        assert not info.value.retryable

    def test_unauthorised_hints_at_tenant(self) -> None:
        handler, _ = sequence(httpx.Response(401, text="no org id"))
        with pytest.raises(TempoError, match="X-Scope-OrgID"):
            run(handler, lambda c: c.search_all("{ }", 0, 10))

    @pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
    def test_transport_errors_retry(self, exc: Exception) -> None:
        attempts: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            attempts.append(1)
            if len(attempts) == 1:
                raise exc
            return httpx.Response(200, json=search_body([TRACE]))

        assert {TRACE} == run(handler, lambda c: c.search_all("{ }", 0, 10))
        assert 2 == len(attempts)

    def test_garbage_is_retried_then_reported(self) -> None:
        handler, seen = sequence(httpx.Response(200, text="<html>oops"))
        with pytest.raises(TempoError, match="not JSON"):
            run(handler, lambda c: c.search_all("{ }", 0, 10), retries=1)
        assert 2 == len(seen)

    def test_headers(self) -> None:
        handler, seen = sequence(httpx.Response(200, json=search_body([])))
        run(handler, lambda c: c.search_all("{ }", 0, 10), tenant="acme", bearer_token="s3cret",
            headers={"X-Extra": "1"})
        headers = seen[0].headers
        assert ("acme", "Bearer s3cret", "1") == (
            headers["X-Scope-OrgID"], headers["Authorization"], headers["X-Extra"])

    def test_secrets_not_in_errors(self) -> None:
        handler, _ = sequence(httpx.Response(403, text="forbidden"))
        with pytest.raises(TempoError) as info:
            run(handler, lambda c: c.search_all("{ }", 0, 10), bearer_token="s3cret",
                username="u", password="pw-secret")
        assert "s3cret" not in str(info.value)
        assert "pw-secret" not in str(info.value)


def otlp_trace(span_name: str = "a") -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [
        {"traceId": "AAAAAAAAAAAAAAAAAACrzQ==", "spanId": "AAAAAAAAAAE=", "name": span_name,
         "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}


class TestFetch:
    """Trace by ID: v2 JSON with base64 IDs; not found; PARTIAL; v1 fallback."""

    def test_v2(self) -> None:
        handler, seen = sequence(httpx.Response(200, json={"trace": otlp_trace(), "metrics": {}}))
        fetched = run(handler, lambda c: c.fetch(TRACE))
        assert "/api/v2/traces/" + TRACE == seen[0].url.path
        assert fetched.trace is not None
        assert ["0000000000000001"] == [s.span_id for s in fetched.trace.spans]
        assert fetched.partial is None

    def test_v2_not_found(self) -> None:
        handler, _ = sequence(httpx.Response(200, json={"trace": {}, "metrics": {}}))
        assert run(handler, lambda c: c.fetch(TRACE)).trace is None

    def test_partial_is_surfaced(self) -> None:
        body = {"trace": otlp_trace(), "status": "PARTIAL", "message": "trace exceeds max size"}
        handler, _ = sequence(httpx.Response(200, json=body))
        partial = run(handler, lambda c: c.fetch(TRACE)).partial
        assert "returned only in part: trace exceeds max size" == partial

    def test_v1_fallback(self) -> None:
        v1 = json.dumps(otlp_trace()).replace("resourceSpans", "batches")
        handler, seen = sequence(httpx.Response(404, text="404 page not found"),
                                 httpx.Response(200, text=v1), httpx.Response(404))
        fetched = run(handler, lambda c: c.fetch(TRACE))
        assert fetched.trace is not None
        assert ["/api/v2/traces/" + TRACE, "/api/traces/" + TRACE] == [r.url.path for r in seen]

    def test_bad_trace_body(self) -> None:
        body = {"trace": {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "!!"}]}]}]}}
        handler, _ = sequence(httpx.Response(200, json=body))
        with pytest.raises(TempoError, match="not valid OTLP"):
            run(handler, lambda c: c.fetch(TRACE))


RECORDED_TAGS = {"scopes": [{"name": "resource", "tags": ["service.name"]},
                            {"name": "span", "tags": ["http.status_code", "user id"]},
                            {"name": "intrinsic", "tags": ["name"]}],
                 "metrics": {"inspectedBytes": "16048"}}  # tags_v2.json's shape, shortened


class TestTags:
    """Tag names and values: requests shaped as Tempo's API wants them, answers proven."""

    def test_names_of_one_scope(self) -> None:
        handler, seen = sequence(httpx.Response(200, json=RECORDED_TAGS))
        assert {"http.status_code", "user id"} == run(handler, lambda c: c.tag_names("span", 100, 200))
        assert "/api/v2/search/tags" == seen[0].url.path
        assert {"scope": "span", "start": "100", "end": "200"} == dict(seen[0].url.params)

    def test_a_scope_left_out_is_empty(self) -> None:
        handler, _ = sequence(httpx.Response(200, json={"metrics": {}}))
        assert frozenset() == run(handler, lambda c: c.tag_names("resource", 0, 10))

    def test_values_with_their_types_and_an_encoded_identifier(self) -> None:
        body = {"tagValues": [{"type": "string", "value": "GET"}, {"type": "int", "value": "200"}],
                "metrics": {"inspectedBytes": "1"}}
        handler, seen = sequence(httpx.Response(200, json=body))
        values = run(handler, lambda c: c.tag_values('span."user id"', 0, 10))
        assert {("string", "GET"), ("int", "200")} == values
        assert "/api/v2/search/tag/span.%22user%20id%22/values" == seen[0].url.raw_path.decode().split("?")[0]

    @pytest.mark.parametrize("body", [
        {}, {"scopes": []}, {"error": "upstream", "metrics": {}}, {"scopes": "span", "metrics": {}},
        {"scopes": [{"tags": ["a"]}], "metrics": {}},
        {"scopes": [{"name": "span", "tags": [1]}], "metrics": {}}, [], "ok",
    ])
    def test_unproven_names_are_retried_then_reported(self, body: Any) -> None:
        handler, seen = sequence(httpx.Response(200, json=body))
        with pytest.raises(TempoError, match="proxy answering instead of Tempo"):
            run(handler, lambda c: c.tag_names("span", 0, 10), retries=1)
        assert 2 == len(seen)

    @pytest.mark.parametrize("body", [{}, {"tagValues": ["GET"], "metrics": {}},
                                      {"tagValues": [{"type": "string", "value": 3}], "metrics": {}}])
    def test_unproven_values_are_reported(self, body: Any) -> None:
        handler, _ = sequence(httpx.Response(200, json=body))
        with pytest.raises(TempoError, match="tag values answer"):
            run(handler, lambda c: c.tag_values("name", 0, 10), retries=0)

    def test_values_without_metrics_are_read(self) -> None:
        """No real values answer is recorded: its own list proves it, metrics or not."""
        body = {"tagValues": [{"type": "string", "value": "GET"}]}
        handler, _ = sequence(httpx.Response(200, json=body))
        assert frozenset({("string", "GET")}) == run(handler, lambda c: c.tag_values("name", 0, 10))

    def test_old_tempo_is_a_final_404(self) -> None:
        handler, seen = sequence(httpx.Response(404, text="404 page not found"))
        with pytest.raises(TempoError) as info:
            run(handler, lambda c: c.tag_names("span", 0, 10))
        assert 1 == len(seen)
        assert (404, False) == (info.value.status, info.value.retryable)
        assert "http://tempo.test/api/v2/search/tags answered 404" in str(info.value)

    def test_secrets_not_in_errors(self) -> None:
        handler, _ = sequence(httpx.Response(400, text="bad tag for token s3cret"))
        with pytest.raises(TempoError) as info:
            run(handler, lambda c: c.tag_values("name", 0, 10), bearer_token="s3cret")
        assert "s3cret" not in str(info.value)


NOW = 2_000_000_000
DENSE = (NOW - 400, NOW - 100)  # 300 s holding 3,000 traces: 10 per second


def dense_double(traces: int = 3000, seconds: tuple[int, int] = DENSE) -> TempoDouble:
    """A double holding ``traces`` one-span traces spread evenly over ``seconds``."""
    double = TempoDouble(now=lambda: NOW)
    first, last = seconds
    step = (last - first) * 1_000_000_000 // traces
    spans = [{"traceId": f"{n + 1:032x}", "spanId": f"{n + 1:016x}", "name": "a",
              "startTimeUnixNano": str(first * 1_000_000_000 + n * step),
              "endTimeUnixNano": str(first * 1_000_000_000 + n * step + 1000)} for n in range(traces)]
    double.push({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]})
    return double


def searches_of(tempo: TempoDouble, coro: Callable[[TempoClient], Any], **config: Any) -> list[Any]:
    """What each ``coro`` answered, with the client's stats after each, one client for all."""

    async def main() -> list[Any]:
        settings = TempoSettings(url=tempo.url, retries=0, **config)
        async with TempoClient(settings, backoff=0.0) as client:
            answers = []
            for _ in range(2):
                client.stats = ClientStats()
                answers.append((await coro(client), client.stats))
            return answers

    return asyncio.run(main())


class TestAdaptiveLimits:
    """Page limits follow each query's density, so full (discarded) pages are rare."""

    def test_a_dense_window_costs_no_discarded_page_the_second_time(self) -> None:
        with dense_double() as tempo:
            (first, before), (second, after) = searches_of(
                tempo, lambda c: c.search_all('{ name = "a" }', *DENSE), search_limit=100)
        assert len(first) == 3000
        assert first == second
        assert before.full_pages >= 1
        assert before.searches > after.searches
        assert (1, 0) == (after.searches, after.full_pages)

    def test_a_later_window_starts_from_the_density_of_earlier_ones(self) -> None:
        with dense_double() as tempo:
            halves = iter([(DENSE[0], DENSE[0] + 150), (DENSE[0] + 150, DENSE[1])])
            (first, _), (second, after) = searches_of(
                tempo, lambda c: c.search_all('{ name = "a" }', *next(halves)), search_limit=100)
        assert len(first | second) == 3000
        assert (1, 0) == (after.searches, after.full_pages)

    def test_a_full_page_is_never_trusted_when_the_density_jumps(self) -> None:
        with dense_double(30, (NOW - 700, NOW - 400)) as sparse:
            dense = dense_double().start()
            try:
                async def main() -> tuple[set[str], set[str], ClientStats]:
                    async with TempoClient(TempoSettings(url=sparse.url, search_limit=20)) as client:
                        quiet = await client.search_all("{ }", NOW - 700, NOW - 400)
                    # The same density estimate, now facing a window a hundred times denser.
                    async with TempoClient(TempoSettings(url=dense.url, search_limit=20)) as other:
                        other.density = client.density
                        busy = await other.search_all("{ }", *DENSE)
                        return quiet, busy, other.stats

                quiet, busy, stats = asyncio.run(main())
            finally:
                dense.stop()
        assert (30, 3000) == (len(quiet), len(busy))
        assert stats.full_pages >= 1

    def test_answers_stay_within_the_byte_budget(self) -> None:
        with dense_double() as tempo:
            (ids, stats), _ = searches_of(tempo, lambda c: c.search_all("{ }", *DENSE),
                                          search_limit=100, max_search_bytes=BYTES_PER_TRACE * 150)
            limits = [int(r.params["limit"]) for r in tempo.requests]
        assert len(ids) == 3000
        assert stats.full_pages >= 1
        assert 150 == max(limits)  # max_search_bytes / BYTES_PER_TRACE

    def test_a_full_page_is_cut_in_as_many_parts_as_the_density_needs(self) -> None:
        limits: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            start, end = int(request.url.params["start"]), int(request.url.params["end"])
            ids = [f"{t + 1:032x}" for t in range(start, end + 1)]  # one trace per second
            limits.append(int(request.url.params["limit"]))
            return httpx.Response(200, json=search_body(ids[:limits[-1]]))

        ids = run(handler, lambda c: c.search_all("{ }", 0, 600),
                  search_limit=100, max_search_bytes=BYTES_PER_TRACE * 150)
        assert {f"{t + 1:032x}" for t in range(601)} == ids
        # The full first page shows at least 100 per 600 s, guessed 4 times over (0.67/s): six
        # parts of 100 s, each asked for twice the 67 expected (more once a part has answered),
        # and all 101 there fit. Cut in four, then four again, with a limit of 100 it took 21
        # searches.
        assert 100 == limits[0]
        assert 6 == len(limits[1:])
        assert all(134 <= limit <= 150 for limit in limits[1:])
    def test_an_answer_larger_than_budgeted_lowers_the_ceiling(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            start, end = int(request.url.params["start"]), int(request.url.params["end"])
            limit = int(request.url.params["limit"])
            traces = [{"traceID": f"{t + 1:x}", "rootServiceName": "s" * 2000} for t in range(start, end + 1)]
            return httpx.Response(200, json={"traces": traces[:limit],
                                             "metrics": {"completedJobs": 3, "totalJobs": 3}})

        async def main() -> tuple[set[str], ClientStats, int]:
            # 2 KB a trace, budgeted at 600 B: a page of 200 would be 400 KB.
            settings = TempoSettings(url="http://tempo.test", search_limit=10,
                                     max_search_bytes=BYTES_PER_TRACE * 200)
            async with TempoClient(settings, transport=httpx.MockTransport(handler)) as client:
                ids = await client.search_all("{ }", 0, 600)
                return ids, client.stats, client.density.ceiling

        ids, stats, ceiling = asyncio.run(main())
        assert {f"{t + 1:032x}" for t in range(601)} == ids
        assert stats.full_pages >= 1
        assert ceiling < 200

    def test_at_the_floor_an_answer_too_large_is_an_error(self) -> None:
        def handler(_request: httpx.Request) -> httpx.Response:
            traces = [{"traceID": f"{t + 1:x}", "rootServiceName": "s" * 2000} for t in range(50)]
            return httpx.Response(200, json={"traces": traces, "metrics": {}})

        with pytest.raises(TempoError, match=r"larger than tempo\.max_search_bytes"):
            run(handler, lambda c: c.search_all("{ }", 0, 600), search_limit=50,
                max_search_bytes=BYTES_PER_TRACE * 100)


class TestDensity:
    """The density estimate: limits within bounds, memory bounded."""

    def test_first_limit_is_the_floor(self) -> None:
        assert 100 == Density(100, 1000).limit("q", 60)

    def test_twice_the_expected_count_within_the_ceiling(self) -> None:
        density = Density(100, 1000)
        density.observe("q", 10, 50, full=False)  # 5 per second
        assert (600, 1000, 100) == (density.limit("q", 60), density.limit("q", 6000), density.limit("q", 1))

    def test_a_full_page_counts_as_more(self) -> None:
        density = Density(100, 1000)
        density.observe("q", 100, 100, full=True)  # at least 1 per second: taken as 4
        assert 800 == density.limit("q", 100)
        assert 1 == density.parts("q", 100, 100)  # one page can hold it: ask again for more
        assert (2, 4) == (density.parts("q", 100, 1000), density.parts("q", 500, 1000))

    def test_an_answer_too_large_halves_the_ceiling(self) -> None:
        density = Density(100, 1000)
        density.shrink(800)
        assert 400 == density.ceiling
        density.shrink(150)
        assert 100 == density.ceiling  # never below the floor

    def test_memory_is_bounded(self) -> None:
        density = Density(1, 10)
        for n in range(MAX_QUERIES + 10):
            for _ in range(RATES_KEPT + 5):
                density.observe(f"q{n}", 1, 1, full=False)
        assert MAX_QUERIES == len(density)
        assert 0 == density.rate("q0")


class TestSummary:
    """``scan --tempo`` says how many pages were full, since each was read for nothing."""

    def test_full_pages_are_counted(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        rules = tmp_path / "r.yaml"
        rules.write_text("rules:\n  - id: never-a\n    condition: |\n      never { a }\n")
        start, end = int(time.time()) - 400, int(time.time()) - 100  # the scan refuses future windows
        with dense_double(1000, (start, end)) as tempo:
            main(["scan", "--rules", str(rules), "--tempo", tempo.url, "--start", str(start),
                  "--end", str(end), "--query-end-cutoff", "0s", "--search-limit", "100",
                  "--trace-margin", "0s", "--format", "json"])
        err = capsys.readouterr().err
        assert re.search(r"\d+ searches \(\d+ full, searched again\), 1000 traces fetched", err), err
