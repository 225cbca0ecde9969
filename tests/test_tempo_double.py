"""Pin the Tempo test double to recordings of a real Tempo, so it cannot drift from the real thing.

Recording-based tests read shared/tempo-recordings (beside the repository, or at
/work/shared/tempo-recordings) and are skipped with a reason when it is absent. The fault,
window and clamp tests use small synthetic traces and always run. Everything goes over real
HTTP with httpx.
"""

from __future__ import annotations

import base64
import json
import math
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tempo_double import Fault, TempoDouble, parse_query
from tempo_double.traceql import TraceQLError

if TYPE_CHECKING:
    from collections.abc import Iterator


def _find_recordings() -> Path | None:
    """CI runs the repository in another folder with shared/ beside it."""
    for candidate in (Path(__file__).resolve().parents[2] / "shared" / "tempo-recordings",
                      Path("/work/shared/tempo-recordings")):
        if (candidate / "search-cases.jsonl").is_file():
            return candidate
    return None


RECORDINGS = _find_recordings()
needs_recordings = pytest.mark.skipif(
    RECORDINGS is None, reason="the Tempo recordings (shared/tempo-recordings) are not present")
SKIP_CASES = [pytest.param(None, id="no-recordings", marks=needs_recordings)]


def _load(name: str) -> Any:
    assert RECORDINGS is not None
    return json.loads((RECORDINGS / name).read_text(encoding="utf-8"))


def _sample(name: str) -> bytes:
    assert RECORDINGS is not None
    return (RECORDINGS / "samples" / name).read_bytes()


def _search_cases() -> list[Any]:
    if RECORDINGS is None:
        return SKIP_CASES
    lines = (RECORDINGS / "search-cases.jsonl").read_text(encoding="utf-8").splitlines()
    return [pytest.param(json.loads(line), id=f"{n:03d}") for n, line in enumerate(lines) if line.strip()]


def _fragment_cases() -> list[Any]:
    if RECORDINGS is None:
        return SKIP_CASES
    cases = _load("fragments/fragments.json")["cases"]
    return [pytest.param(case, id=f"{n}") for n, case in enumerate(cases)]


def _window(request: dict[str, Any]) -> tuple[int, int]:
    """A whole-second window covering every span of an OTLP request."""
    spans = [s for rs in request["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    start = min(int(s["startTimeUnixNano"]) for s in spans) // 1_000_000_000 - 1
    end = math.ceil(max(int(s["endTimeUnixNano"]) for s in spans) / 1_000_000_000) + 1
    return start, end


def _ids(body: dict[str, Any]) -> list[str]:
    return sorted(trace["traceID"].zfill(32) for trace in body.get("traces", []))


def _without_inspected_bytes(body: Any) -> Any:
    """inspectedBytes depends on Tempo's storage; everything else must be identical."""
    body = json.loads(json.dumps(body))
    if isinstance(body.get("metrics"), dict):
        inspected = body["metrics"].pop("inspectedBytes", "0")
        assert isinstance(inspected, str)
        assert inspected.isdigit()
    return body


# ------------------------------------------------------------------ synthetic data


def _span(trace_id: str, span_id: str, name: str, start: int, *, parent: str = "",
          attributes: list[dict[str, Any]] | None = None, duration: int = 1_000_000) -> dict[str, Any]:
    span: dict[str, Any] = {"traceId": trace_id, "spanId": span_id, "name": name, "kind": 1,
                            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + duration),
                            "attributes": attributes or []}
    if parent:
        span["parentSpanId"] = parent
    return span


def _push_request(*spans: dict[str, Any], service: str = "svc") -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}]}]}


NOW = 2_000_000_000  # fake clock for synthetic tests (unix seconds)


def _trace(n: int, start_s: int, *, name: str = "op") -> dict[str, Any]:
    """A two-span trace ``n`` starting at ``start_s``."""
    trace_id = f"{n:032x}"
    root = _span(trace_id, f"{n:08x}00000001", "root", start_s * 1_000_000_000)
    child = _span(trace_id, f"{n:08x}00000002", name, start_s * 1_000_000_000 + 1000, parent=root["spanId"])
    return _push_request(root, child)


@pytest.fixture
def synthetic() -> Iterator[tuple[TempoDouble, httpx.Client]]:
    """Ten traces, one second apart, ending a minute before NOW; query_end_cutoff 30 s."""
    with TempoDouble(now=lambda: NOW, query_end_cutoff=30) as double, _client(double) as client:
        for n in range(1, 11):
            double.push(_trace(n, NOW - 70 + n, name="even" if n % 2 == 0 else "odd"))
        yield double, client


def _client(double: TempoDouble) -> httpx.Client:
    """Plain HTTP on loopback: no TLS context to build (50 ms each), no proxy from the environment."""
    return httpx.Client(base_url=double.url, timeout=5, verify=False, trust_env=False)  # noqa: S501


def _search(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get("/api/search", params=params)


# --------------------------------------------------------------- recorded searches


@pytest.fixture(scope="module")
def dataset() -> Iterator[tuple[TempoDouble, httpx.Client, tuple[int, int]]]:
    """dataset.otlp.json in one push; the clock stands a minute after its last span."""
    request = _load("dataset.otlp.json")
    window = _window(request)
    with TempoDouble(now=lambda: window[1] + 60) as double, _client(double) as client:
        double.push(request)
        yield double, client, window


@pytest.mark.parametrize("case", _search_cases())
def test_recorded_search_case(dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]],
                              case: dict[str, Any]) -> None:
    _, client, (start, end) = dataset
    response = _search(client, q=case["q"], limit=10000, spss=100, start=start, end=end)
    if case["status"] == 200:
        assert response.status_code == 200, response.text
        assert _ids(response.json()) == case["trace_ids"]
    else:
        assert response.status_code == 400
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.text.startswith("invalid TraceQL query:")
        assert response.text == case["error"]


@pytest.mark.parametrize("case", _fragment_cases())
def test_recorded_fragment_case(case: dict[str, Any]) -> None:
    recording = _load("fragments/fragments.json")
    window = recording["search_window"]
    with TempoDouble(now=lambda: window["end"] + 60) as double, _client(double) as client:
        for push in recording["pushes"]:
            double.push(push)
        response = _search(client, q=case["q"], limit=10000, spss=100,
                           start=window["start"], end=window["end"])
        assert response.status_code == case["status"]
        assert _ids(response.json()) == case["trace_ids"]


@needs_recordings
def test_fragments_merge_for_trace_by_id_and_after_compaction() -> None:
    recording = _load("fragments/fragments.json")
    split = next(tid for tid, label in recording["labels"].items() if label == "split")
    window = recording["search_window"]
    with TempoDouble(now=lambda: window["end"] + 60) as double, _client(double) as client:
        for push in recording["pushes"]:
            double.push(push)
        assert double.fragment_count(split) == 2
        trace = client.get(f"/api/v2/traces/{split}").json()["trace"]
        spans = [s for rs in trace["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        assert len(spans) == recording["trace_by_id_split"]["spans"]
        double.compact()
        assert double.fragment_count(split) == 1
        query = '{ name = "pii.access" } && { name = "audit.log" }'
        found = _search(client, q=query, limit=100, start=window["start"], end=window["end"]).json()
        assert split in _ids(found)


def test_a_late_part_is_a_fragment_no_earlier_search_could_see() -> None:
    """As Tempo does: the part pushed later is stored as a second fragment; a search made before
    it arrived cannot see it, one made after sees it on its own (per-fragment ``&&``), and the
    trace by ID is both parts."""
    trace_id = f"{0x77:032x}"
    second = 1_000_000_000
    root = _span(trace_id, "0700000000000001", "GET /patients", (NOW - 100) * second)
    access = _span(trace_id, "0700000000000002", "pii.access", (NOW - 99) * second, parent=root["spanId"])
    audit = _span(trace_id, "0700000000000003", "audit.log", (NOW - 98) * second, parent=root["spanId"])
    both = '{ name = "pii.access" } && { name = "audit.log" }'
    with TempoDouble(now=lambda: NOW) as double, _client(double) as client:
        double.push(_push_request(root, access))
        before = _ids(_search(client, q='{ name = "audit.log" }', start=NOW - 200, end=NOW).json())
        double.push(_push_request(audit))
        after = _ids(_search(client, q='{ name = "audit.log" }', start=NOW - 200, end=NOW).json())
        assert ([], [trace_id]) == (before, after)
        assert [] == _ids(_search(client, q=both, start=NOW - 200, end=NOW).json())
        assert 2 == double.fragment_count(trace_id)
        batches = client.get(f"/api/traces/{trace_id}").json()["batches"]
        assert 3 == sum(len(ss["spans"]) for rs in batches for ss in rs["scopeSpans"])


# ---------------------------------------------------------------- response shapes


@needs_recordings
@pytest.mark.parametrize("name", ["search_limit_none_hit", "search_pii_and_audit", "search_no_window"])
def test_search_response_equals_recording(dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]],
                                          name: str) -> None:
    _, client, _ = dataset
    meta = _load("samples/index.json")[name]
    response = _search(client, **meta["request"])
    assert response.status_code == meta["status"]
    assert response.headers["content-type"] == meta["content_type"]
    recorded = json.loads(_sample(meta["file"]))
    assert _without_inspected_bytes(response.json()) == _without_inspected_bytes(recorded)


@needs_recordings
def test_search_response_typing(dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]]) -> None:
    _, client, (start, end) = dataset
    body = _search(client, q='{ name = "payment.charge_card" }', limit=10000, start=start, end=end).json()
    recorded = json.loads(_sample("search_limit_all.json"))
    assert set(body) == set(recorded) == {"traces", "metrics"}
    stripped = [t["traceID"] for t in body["traces"] if len(t["traceID"]) < 32]
    assert stripped, "the dataset has trace IDs with leading zeros; Tempo strips them"
    assert all(not tid.startswith("0") for tid in stripped)
    for trace in body["traces"]:
        assert isinstance(trace["startTimeUnixNano"], str)
        assert isinstance(trace["durationMs"], int)
        assert trace["spanSet"] == trace["spanSets"][0]
        for span in trace["spanSet"]["spans"]:
            assert len(span["spanID"]) == 16
            assert isinstance(span["startTimeUnixNano"], str)
            assert isinstance(span["durationNanos"], str)
    assert isinstance(body["metrics"]["inspectedBytes"], str)
    assert body["metrics"]["completedJobs"] == body["metrics"]["totalJobs"]
    starts = [int(t["startTimeUnixNano"]) for t in body["traces"]]
    assert starts == sorted(starts, reverse=True)


@needs_recordings
@pytest.mark.parametrize("limit", [3, 5])
def test_limit_cut_is_an_arbitrary_incomplete_subset(limit: int) -> None:
    request = _load("dataset.otlp.json")
    start, end = _window(request)
    query = '{ name = "payment.charge_card" }'
    subsets = []
    for seed in range(4):
        with TempoDouble(now=lambda: end + 60, seed=seed) as double, _client(double) as client:
            double.push(request)
            everything = _search(client, q=query, limit=10000, start=start, end=end).json()["traces"]
            body = _search(client, q=query, limit=limit, start=start, end=end).json()
            newest = _search(client, q=f"{query} with (most_recent=true)", limit=limit,
                             start=start, end=end).json()
        assert len(body["traces"]) == limit
        assert body["metrics"]["completedJobs"] < body["metrics"]["totalJobs"]
        assert set(_ids(body)) <= set(_ids({"traces": everything}))
        starts = [int(t["startTimeUnixNano"]) for t in body["traces"]]
        assert starts == sorted(starts, reverse=True)
        assert [t["traceID"] for t in newest["traces"]] == [t["traceID"] for t in everything[:limit]]
        subsets.append(_ids(body))
    assert any(ids != _ids({"traces": everything[:limit]}) for ids in subsets), "a cut must not be the newest"


@needs_recordings
@pytest.mark.parametrize("name", ["trace_v1_json", "trace_v2_json"])
def test_trace_by_id_equals_recording(dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]],
                                      name: str) -> None:
    _, client, _ = dataset
    meta = _load("samples/index.json")[name]
    response = client.get(meta["request"])
    assert response.status_code == 200
    assert response.headers["content-type"] == meta["content_type"]
    body = response.json()
    assert _without_inspected_bytes(body) == _without_inspected_bytes(json.loads(_sample(meta["file"])))
    batches = body.get("batches") or body["trace"]["resourceSpans"]
    trace_id = meta["request"].rsplit("/", 1)[1]
    for span in (s for rs in batches for ss in rs["scopeSpans"] for s in ss["spans"]):
        assert base64.b64decode(span["traceId"]).hex() == trace_id
        assert len(base64.b64decode(span["spanId"])) == 8


@needs_recordings
@pytest.mark.parametrize("name", ["trace_v1_missing", "trace_v2_missing", "trace_bad_id",
                                  "search_bad_query", "search_bad_window"])
def test_error_answers_equal_recording(dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]],
                                       name: str) -> None:
    _, client, _ = dataset
    meta = _load("samples/index.json")[name]
    request = meta["request"]
    response = _search(client, **request) if isinstance(request, dict) else client.get(request)
    assert response.status_code == meta["status"]
    assert response.headers.get("content-type") == meta["content_type"]
    if meta["content_type"] == "application/json":
        assert response.json() == json.loads(_sample(meta["file"]))
    else:
        assert response.content == _sample(meta["file"])


@needs_recordings
def test_trace_id_forms(dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]]) -> None:
    _, client, _ = dataset
    stripped = "40443c233eb0fddd88dbdd1cfec1b32"  # 31 hex digits: odd length is left-padded
    assert client.get(f"/api/v2/traces/{stripped}").json()["trace"]["resourceSpans"]
    assert client.get(f"/api/traces/{stripped.upper()}").status_code == 200
    too_long = client.get("/api/v2/traces/" + "a" * 33)
    assert (too_long.status_code, too_long.text) == (400, "trace IDs can't be larger than 128 bits")
    base64_id = client.get("/api/v2/traces/N4Fr3QpzCctKElLk2nDmcg==")
    assert base64_id.status_code == 400
    assert base64_id.text == "trace IDs can only contain hex characters: invalid character 'N' at position 1"


@needs_recordings
def test_tag_names_equal_recording(dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]]) -> None:
    """Every scope, names sorted, intrinsics as Tempo 3.1 lists them; the default window."""
    _, client, _ = dataset
    meta = _load("samples/index.json")["tags_v2"]
    response = client.get(meta["request"])
    assert response.status_code == meta["status"]
    assert response.headers["content-type"] == meta["content_type"]
    recorded = json.loads(_sample(meta["file"]))
    assert _without_inspected_bytes(response.json()) == _without_inspected_bytes(recorded)


@needs_recordings
def test_tag_names_of_one_scope_are_that_scope_of_the_recording(
        dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]]) -> None:
    _, client, (start, end) = dataset
    recorded = {s["name"]: s for s in json.loads(_sample("tags_v2.json"))["scopes"]}
    for scope in ("span", "resource", "intrinsic"):
        response = client.get("/api/v2/search/tags", params={"scope": scope, "start": start, "end": end})
        assert [recorded[scope]] == response.json()["scopes"]
    refused = client.get("/api/v2/search/tags", params={"scope": "spam"})
    assert (400, "invalid scope: spam") == (refused.status_code, refused.text)


@needs_recordings
def test_tag_values_come_from_the_stored_spans(
        dataset: tuple[TempoDouble, httpx.Client, tuple[int, int]]) -> None:
    _, client, (start, end) = dataset
    window = {"start": start, "end": end}

    def values(identifier: str) -> list[Any]:
        path = f"/api/v2/search/tag/{urllib.parse.quote(identifier, safe='')}/values"
        response = client.get(path, params=window)
        assert response.status_code == 200, response.text
        assert isinstance(response.json()["metrics"], dict)
        return response.json().get("tagValues", [])  # left out when empty

    names = {v["value"] for v in values("name")}
    assert {"pii.access", "audit.log"} <= names
    assert {"type": "string", "value": "pii.access"} in values("name")
    services = values("resource.service.name")
    assert services == values('resource."service.name"') == values(".service.name")
    assert services
    assert all(v["type"] == "string" for v in services)
    assert [] == values("span.service.name")
    assert {"int", "float"} <= {v["type"] for v in values("span.amount")}
    refused = client.get("/api/v2/search/tag/%7B%7D/values")
    assert refused.status_code == 400
    assert refused.text.startswith("please provide a valid tagName")


# ------------------------------------------------------------- window and limits


def test_window_errors(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    _, client = synthetic
    cases: list[tuple[dict[str, Any], str]] = [
        ({"start": NOW - 10, "end": NOW - 100},
         f"http parameter start must be before end. received start={NOW - 10} end={NOW - 100}"),
        ({"start": NOW - 100}, f"http parameter start must be before end. received start={NOW - 100} end=0"),
        ({"start": NOW - 169 * 3600, "end": NOW - 100},
         ("range specified by start and end exceeds 168h0m0s. "
          f"received start={NOW - 169 * 3600} end={NOW - 100}")),
        ({"start": f"{NOW}000000000", "end": NOW},
         f'invalid start: strconv.ParseUint: parsing "{NOW}000000000": value out of range'),
        ({"start": "yesterday", "end": NOW},
         'invalid start: strconv.ParseUint: parsing "yesterday": invalid syntax'),
        ({"limit": 0}, "invalid limit: must be a positive number"),
        ({"limit": 300000}, "limit 300000 exceeds max limit 262144"),
        ({"spss": 101}, "spans per span set exceeds 100. received 101"),
    ]
    for params, message in cases:
        response = _search(client, q="{ }", **params)
        assert (response.status_code, response.text) == (400, message), params
        assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_default_window_and_limit(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    double, client = synthetic
    old = _trace(99, NOW - 3600)
    double.push(old)
    body = _search(client, q="{ }").json()  # no window: [now-15m, now-cutoff], limit 20
    assert _ids(body) == [f"{n:032x}" for n in range(1, 11)]
    assert len(_search(client, q="{ }", limit=4).json()["traces"]) == 4
    with TempoDouble(now=lambda: NOW, default_limit=3) as small, _client(small) as other:
        for n in range(1, 6):
            small.push(_trace(n, NOW - 100 + n))
        assert len(_search(other, q="{ }").json()["traces"]) == 3


def test_query_end_cutoff_clamps_the_end(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    double, client = synthetic
    recent = _trace(50, NOW - 10)  # inside the 30 s cutoff
    double.push(recent)
    everything = _ids(_search(client, q="{ }", start=NOW - 600, end=NOW).json())
    assert f"{50:032x}" not in everything
    assert len(everything) == 10
    # "the last 20 s": end clamps to now-30 s, before start, so start falls back to now-15 min
    last_seconds = _search(client, q="{ }", start=NOW - 20, end=NOW).json()
    assert _ids(last_seconds) == everything
    with TempoDouble(now=lambda: NOW) as no_cutoff, _client(no_cutoff) as other:
        no_cutoff.push(recent)
        assert _ids(_search(other, q="{ }", start=NOW - 20, end=NOW).json()) == [f"{50:032x}"]


def test_window_overlap_is_inclusive(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    _, client = synthetic
    first_start = NOW - 69  # trace 1 spans [NOW-69 s, NOW-69 s + 1 ms]
    assert f"{1:032x}" in _ids(_search(client, q="{ }", start=first_start - 5, end=first_start).json())
    before = _search(client, q="{ }", start=first_start - 5, end=first_start - 1).json()
    assert f"{1:032x}" not in _ids(before)


def test_a_search_inspects_the_columns_it_reads_not_whole_rows() -> None:
    """One attribute reads fewer bytes than three, and both less than the stored rows."""
    attributes = [{"key": key, "value": {"stringValue": value * 10}}
                  for key, value in (("user.id", "u"), ("tenant", "t"), ("region", "r"), ("other", "o"))]
    with TempoDouble(now=lambda: NOW) as double, _client(double) as client:
        start = (NOW - 100) * 1_000_000_000
        for n in range(1, 21):
            spans = [_span(f"{n:032x}", f"{n:08x}{i:08x}", "op", start, attributes=attributes)
                     for i in range(1, 6)]
            double.push(_push_request(*spans))
        inspected = []
        for query in ('{ span.user.id = "x" }',
                      '{ span.user.id = "x" && span.tenant = "y" && span.region = "z" }'):
            body = _search(client, q=query, start=NOW - 200, end=NOW - 10).json()
            inspected.append(int(body["metrics"]["inspectedBytes"]))
        assert [r.inspected_bytes for r in double.requests] == inspected
        assert 0 < inspected[0] < inspected[1] < double.stored_bytes
        # A column is read once however often the query names it (the final pass's question).
        queries = ('{ span:id != "a" }', '{ span:id != "a" && span:id != "b" && span:id != "c" }')
        bodies = [_search(client, q=q, start=NOW - 200, end=NOW - 10).json() for q in queries]
        once, often = (int(body["metrics"]["inspectedBytes"]) for body in bodies)
        assert once == often


def test_spans_per_spanset(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    double, client = synthetic
    trace_id = f"{77:032x}"
    spans = [_span(trace_id, f"{i:016x}", f"s{i}", (NOW - 100) * 1_000_000_000 + i) for i in range(1, 7)]
    double.push(_push_request(*spans))
    for spss, shown in ((0, 3), (1, 1), (5, 5), (100, 6)):
        body = _search(client, q="{ } | count() > 5", spss=spss, start=NOW - 200, end=NOW - 40).json()
        spanset = body["traces"][0]["spanSet"]
        assert (len(spanset["spans"]), spanset["matched"]) == (shown, 6)


def test_unsupported_queries_are_refused_not_empty(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    _, client = synthetic
    for query in ["{ span.a + 1 > 2 }", "{ event:timeSinceStart > 1s }", "{ parent.span.x = 1 }",
                  "{ } | rate()", '{ status = "error" }', "({ } | count()) > ({ } | count())"]:
        response = _search(client, q=query)
        assert response.status_code == 400, query
        assert response.text.startswith("invalid TraceQL query: "), query


def test_events_are_kept_in_the_trace_and_the_event_scope(family: httpx.Client) -> None:
    """Fetched traces carry the events (the checker judges rules on them), and tags list them."""
    trace = family.get(f"/api/v2/traces/{5:032x}").json()["trace"]
    spans = [span for rs in trace["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]
    events = next(span["events"] for span in spans if span["name"] == "a")
    assert ["exception", "log"] == [event["name"] for event in events]
    window = {"start": NOW - 1000, "end": NOW}
    names = family.get("/api/v2/search/tags", params={"scope": "event", **window}).json()
    assert [{"name": "event", "tags": ["exception.type"]}] == names["scopes"]
    values = family.get("/api/v2/search/tag/event.exception.type/values", params=window).json()
    assert [{"type": "string", "value": "A"}, {"type": "string", "value": "B"}] == values["tagValues"]


# ----------------------------------------------------------------------- faults


def test_status_fault_is_used_once_then_gone(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    double, client = synthetic
    double.inject(Fault(route="search", status=503, body="try later"))
    failed = _search(client, q="{ }")
    assert (failed.status_code, failed.text) == (503, "try later")
    assert failed.headers["content-type"] == "text/plain; charset=utf-8"
    assert _search(client, q="{ }").status_code == 200
    assert [r.fault for r in double.requests] == ["status", None]


def test_faults_are_fifo_per_route_and_counted(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    double, client = synthetic
    double.inject(Fault(route="trace", status=500, times=2))
    double.inject(Fault(route="any", status=429, retry_after=2))
    busy = _search(client, q="{ }")  # the trace fault does not match a search
    assert (busy.status_code, busy.text, busy.headers["retry-after"]) == (429, "job queue full", "2")
    trace_path = f"/api/v2/traces/{1:032x}"
    assert [client.get(trace_path).status_code for _ in range(3)] == [500, 500, 200]
    assert double.count("search") == 1
    assert double.count("trace") == 3
    assert all(r.response_bytes > 0 for r in double.requests)


def test_truncated_and_invalid_json_faults(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    double, client = synthetic
    real = _search(client, q="{ }").content
    double.inject(Fault(route="search", kind="truncated_json"))
    truncated = _search(client, q="{ }")
    assert truncated.status_code == 200
    assert truncated.content == real[: len(real) // 2]
    with pytest.raises(json.JSONDecodeError):
        truncated.json()
    double.inject(Fault(route="trace", kind="invalid_json"))
    broken = client.get(f"/api/v2/traces/{1:032x}")
    assert (broken.status_code, broken.content) == (200, b"<html>oops")


def test_timeout_fault_delays_the_answer(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    double, client = synthetic
    double.inject(Fault(route="search", kind="timeout", delay=0.5))
    with pytest.raises(httpx.ReadTimeout):
        client.get("/api/search", params={"q": "{ }"}, timeout=0.1)
    with _client(double) as patient:
        double.inject(Fault(route="search", kind="timeout", delay=0.2))
        assert patient.get("/api/search", params={"q": "{ }"}).status_code == 200


def test_incomplete_jobs_fault(synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    double, client = synthetic
    full = _search(client, q="{ }").json()
    double.inject(Fault(route="search", kind="incomplete_jobs"))
    partial = _search(client, q="{ }").json()
    assert partial["metrics"]["completedJobs"] < partial["metrics"]["totalJobs"]
    assert len(partial["traces"]) < len(full["traces"])
    assert set(_ids(partial)) <= set(_ids(full))


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="route"):
        Fault(route="metrics")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay"):
        Fault(kind="timeout")


# ------------------------------------------------------------------ trace by ID


def test_trace_size_limit_gives_partial_v2_and_422_v1() -> None:
    with TempoDouble(now=lambda: NOW, max_bytes_per_trace=400) as double, \
            _client(double) as client:
        double.push(_trace(1, NOW - 100))
        v2 = client.get(f"/api/v2/traces/{1:032x}").json()
        assert v2["status"] == "PARTIAL"
        assert v2["message"]
        spans = [s for rs in v2["trace"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        assert len(spans) == 1
        v1 = client.get(f"/api/traces/{1:032x}")
        assert (v1.status_code, v1.text) == (422, "trace exceeds max size")


def test_trace_by_id_merges_pushes_and_renders_status_and_kind() -> None:
    trace_id = "00000000000000000123456789abcdef"
    root = _span(trace_id, "0600000000000001", "req", (NOW - 100) * 1_000_000_000)
    root["kind"] = 2
    root["status"] = {"code": 2, "message": "boom"}
    root["attributes"] = [{"key": "http.status_code", "value": {"intValue": 500}}]
    late = _span(trace_id, "0600000000000002", "audit.log", (NOW - 96) * 1_000_000_000, parent=root["spanId"])
    with TempoDouble(now=lambda: NOW) as double, _client(double) as client:
        double.push(_push_request(root))
        double.push(_push_request(late))
        batches = client.get(f"/api/traces/{trace_id}").json()["batches"]
        spans = [s for rs in batches for ss in rs["scopeSpans"] for s in ss["spans"]]
        assert [s["name"] for s in spans] == ["req", "audit.log"]
        assert spans[0]["kind"] == "SPAN_KIND_SERVER"
        assert spans[0]["status"] == {"message": "boom", "code": "STATUS_CODE_ERROR"}
        assert spans[0]["attributes"][0]["value"] == {"intValue": "500"}
        assert "parentSpanId" not in spans[0]
        assert base64.b64decode(spans[1]["parentSpanId"]).hex() == "0600000000000001"
        assert spans[1]["status"] == {}
        found = _search(client, q="{ }", start=NOW - 200, end=NOW).json()["traces"]
        assert found[0]["traceID"] == "123456789abcdef"


# ----------------------------------------------------------- TraceQL semantics


@pytest.fixture(scope="module")
def family() -> Iterator[httpx.Client]:
    """A double holding ``_family()``; the semantics tests only read."""
    with TempoDouble(now=lambda: NOW) as double, _client(double) as client:
        double.push(_family())
        yield client


def _event(name: str, **attributes: str) -> dict[str, Any]:
    return {"name": name, "timeUnixNano": "1",
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]}


def _family() -> dict[str, Any]:
    """root → a → b, root → c; service ``svc``; b has tags [x, y] and a duration of 2 s.

    a has two events: an ``exception`` of type A, and a ``log`` with ``exception.type`` B.
    """
    trace_id = f"{5:032x}"
    t0 = (NOW - 100) * 1_000_000_000
    array = {"values": [{"stringValue": "x"}, {"stringValue": "y"}]}
    tags = [{"key": "tags", "value": {"arrayValue": array}},
            {"key": "note", "value": {"stringValue": "é\n"}}]
    a = _span(trace_id, "0000000000000002", "a", t0 + 1, parent="0000000000000001")
    a["events"] = [_event("exception", **{"exception.type": "A"}), _event("log", **{"exception.type": "B"})]
    return _push_request(
        _span(trace_id, "0000000000000001", "root", t0, duration=3_000_000_000),
        a,
        _span(trace_id, "0000000000000003", "b", t0 + 2, parent="0000000000000002", attributes=tags,
              duration=2_000_000_000),
        _span(trace_id, "0000000000000004", "c", t0 + 3, parent="0000000000000001"),
    )


@pytest.mark.parametrize(("query", "hit"), [
    ('{ name = "b" } < { name = "a" }', True),
    ('{ name = "a" } < { name = "b" }', False),
    ('{ name = "b" } !< { name = "root" }', True),
    ('{ name = "a" } &~ { name = "c" }', True),
    ('{ name = "b" } << { name = "root" }', True),
    ('{ name = "b" } ~ { name = "c" }', False),
    ('{ span.tags != "x" }', True),
    ('{ span.tags !~ "x|y" }', False),
    ("{ span.tags = nil }", True),
    ("{ span.nope != nil }", False),
    ("{ duration >= 2s && duration < 2001ms }", True),
    ("{ duration > 1h30m }", False),
    ("{ traceDuration = 3000000000 }", True),
    ('{ span.note = "\\u00e9\\n" }', True),
    ('{ span.note =~ "é.*" }', True),
    ('{ nestedSetParent = -1 && name = "root" } // a comment', True),
    ('{ !(name = "a") && name = "b" }', True),
    ('{ name = "a" || name = "b" && name = "c" }', False),
    ("{ } | by(name) | count() > 1", False),
    ("{ } | by(name) | coalesce() | count() > 3", True),
    ("{ } | max(duration) > 2s", True),
    ('({ name = "b" } | count()) = 1', True),
    ('{ name = "b" } | { span.tags = "y" }', True),
    ('{ rootName = "root" && rootServiceName = "svc" && trace:rootService = "svc" }', True),
    # Events: one event of the span meets every event term of the filter.
    ('{ event:name = "exception" }', True),
    ('{ event:name = "exception" && event."exception.type" = "A" }', True),
    ('{ event:name = "exception" && event.exception.type = "B" }', False),
    ('{ event:name = "log" && event.exception.type = "B" && name = "a" }', True),
    ('{ event:name = "log" && name = "b" }', False),
    ('{ event:name = "exception" } && { event.exception.type = "B" }', True),
    ('{ event.exception.type != nil && event:name =~ "exc.*" }', True),
    ('{ .exception.type = "A" }', False),
    ('{ span.exception.type = "A" }', False),
])
def test_traceql_semantics(family: httpx.Client, query: str, hit: bool) -> None:
    response = _search(family, q=query, start=NOW - 1000, end=NOW)
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == ([f"{5:032x}"] if hit else [])


def test_spanset_operator_on_several_spansets_fails_like_tempo(
        synthetic: tuple[TempoDouble, httpx.Client]) -> None:
    _, client = synthetic
    response = _search(client, q="({ } | by(name)) && ({ })")
    assert response.status_code == 500
    assert "coalesce()" in response.text


@pytest.mark.parametrize(("query", "message"), [
    ('{ name = "a" } && ({ name = "b" } | count() > 1)',
     "parse error at line 1, col 35: syntax error: unexpected |"),
    ('{ trace:rootServiceName = "x" }',
     "parse error at line 1, col 9: syntax error: unexpected rootServiceName"),
    ('{ span."a\\q" = 1 }', "parse error at line 1, col 3: invalid escape sequence"),
    ('{ .x = "\\q" }', "parse error at line 1, col 8: invalid char escape"),
])
def test_parse_errors_are_positioned_like_tempo(query: str, message: str) -> None:
    with pytest.raises(TraceQLError) as caught:
        parse_query(query)
    assert str(caught.value).startswith(message)
