"""End to end: `betrace scan --tempo` against the Tempo double over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otlp_build import attribute
from recordings import RECORDINGS, needs_recordings
from tempo_double import Fault, TempoDouble

from checker.cli import build_parser, main, tempo_settings
from checker.engine import Scanner
from checker.rules.load import load_paths, load_text
from checker.tempo.client import TempoClient
from checker.tempo.run import evaluate_window
from checker.tempo.settings import TempoSettings
from checker.traceql import QueryPlan
from checker.traces.model import Span, Trace
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from collections.abc import Iterator

    from checker.rules.rule import Rule

ROOT = Path(__file__).resolve().parents[1]
RULES_D = ROOT / "rules.d"
# The dataset's window (from the recordings' requests): every trace lies inside it.
START, END = 1795728471, 1795729081


def dataset() -> dict[str, Any]:
    assert RECORDINGS is not None
    return json.loads((RECORDINGS / "dataset.otlp.json").read_text())


@pytest.fixture
def tempo() -> Iterator[TempoDouble]:
    with TempoDouble() as double:
        double.push(dataset())
        yield double


def scan(url: str, *extra: str, rules: Path = RULES_D) -> list[str]:
    return ["scan", "--rules", str(rules), "--tempo", url, "--start", str(START), "--end", str(END),
            "--query-end-cutoff", "0s", "--format", "json", *extra]


def pairs(text: str) -> set[tuple[str, str]]:
    return {(v["rule_id"], v["trace_id"]) for v in map(json.loads, text.splitlines())}


def local_pairs(rules: list[Rule], paths: list[Path]) -> set[tuple[str, str]]:
    return {(v.rule_id, v.trace_id) for v in Scanner(rules).scan(read_traces(paths))}


@needs_recordings
class TestStarterRules:
    """Every starter rule finds on Tempo exactly what it finds on the same traces on disk."""

    def test_same_as_local(self, tempo: TempoDouble, capsys: pytest.CaptureFixture[str]) -> None:
        assert RECORDINGS is not None
        code = main(scan(tempo.url))
        out = capsys.readouterr()
        expected = local_pairs(load_paths([RULES_D]).rules, [RECORDINGS / "dataset.otlp.json"])
        assert expected
        assert expected == pairs(out.out)
        assert 1 == code
        assert "searches" in out.err

    def test_json_is_byte_identical_to_a_scan_of_the_same_traces_on_disk(
            self, tempo: TempoDouble, capsys: pytest.CaptureFixture[str]) -> None:
        assert RECORDINGS is not None
        main(scan(tempo.url))
        remote = capsys.readouterr().out
        main(["scan", "--rules", str(RULES_D), "--traces", str(RECORDINGS / "dataset.otlp.json"),
              "--format", "json"])
        local = capsys.readouterr().out
        assert remote.count("\n") > 3
        assert local == remote
        # The dataset is days old: nothing of it can still grow.
        assert {"final"} == {json.loads(line)["status"] for line in remote.splitlines()}

    def test_fetches_only_candidates(self, tempo: TempoDouble, capsys: pytest.CaptureFixture[str]) -> None:
        main(scan(tempo.url))
        fetched = {r.path.rsplit("/", 1)[-1] for r in tempo.requests if "/traces/" in r.path}
        violating = {t for _, t in pairs(capsys.readouterr().out)}
        assert violating <= fetched
        assert len(fetched) < 56

    def test_search_limit_never_changes_the_result(self, tempo: TempoDouble,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
        main(scan(tempo.url))
        full = pairs(capsys.readouterr().out)
        searches_before = sum(1 for r in tempo.requests if r.path == "/api/search")
        main(scan(tempo.url, "--search-limit", "2"))
        assert full == pairs(capsys.readouterr().out)
        searches_after = sum(1 for r in tempo.requests if r.path == "/api/search") - searches_before
        assert searches_after > searches_before

    def test_subprocess(self, tempo: TempoDouble) -> None:
        done = subprocess.run([sys.executable, "-m", "checker", *scan(tempo.url)],  # noqa: S603
                              capture_output=True, text=True, check=False, timeout=120)
        assert 1 == done.returncode, done.stderr
        assert pairs(done.stdout)


FRAGMENT_RULES = """\
rules:
  - id: pii-audited
    condition: when { pii.access } always { audit.log.where(log_type == hipaa_audit) }
  - id: audited-pii-flagged
    condition: when { pii.access and audit.log } never { pii.access }
"""


@needs_recordings
class TestFragments:
    """A trace pushed in two parts is judged on all its spans, in scope and when clearing."""

    def test_split_trace(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert RECORDINGS is not None
        recording = json.loads((RECORDINGS / "fragments" / "fragments.json").read_text())
        rules = tmp_path / "rules.yaml"
        rules.write_text(FRAGMENT_RULES)
        window = recording["search_window"]
        with TempoDouble() as double:
            for push in recording["pushes"]:
                double.push(push)
            main(["scan", "--rules", str(rules), "--tempo", double.url, "--start",
                  str(window["start"]), "--end", str(window["end"]), "--query-end-cutoff", "0s",
                  "--format", "json"])
        found = pairs(capsys.readouterr().out)
        split = next(t for t, label in recording["labels"].items() if label == "split")
        whole = next(t for t, label in recording["labels"].items() if label == "whole")
        # Both traces have pii.access and a hipaa audit.log, the split one in two fragments.
        assert {("audited-pii-flagged", split), ("audited-pii-flagged", whole)} == found


def otlp(trace_id: str, *names: str, start_s: int = START + 10, first_span: int = 1) -> dict[str, Any]:
    spans = [{"traceId": trace_id, "spanId": f"{i + first_span:016x}", "name": name,
              "startTimeUnixNano": str(start_s * 10**9 + i), "endTimeUnixNano": str(start_s * 10**9 + 10**6),
              "attributes": []}
             for i, name in enumerate(names)]
    return {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]}, "scopeSpans": [{"spans": spans}]}]}


SIMPLE_RULES = "rules:\n  - id: audited\n    condition: when { pii.access } always { audit.log }\n"


@pytest.fixture
def simple_rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(SIMPLE_RULES)
    return path


class TestIds:
    """IDs with leading zeros survive Tempo stripping them."""

    def test_leading_zeros(self, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        trace_id = "00000000000000000123456789abcdef"
        with TempoDouble() as double:
            double.push(otlp(trace_id, "pii.access"))
            main(scan(double.url, rules=simple_rules))
        assert {("audited", trace_id)} == pairs(capsys.readouterr().out)


class TestFaults:
    """Tempo failing: a correct result after retries, or a clear error and exit 3."""

    def _run(self, double: TempoDouble, rules: Path, *extra: str) -> int:
        return main(scan(double.url, *extra, rules=rules))

    @pytest.mark.parametrize("fault", [
        Fault(route="search", status=500, times=2),
        Fault(route="search", status=429, times=1),
        Fault(route="trace", status=503, times=2),
        Fault(route="search", kind="truncated_json", times=1),
        Fault(route="trace", kind="invalid_json", times=1),
        Fault(route="search", kind="incomplete_jobs", times=1),
    ])
    def test_recovers(self, fault: Fault, simple_rules: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
        with TempoDouble() as double:
            double.push(otlp("a" * 32, "pii.access"))
            double.push(otlp("b" * 32, "pii.access", "audit.log"))
            double.inject(fault)
            code = self._run(double, simple_rules)
        assert {("audited", "a" * 32)} == pairs(capsys.readouterr().out)
        assert 1 == code

    @pytest.mark.parametrize(("fault", "message"), [
        (Fault(route="search", status=500, times=99), "answered 500"),
        (Fault(route="search", status=400, times=1, body="invalid TraceQL query: boom"),
         "invalid TraceQL query: boom"),
        (Fault(route="any", kind="invalid_json", times=99), "not JSON"),
        (Fault(route="search", kind="timeout", delay=3.0, times=99), "no answer within"),
    ])
    def test_gives_up_clearly(self, fault: Fault, message: str, simple_rules: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
        with TempoDouble() as double:
            double.push(otlp("a" * 32, "pii.access"))
            double.inject(fault)
            code = self._run(double, simple_rules, "--timeout", "1s", "--retries", "1")
        err = capsys.readouterr().err
        assert 3 == code
        assert message in err

    def test_unreachable(self, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(scan("http://127.0.0.1:9", "--retries", "1", rules=simple_rules))
        assert 3 == code
        assert "cannot connect" in capsys.readouterr().err


class TestWindow:
    """Time options and Tempo's query_end_cutoff."""

    def test_needs_a_window(self, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["scan", "--rules", str(simple_rules), "--tempo", "http://127.0.0.1:9"])
        assert 2 == code
        assert "give --since, or both --start and --end" in capsys.readouterr().err

    def test_tempo_and_traces_exclusive(self, simple_rules: Path) -> None:
        assert 2 == main(["scan", "--rules", str(simple_rules), "--tempo", "http://x", "--traces", "y"])

    def test_end_inside_cutoff_is_clamped(self, simple_rules: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        now = time.time()
        with TempoDouble() as double:
            main(["scan", "--rules", str(simple_rules), "--tempo", double.url, "--start",
                  str(int(now - 7200)), "--end", str(int(now + 600)), "--query-end-cutoff", "1h"])
            searched = [r for r in double.requests if r.path == "/api/search"]
        assert "query_end_cutoff" in capsys.readouterr().err
        assert searched
        assert all(int(r.params["end"]) <= now - 3600 for r in searched)


# ------------------------------------------------------------------ properties

NAMES = ["a", "b", "c"]
conditions = st.sampled_from([
    "when { a } always { b }",
    'when { a.where(n > 1) } always { b.where(s == "x") } never { c }',
    "when { a or b } never { c.where(not f) }",
    "when { a and not b } always { count(c) >= 2 }",
    "never { count(a) > 1 }",
    "always { a }",
    'when { a.where(s contains "y" or s matches "x.*") } always { b.where(n in [1, 2.5]) }',
    "when { count(a) == count(b) } never { c }",
    "when { b.where(f) } always { a.where(n != 1) }",
    'when { a.where(s == "x\ny") } never { b.where(s contains "y\n") }',  # raw newlines, as BeTrace allows
    'when { a.where(span.n > 1 or resource.s == "x") } never { b.where(resource.f or span.s == "y") }',
    "when { b.where(trace:rootName == a) } always { c.where(trace:duration < 1ms) }",
    "when { span.where(n >= 1) } never { span.where(s == y and not f) }",
    "when { count(a.where(n > 1)) >= 1 } always { count(span.where(s == x)) > 1 }",
    "when { a has child b } never { c }",
    "when { a } always { a has child b or b has child a }",
    "when { a } always { a has sibling b.where(n >= 1) or a has descendant c }",
    "when { a } always { every a has descendant b }",
    "when { a } never { a followed by b and not c has child a }",
    "never { span.where(f) has descendant c.where(not f) }",
    # Events: one event meets every event term of a .where; never cleared, only scoped.
    'when { a } never { a.where(event:name == e and event.s == "x") }',
    "when { span.where(event:name == e) } always { b.where(event:name == g or n > 1) }",
    "when { a.where(event:name == e).where(event.n > 1) } never { count(span.where(not event.f)) >= 2 }",
    'when { b.where(event:name != e) } always { c.where(event.s contains "y" and event:name in [e, g]) }',
])
span_values = st.fixed_dictionaries({}, optional={
    "n": st.sampled_from([0, 1, 2, 1.5, 2.5, "1"]), "s": st.sampled_from(["x", "xy", "y", "", "x\ny", "y\n"]),
    "f": st.booleans()})
span_events = st.lists(st.tuples(st.sampled_from(["e", "g"]), span_values), max_size=2)
span_specs = st.tuples(st.sampled_from(NAMES), span_values, span_events)


def otlp_spans(trace_id: str, spans: list[tuple[str, dict[str, Any], list[tuple[str, dict[str, Any]]]]],
               at_s: int, first: int = 1) -> list[dict[str, Any]]:
    """OTLP/JSON spans of (name, attributes, events), starting at ``at_s``, span IDs from ``first``."""
    return [{"traceId": trace_id, "spanId": f"{first + i:016x}", "name": name,
             "startTimeUnixNano": str(at_s * 10**9 + i), "endTimeUnixNano": str(at_s * 10**9 + 10**6),
             "attributes": [attribute(k, v) for k, v in attrs.items()],
             "events": [{"name": event, "timeUnixNano": str(at_s * 10**9 + i),
                         "attributes": [attribute(k, v) for k, v in event_attrs.items()]}
                        for event, event_attrs in events]}
            for i, (name, attrs, events) in enumerate(spans)]


@st.composite
def trace_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    pushes = []
    for index in range(draw(st.integers(1, 8))):
        spans = draw(st.lists(span_specs, min_size=1, max_size=5))
        parts_of_trace = otlp_spans(f"{index + 1:032x}", spans, START + 5)
        draw_structure(draw, parts_of_trace)
        resource = [attribute(k, v) for k, v in draw(span_values).items()]
        # Some traces arrive in two pushes: two fragments in the double.
        cut = draw(st.integers(1, len(parts_of_trace)))
        pushes.extend({"resourceSpans": [{"resource": {"attributes": resource},
                                          "scopeSpans": [{"spans": part}]}]}
                      for part in (parts_of_trace[:cut], parts_of_trace[cut:]) if part)
    return pushes


def draw_structure(draw: st.DrawFn, spans: list[dict[str, Any]]) -> None:
    """Give spans parents (an earlier span, none, or one that never arrives) and times within 10 ms."""
    for i, span in enumerate(spans):
        parent = draw(st.sampled_from([None, "f" * 16, *(s["spanId"] for s in spans[:i])]))
        if parent is not None:
            span["parentSpanId"] = parent
        start = int(span["startTimeUnixNano"]) + draw(st.integers(0, 5)) * 10**6
        end = start + draw(st.integers(0, 5)) * 10**6
        span["startTimeUnixNano"], span["endTimeUnixNano"] = str(start), str(end)


def generated_rules(texts: list[str]) -> list[Rule]:
    """Rules r0, r1, ... with these conditions (double-quoted in YAML: line breaks survive)."""
    rules_yaml = "rules:\n" + "".join(f"  - id: r{i}\n    condition: {json.dumps(t)}\n"
                                      for i, t in enumerate(texts))
    return load_text(rules_yaml, "generated.yaml").rules


def remote_window(double: TempoDouble, rules: list[Rule], start: int, end: int, **options: Any) -> Any:
    """``evaluate_window`` against the double, with a small page limit so windows are cut."""
    async def remote() -> Any:
        async with TempoClient(TempoSettings(url=double.url, search_limit=3), backoff=0.0) as client:
            return await evaluate_window(rules, client, start, end, **options)

    return asyncio.run(remote())


class TestTempoAgreesWithLocal:
    """On random rules and traces, candidates cover every violation and results are identical."""

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(texts=st.lists(conditions, min_size=1, max_size=3, unique=True), pushes=trace_sets())
    def test_agree(self, texts: list[str], pushes: list[dict[str, Any]], tmp_path_factory: Any) -> None:
        rules = generated_rules(texts)
        folder = tmp_path_factory.mktemp("traces")
        for i, push in enumerate(pushes):
            (folder / f"{i:03}.json").write_text(json.dumps(push))
        expected = local_pairs(rules, [folder])
        with TempoDouble() as double:
            for push in pushes:
                double.push(push)
            result = remote_window(double, rules, START, END)
        for outcome in result.outcomes:
            violating = {t for r, t in expected if r == outcome.rule.id}
            assert violating <= outcome.candidates
        assert expected == {(v.rule_id, v.trace_id) for v in result.violations}


@st.composite
def spread_traces(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Traces in two pushes whose second part lies anywhere within 300 s of the first."""
    pushes = []
    for index in range(draw(st.integers(1, 8))):
        spans = draw(st.lists(span_specs, min_size=1, max_size=5))
        trace_id = f"{index + 1:032x}"
        cut = draw(st.integers(1, len(spans)))
        offsets = (0, draw(st.integers(-300, 300)))
        for part, offset, first in zip((spans[:cut], spans[cut:]), offsets, (1, cut + 1), strict=True):
            if part:
                pushes.append({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [
                    {"spans": otlp_spans(trace_id, part, START + 5 + offset, first)}]}]})
    return pushes


class TestNarrowClears:
    """Searches that only clear candidates look at the window alone (``QueryPlan.wide``).

    Against every search looking ``margin`` around the window, on traces whose parts lie up to
    300 s apart: the candidates only grow, and the violations are the same.
    """

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(texts=st.lists(conditions, min_size=1, max_size=3, unique=True), pushes=spread_traces())
    def test_same_verdicts(self, texts: list[str], pushes: list[dict[str, Any]]) -> None:
        rules = generated_rules(texts)
        with TempoDouble() as double:
            for push in pushes:
                double.push(push)
            narrow = remote_window(double, rules, START, START + 20, margin=600)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(QueryPlan, "wide", property(lambda p: frozenset(p.searches) - p.anchors))
                wide = remote_window(double, rules, START, START + 20, margin=600)
        for mine, theirs in zip(narrow.outcomes, wide.outcomes, strict=True):
            assert theirs.candidates <= mine.candidates
        assert {(v.rule_id, v.trace_id) for v in narrow.violations} == {
            (v.rule_id, v.trace_id) for v in wide.violations}

    def test_clear_searched_over_the_window(self, simple_rules: Path) -> None:
        """``when { pii.access } always { audit.log }``: the audit search covers the window only."""
        rules = load_paths([simple_rules]).rules
        with TempoDouble() as double:

            async def remote() -> None:
                async with TempoClient(TempoSettings(url=double.url), backoff=0.0) as client:
                    await evaluate_window(rules, client, START, START + 10, margin=600)

            asyncio.run(remote())
            ranges = {r.params["q"]: (int(r.params["start"]), int(r.params["end"]))
                      for r in double.requests if r.route == "search"}
        assert ranges == {'{ name = "pii.access" }': (START, START + 10),
                          '{ name = "pii.access" } && { name = "audit.log" }': (START, START + 10)}


class TestEventsAndLinksFromTempo:
    """A trace fetched from Tempo keeps its spans' events and links."""

    def test_fetched(self) -> None:
        doc = otlp("ab" * 16, "GET /x")
        span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        span["events"] = [{"timeUnixNano": str(START * 10**9), "name": "exception",
                           "attributes": [attribute("exception.type", "ValueError")]}]
        span["links"] = [{"traceId": "cd" * 16, "spanId": "ef" * 8}]
        with TempoDouble() as double:
            double.push(doc)

            async def fetch() -> Any:
                async with TempoClient(TempoSettings(url=double.url), backoff=0.0) as client:
                    return await client.fetch("ab" * 16)

            fetched = asyncio.run(fetch())
        (got,) = fetched.trace.spans
        assert [("exception", START * 10**9, {"exception.type": "ValueError"})] == [
            (e.name, e.time_ns, e.attributes) for e in got.events]
        assert [("cd" * 16, "ef" * 8)] == [(link.trace_id, link.span_id) for link in got.links]


EVENT_RULES = """\
rules:
  - id: no-value-errors
    condition: |
      when  { span.where(span:kind == server) }
      never { span.where(event:name == exception and event.exception.type == "ValueError") }
"""


def with_events(doc: dict[str, Any], *events: tuple[str, str]) -> dict[str, Any]:
    """``doc`` (one span) as a server span with these (name, exception.type) events."""
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["kind"] = 2
    span["events"] = [{"timeUnixNano": str(START * 10**9), "name": name,
                       "attributes": [attribute("exception.type", kind)]} for name, kind in events]
    return doc


class TestEventRules:
    """A rule on span events, scanned through Tempo: one event must be an exception of that type."""

    def test_scan(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        rules = tmp_path / "rules.yaml"
        rules.write_text(EVENT_RULES)
        with TempoDouble() as double:
            double.push(with_events(otlp("a" * 32, "GET /x"), ("exception", "ValueError")))
            double.push(with_events(otlp("b" * 32, "GET /x"), ("exception", "KeyError"),
                                    ("log", "ValueError")))
            double.push(with_events(otlp("c" * 32, "GET /x")))
            code = main(scan(double.url, rules=rules))
            searched = {r.params["q"] for r in double.requests if r.route == "search"}
            fetched = {r.path.rsplit("/", 1)[-1] for r in double.requests if "/traces/" in r.path}
        assert 1 == code
        assert {("no-value-errors", "a" * 32)} == pairs(capsys.readouterr().out)
        assert '{ (event:name = "exception" && event."exception.type" = "ValueError") }' in searched
        assert "c" * 32 not in fetched  # no such event: never a candidate


class TestConnectionOptions:
    """Headers, TLS and credentials reach the client; secrets only through the environment."""

    def test_config_from_options_and_environment(self) -> None:
        args = build_parser().parse_args([
            "scan", "--tempo", "https://tempo.example", "--tenant", "acme", "--header",
            "X-Team: privacy", "--ca-bundle", "/etc/ca.pem", "--timeout", "5s", "--retries", "2"])
        config = tempo_settings(args, {"BETRACE_TEMPO__BEARER_TOKEN": "tok-81f2",
                                       "BETRACE_TEMPO__USERNAME": "u", "BETRACE_TEMPO__PASSWORD": "p"})
        assert ("acme", {"X-Team": "privacy"}, "/etc/ca.pem", 5.0, 2) == (
            config.tenant, config.headers, config.verify, config.timeout.total_seconds(), config.retries)
        assert config.bearer_token is not None
        assert config.password is not None
        assert ("tok-81f2", "u", "p") == (config.bearer_token.get_secret_value(), config.username,
                                     config.password.get_secret_value())
        assert "tok-81f2" not in repr(config)

    def test_insecure(self) -> None:
        args = build_parser().parse_args(["scan", "--tempo", "https://t", "--insecure"])
        assert tempo_settings(args, {}).verify is False

    def test_bad_header_is_a_usage_error(self, simple_rules: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        code = main(scan("http://127.0.0.1:9", "--header", "no colon", rules=simple_rules))
        assert 2 == code
        assert "--header 'no colon' is not 'Name: value'" in capsys.readouterr().err


class TestTempo2:
    """Without the v2 trace API (Tempo 2.x), traces are fetched from /api/traces/<id>."""

    def test_v1_fallback(self, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with TempoDouble() as double:
            double.push(otlp("a" * 32, "pii.access"))
            double.inject(Fault(route="trace", status=404, body="404 page not found", times=1))
            code = main(scan(double.url, rules=simple_rules))
            paths = [r.path for r in double.requests if "/traces/" in r.path]
        assert 1 == code
        assert {("audited", "a" * 32)} == pairs(capsys.readouterr().out)
        assert ["/api/v2/traces/" + "a" * 32, "/api/traces/" + "a" * 32] == paths


class TestReviewFindings:
    """Regressions for ways a plan could miss a violation."""

    def test_other_fragments_outside_the_window_are_found(self, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        rules = tmp_path / "r.yaml"
        rules.write_text("rules:\n  - id: no-x\n    condition: when { A } never { X }\n")
        trace_id = "abc".zfill(32)
        with TempoDouble() as double:
            double.push(otlp(trace_id, "A", start_s=START + 10))
            double.push(otlp(trace_id, "X", start_s=START + 510, first_span=2))  # a late fragment
            code = main(["scan", "--rules", str(rules), "--tempo", double.url, "--start",
                         str(START), "--end", str(START + 20), "--query-end-cutoff", "0s",
                         "--format", "json"])
        assert {("no-x", trace_id)} == pairs(capsys.readouterr().out)
        assert 1 == code

    def test_partial_traces_are_not_judged(self, simple_rules: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        with TempoDouble(max_bytes_per_trace=50) as double:
            double.push(otlp("a" * 32, "pii.access"))
            code = main(scan(double.url, rules=simple_rules))
        out = capsys.readouterr()
        assert 3 == code
        assert "returned only in part" in out.err
        assert "" == out.out

    def test_empty_since_window(self, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["scan", "--rules", str(simple_rules), "--tempo", "http://127.0.0.1:9",
                     "--since", "0s"])
        assert 2 == code
        assert "empty window" in capsys.readouterr().err

    def test_small_cutoff_is_flagged(self, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with TempoDouble() as double:
            main(scan(double.url, rules=simple_rules))
        assert "below Tempo's default 30s" in capsys.readouterr().err


class TestSettle:
    """Verdicts on traces Tempo may still be receiving are provisional (late spans), others final."""

    NOW = int(time.time())
    OLD, RECENT = "0" * 31 + "1", "0" * 31 + "2"

    @pytest.fixture
    def double(self) -> Iterator[TempoDouble]:
        with TempoDouble() as tempo:
            tempo.push(otlp(self.OLD, "pii.access", start_s=self.NOW - 3600))
            tempo.push(otlp(self.RECENT, "pii.access", start_s=self.NOW - 120))
            yield tempo

    def _scan(self, double: TempoDouble, rules: Path, *extra: str,
              window: tuple[str, ...] = ("--since", "2h")) -> int:
        return main(["scan", "--rules", str(rules), "--tempo", double.url, *window,
                     "--query-end-cutoff", "0s", "--format", "json", *extra])

    @staticmethod
    def statuses(text: str) -> dict[str, str]:
        return {v["trace_id"]: v["status"] for v in map(json.loads, text.splitlines())}

    def test_old_trace_is_final_recent_one_provisional(
            self, double: TempoDouble, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = self._scan(double, simple_rules)
        out = capsys.readouterr()
        assert {self.OLD: "final", self.RECENT: "provisional"} == self.statuses(out.out)
        assert 1 == code
        assert ("note: the newest 10m of the window (8 %) is younger than --settle 10m: "
                "1 of 2 violations are provisional (late spans may still change them)") in out.err

    def test_a_long_trace_is_provisional_while_it_may_grow(
            self, double: TempoDouble, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        # Started an hour ago, in the settled part, but a span arrived a minute ago: more may come.
        double.push(otlp(self.OLD, "db.query", start_s=self.NOW - 60, first_span=2))
        self._scan(double, simple_rules,
                   window=("--start", str(self.NOW - 7200), "--end", str(self.NOW - 1800)))
        out = capsys.readouterr()
        assert {self.OLD: "provisional"} == self.statuses(out.out)
        assert ("note: the window is older than --settle 10m: 1 of 1 violations are provisional"
                in out.err)

    def test_settle_zero_makes_every_verdict_final(
            self, double: TempoDouble, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._scan(double, simple_rules, "--settle", "0s")
        out = capsys.readouterr()
        assert {self.OLD: "final", self.RECENT: "final"} == self.statuses(out.out)
        assert "--settle" not in out.err

    def test_settled_only_leaves_the_provisional_part_out(
            self, double: TempoDouble, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = self._scan(double, simple_rules, "--settled-only")
        out = capsys.readouterr()
        assert {self.OLD: "final"} == self.statuses(out.out)
        assert 1 == code
        assert ("note: the newest 10m of the window (8 %) is younger than --settle 10m; "
                "--settled-only: that part was not evaluated\n") in out.err
        searched = [r for r in double.requests if r.path == "/api/search"]
        window_start = max(int(r.params["start"]) for r in searched)  # the others look wider
        anchors = [r for r in searched if int(r.params["start"]) == window_start]
        assert anchors
        assert all(int(r.params["end"]) <= time.time() - 600 for r in anchors)

    def test_settled_only_leaves_out_a_trace_still_growing(
            self, double: TempoDouble, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        double.push(otlp(self.OLD, "db.query", start_s=self.NOW - 60, first_span=2))
        code = self._scan(double, simple_rules, "--settled-only", "--settle", "30m")
        out = capsys.readouterr()
        assert "" == out.out
        assert 0 == code
        assert ("--settled-only: that part was not evaluated, and 1 violations in traces with spans "
                "newer than that were left out") in out.err

    def test_text_marks_provisional_violations(
            self, double: TempoDouble, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._scan(double, simple_rules, "--format", "text")
        rows = capsys.readouterr().out.splitlines()[1:]
        assert [row.startswith("provisional ") for row in rows] == [self.RECENT in row for row in rows]
        assert any(self.RECENT in row for row in rows)

    def test_settled_only_without_a_settled_part_is_a_usage_error(
            self, double: TempoDouble, simple_rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = self._scan(double, simple_rules, "--settled-only", window=("--since", "5m"))
        err = capsys.readouterr().err
        assert 2 == code
        assert "--settled-only: the whole window is younger than --settle 10m" in err
        assert "hint: give an earlier --start" in err
        assert [] == double.requests

    def test_bad_settle_is_a_usage_error(self, double: TempoDouble, simple_rules: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        code = self._scan(double, simple_rules, "--settle=-1m")
        assert 2 == code
        assert "'-1m' is not a duration" in capsys.readouterr().err

    def test_a_trace_ends_with_its_newest_span_an_unended_span_by_its_start(self) -> None:
        spans = [Span("t", "1", "a", start_ns=10, end_ns=40), Span("t", "2", "b", start_ns=20, end_ns=30),
                 Span("t", "3", "c", start_ns=50)]
        assert (40, 50) == (Trace("t", spans[:2]).end_ns, Trace("t", spans).end_ns)

    def test_files_do_not_grow(self, simple_rules: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
        traces = tmp_path / "recent.json"
        traces.write_text(json.dumps(otlp(self.RECENT, "pii.access", start_s=int(time.time()))))
        main(["scan", "--rules", str(simple_rules), "--traces", str(traces), "--format", "json"])
        out = capsys.readouterr()
        assert {self.RECENT: "final"} == self.statuses(out.out)
        assert "--settle" not in out.err
