"""A Tempo (or whatever answers in its place) that misbehaves, over real HTTP on loopback.

Each case once cost a window, a secret or the process: an answer that is not Tempo's read
as "nothing found", a 401 page echoing the token into the ledger, a body trickled forever,
a gigabyte answer, an endless storm of searches, options that loop forever, a query too
long for a URL. The property at the end serves random answers: the client returns what a
proven answer holds, or raises ``TempoError``; nothing else, and never a hang.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self

import httpx
import pytest
from daemon_kit import write_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from otlp_build import attribute
from tempo_double import TempoDouble, parse_query
from tempo_double.server import decode_request
from tempo_double.traceql import Fragment, evaluate

from checker.cli import main
from checker.config import load_settings
from checker.daemon.factory import open_daemon
from checker.daemon.http import HttpServer, application
from checker.engine import Scanner
from checker.rules.load import load_paths, load_text
from checker.store import Store
from checker.tempo.client import TempoClient
from checker.tempo.errors import TempoError
from checker.tempo.settings import TempoSettings
from checker.traceql import compile_rule
from checker.traceql.errors import QueryTooLongError
from checker.traceql.split import split_query
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

START, END = 1795728471, 1795729081
TRACE = "0000000000000000000000000000abcd"
TOKEN = "tok-3f9a7c1e5b2d"
PASSWORD = "pw-8e4d2a6c"
RULES = "rules:\n  - id: audited\n    condition: when { pii.access } always { audit.log }\n"


# ================================================================ a fake Tempo


@dataclass
class Reply:
    """What the fake sends: ``body`` written ``repeat`` times, one byte per ``trickle`` seconds."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    repeat: int = 1
    trickle: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def page(ids: list[str], completed: int = 3, total: int = 3) -> Reply:
    traces = [{"traceID": i.lstrip("0"), "startTimeUnixNano": str(START * 10**9)} for i in ids]
    return Reply(body=json.dumps({"traces": traces, "metrics": {"completedJobs": completed,
                                                                "totalJobs": total}}).encode())


def candidate(request: Seen) -> Reply:
    """TRACE has pii.access and no audit.log: found by the scope search, not by the clearing one."""
    return page([] if "audit.log" in request.params["q"] else [TRACE])


def otlp_trace(trace_id: str, *names: str, padding: str = "") -> dict[str, Any]:
    b64 = base64.b64encode(bytes.fromhex(trace_id)).decode()
    spans = [{"traceId": b64, "spanId": base64.b64encode(bytes.fromhex(f"{i + 1:016x}")).decode(),
              "name": name, "startTimeUnixNano": str(START * 10**9 + i),
              "endTimeUnixNano": str(START * 10**9 + 10**6),
              "attributes": [{"key": "pad", "value": {"stringValue": padding}}] if padding else []}
             for i, name in enumerate(names)]
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]}


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status=status, body=json.dumps(payload).encode())


Route = dict[str, "Callable[[Seen], Reply] | Reply"]


@dataclass
class Seen:
    """One request the fake answered."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeTempo:
    """``routes`` maps a path prefix to a reply (or a function of the request); the rest is 404."""

    routes: Route = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                request = Seen(parts.path, dict(urllib.parse.parse_qsl(parts.query)), dict(self.headers))
                fake.seen.append(request)
                reply = fake.reply(request)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body) * reply.repeat))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    fake.write(self.wfile, reply)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def reply(self, request: Seen) -> Reply:
        for prefix, reply in self.routes.items():
            if request.path.startswith(prefix):
                return reply(request) if callable(reply) else reply
        return Reply(404, b"404 page not found\n", "text/plain; charset=utf-8")

    @staticmethod
    def write(out: Any, reply: Reply) -> None:
        if reply.trickle:
            for byte in reply.body:
                out.write(bytes([byte]))
                out.flush()
                time.sleep(reply.trickle)
            return
        for _ in range(reply.repeat):
            out.write(reply.body)

    def count(self, prefix: str) -> int:
        return sum(1 for request in self.seen if request.path.startswith(prefix))


@pytest.fixture
def fake() -> Iterator[FakeTempo]:
    with FakeTempo() as server:
        yield server


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules.d"
    directory.mkdir()
    (directory / "rules.yaml").write_text(RULES)
    return directory


def scan(url: str, rules: Path, *extra: str) -> list[str]:
    return ["scan", "--rules", str(rules), "--tempo", url, "--start", str(START), "--end", str(END),
            "--query-end-cutoff", "0s", "--format", "json", "--retries", "1", *extra]


def with_client(url: str, work: Callable[[TempoClient], Awaitable[Any]], *, limit: float = 10,
                **config: Any) -> Any:
    """Run ``work`` against ``url``; a hang fails the test after ``limit`` seconds instead."""
    # insecure: plain HTTP anyway, and building a TLS context per example is most of its time.
    settings_ = TempoSettings(url=url, insecure=True, **{"retries": 0, **config})

    async def go() -> Any:
        async with TempoClient(settings_, backoff=0.0) as client:
            return await asyncio.wait_for(work(client), limit)

    return asyncio.run(go())


# ==================================================== answers that are not Tempo's


UNPROVEN_SEARCHES = [
    pytest.param({}, id="empty-object"),
    pytest.param({"error": "upstream connect error"}, id="error-object"),
    pytest.param({"error": "quota", "traces": [], "metrics": {}}, id="error-with-empty-metrics"),
    pytest.param({"traces": []}, id="traces-without-metrics"),
    pytest.param({"traces": [{"traceID": "abcd"}], "metrics": {}}, id="traces-without-jobs"),
    pytest.param({"traces": [], "metrics": {"completedJobs": "3", "totalJobs": "3"}}, id="jobs-as-text"),
    pytest.param({"traces": {}, "metrics": {"completedJobs": 3, "totalJobs": 3}}, id="traces-not-a-list"),
]


class TestUnprovenAnswers:
    """A 200 that is not a Tempo answer is retried, then exit 3 / a failed window; never "nothing found"."""

    @pytest.mark.parametrize("body", UNPROVEN_SEARCHES)
    def test_search_answer_must_prove_itself(self, body: Any, fake: FakeTempo, rules: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        fake.routes["/api/search"] = json_reply(body)
        assert 3 == main(scan(fake.url, rules))
        err = capsys.readouterr().err
        assert "/api/search answered 200" in err
        assert "hint: is a proxy answering instead of Tempo?" in err

    def test_an_error_object_is_quoted(self, fake: FakeTempo, rules: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        fake.routes["/api/search"] = json_reply({"error": "upstream connect error"})
        assert 3 == main(scan(fake.url, rules))
        assert "search answer carries an error: it says 'upstream connect error'" in capsys.readouterr().err

    def test_empty_result_without_jobs_is_tempo(self, fake: FakeTempo, rules: Path) -> None:
        # A window with no block to search: Tempo omits zero counts and may omit empty traces.
        fake.routes["/api/search"] = json_reply({"metrics": {}})
        assert 0 == main(scan(fake.url, rules))

    @pytest.mark.parametrize("case", [
        ("/api/v2/traces/", {}, "no trace object"),
        ("/api/v2/traces/", {"error": "rate limited"}, "it says 'rate limited'"),
        ("/api/v2/traces/", {"trace": {"resourceSpans": {}}}, "resourceSpans is not a list"),
        ("/api/traces/", {}, "no batches"),
    ])
    def test_trace_answer_must_prove_itself(self, case: tuple[str, Any, str], fake: FakeTempo, rules: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
        route, body, message = case
        fake.routes["/api/search"] = candidate
        if route == "/api/traces/":
            fake.routes["/api/v2/traces/"] = Reply(404, b"404 page not found\n", "text/plain")
        fake.routes[route] = json_reply(body)
        assert 3 == main(scan(fake.url, rules))
        err = capsys.readouterr().err
        assert message in err
        assert "could not be judged" not in err  # an error, not "not found"

    def test_daemon_records_failed_and_keeps_the_checkpoint(self, fake: FakeTempo, tmp_path: Path,
                                                            rules_dir: Path) -> None:
        fake.routes["/api/search"] = json_reply({})
        store_url = f"sqlite:///{tmp_path / 'd.db'}"
        path = write_settings(tmp_path, tempo_url=fake.url, store=store_url, rules_dir=rules_dir)
        assert 3 == main(["run", "--once", "--config", str(path)])
        with Store.open(store_url) as store:
            evaluations = store.evaluations()
            assert {"failed"} == {e["outcome"] for e in evaluations}
            assert "not Tempo's" in evaluations[0]["error"]
            assert store.checkpoint(evaluations[0]["rule_id"]) == evaluations[0]["window_start"]


# ========================================================== echoed credentials


class TestOddValues:
    """Values no real Tempo sends still end as a result or a ``TempoError``, never a traceback."""

    def test_a_double_too_large_for_a_float(self, fake: FakeTempo, rules: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
        trace = otlp_trace(TRACE, "pii.access")
        huge = "1" + "0" * 400
        body = json.dumps({"trace": trace}).replace(
            '"attributes": []', f'"attributes": [{{"key": "x", "value": {{"doubleValue": {huge}}}}}]', 1)
        fake.routes["/api/search"] = candidate
        fake.routes["/api/v2/traces/"] = Reply(body=body.encode())
        assert 3 == main(scan(fake.url, rules))
        assert "does not fit a double" in capsys.readouterr().err

    @pytest.mark.parametrize("header", ["\xb2", "-5", "nan", "Wed, 21 Oct 2026 07:28:00 GMT", "1e999"])
    def test_a_retry_after_header_of_any_shape(self, fake: FakeTempo, rules: Path, header: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        fake.routes["/api/search"] = Reply(503, b"busy", "text/plain", headers={"Retry-After": header})
        assert 3 == main(scan(fake.url, rules))
        assert "answered 503: busy" in capsys.readouterr().err
        assert fake.count("/api/search") >= 2  # retried, with no hint from the header


class TestEchoedCredentials:
    """A refusal that echoes what was sent never shows it: not in errors, logs or the store."""

    def echo_headers(self, status: int) -> Callable[[Seen], Reply]:
        def reply(request: Seen) -> Reply:
            echoed = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
            return Reply(status, f"denied, you sent {echoed}".encode(), "text/plain")
        return reply

    @pytest.mark.parametrize("status", [401, 403, 500])
    def test_bearer_and_header_values(self, status: int, fake: FakeTempo, rules: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("BETRACE_TEMPO__BEARER_TOKEN", TOKEN)
        fake.routes["/api/search"] = self.echo_headers(status)
        assert 3 == main(scan(fake.url, rules, "--header", "X-Api-Key: key-5c1d9e7f"))
        err = capsys.readouterr().err
        assert f"answered {status}: denied, you sent" in err
        assert TOKEN not in err
        assert "key-5c1d9e7f" not in err
        assert "<redacted>" in err

    def test_basic_auth_password_and_its_base64(self, fake: FakeTempo, rules: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("BETRACE_TEMPO__USERNAME", "alice")
        monkeypatch.setenv("BETRACE_TEMPO__PASSWORD", PASSWORD)
        basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()

        def reply(request: Seen) -> Reply:
            assert request.headers["Authorization"] == f"Basic {basic}"
            return Reply(401, f"bad credentials {basic} (password {PASSWORD})".encode(), "text/plain")

        fake.routes["/api/search"] = reply
        assert 3 == main(scan(fake.url, rules))
        err = capsys.readouterr().err
        assert "bad credentials" in err
        assert PASSWORD not in err
        assert basic not in err

    def test_credentials_written_in_the_url_and_their_basic_auth_form(
            self, fake: FakeTempo, rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
        fake.routes["/api/search"] = self.echo_headers(401)
        url = fake.url.replace("http://", f"http://bob:{PASSWORD}@")
        assert 3 == main(scan(url, rules))
        err = capsys.readouterr().err
        assert "denied, you sent" in err
        assert PASSWORD not in err
        assert basic not in err

    def test_stored_error_of_a_failed_window(self, fake: FakeTempo, tmp_path: Path, rules_dir: Path) -> None:
        fake.routes["/api/search"] = self.echo_headers(401)
        store_url = f"sqlite:///{tmp_path / 'e.db'}"
        path = write_settings(tmp_path, tempo_url=fake.url, store=store_url, rules_dir=rules_dir,
                              tempo__bearer_token=TOKEN)
        assert 3 == main(["run", "--once", "--config", str(path)])
        with Store.open(store_url) as store:
            errors = [e["error"] for e in store.evaluations()]
        assert errors
        assert all("denied, you sent" in e and TOKEN not in e for e in errors)


# ============================================================ slow and huge answers


class TestDeadlinesAndCaps:
    """The timeout covers the whole answer; bodies are read up to a cap."""

    def test_a_trickling_answer_times_out(self, fake: FakeTempo) -> None:
        fake.routes["/api/search"] = Reply(body=page([TRACE]).body, trickle=0.2)
        began = time.monotonic()
        with pytest.raises(TempoError, match=r"no answer within 0\.6s \(the whole answer"):
            with_client(fake.url, lambda c: c.search_all("{ }", START, END), timeout=0.6)
        assert time.monotonic() - began < 3

    def test_a_trickling_answer_does_not_hang_scan(self, fake: FakeTempo, rules: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
        fake.routes["/api/search"] = Reply(body=page([TRACE]).body, trickle=0.2)
        codes: list[int] = []
        worker = threading.Thread(target=lambda: codes.append(main(scan(fake.url, rules, "--timeout", "0.5s",
                                                                        "--retries", "0"))))
        worker.start()
        worker.join(timeout=10)
        assert [3] == codes
        assert "no answer within 0.5s" in capsys.readouterr().err

    def test_search_answer_over_the_cap(self, fake: FakeTempo, rules: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        fake.routes["/api/search"] = Reply(body=b" " * 64 * 1024, repeat=64)  # 4 MiB
        assert 3 == main(scan(fake.url, rules, "--max-search-bytes", "1MiB"))
        err = capsys.readouterr().err
        assert "search answer larger than tempo.max_search_bytes (1048576 bytes)" in err
        assert "--max-search-bytes" in err

    @pytest.mark.parametrize(("cap", "code"), [("1MiB", 3), ("3MiB", 1)], ids=["over", "under"])
    def test_a_trace_over_the_cap_is_not_judged(self, fake: FakeTempo, rules: Path,
                                                capsys: pytest.CaptureFixture[str], cap: str,
                                                code: int) -> None:
        fake.routes["/api/search"] = candidate
        fake.routes["/api/v2/traces/"] = json_reply(
            {"trace": otlp_trace(TRACE, "pii.access", padding="x" * 2 * 1024 * 1024)})
        assert code == main(scan(fake.url, rules, "--max-trace-bytes", cap))
        out = capsys.readouterr()
        if code == 3:
            assert f"{TRACE} (larger than tempo.max_trace_bytes (1048576 bytes))" in out.err
            assert "could not be judged" in out.err
        else:
            assert TRACE in out.out

    def test_an_error_body_is_read_only_in_part(self, fake: FakeTempo) -> None:
        fake.routes["/api/search"] = Reply(500, b"E" * 1024 * 1024, "text/plain", repeat=16)

        async def work(client: TempoClient) -> int:
            with pytest.raises(TempoError) as info:
                await client.search_all("{ }", START, END)
            assert len(str(info.value)) < 1000
            return client.stats.bytes_read

        assert with_client(fake.url, work) <= 128 * 1024  # a socket read or two of a 16 MiB body


# ================================================================ request storms


class TestStorms:
    """An unfinished answer is retried a bounded number of times, then the search fails."""

    def test_always_unfinished(self, fake: FakeTempo, rules: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
        fake.routes["/api/search"] = page([TRACE], completed=1, total=3)
        assert 3 == main(scan(fake.url, rules, "--retries", "2"))
        assert fake.count("/api/search") <= 2 * 3  # two queries at most, three attempts each
        assert "unfinished (completedJobs < totalJobs)" in capsys.readouterr().err

    def test_a_proxy_ignoring_the_window_costs_a_few_searches_not_thousands(
            self, fake: FakeTempo, rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        ids = [f"{i:032x}" for i in range(1, 11)]
        fake.routes["/api/search"] = page(ids)  # the same full page, whatever start, end and limit
        fake.routes["/api/v2/traces/"] = json_reply({"trace": {}, "metrics": {}})
        main(scan(fake.url, rules, "--search-limit", "10", "--start", str(END - 3600)))
        capsys.readouterr()
        # Per query: the window, its four parts, then each part's raised limit.
        assert fake.count("/api/search") <= 2 * (1 + 4 + 4)


# ================================================================ CLI values


class TestOptions:
    """Values that looped forever or misled are refused up front, with exit 2."""

    @pytest.mark.parametrize(("option", "message"), [
        (["--search-limit", "0"], "--search-limit 0: Input should be greater than 0"),
        (["--search-limit", "-5"], "--search-limit -5: Input should be greater than 0"),
        (["--search-limit", "300000"], "less than or equal to 262144"),
        (["--timeout", "0s"], "--timeout 0s: must be more than 0s"),
        (["--max-trace-bytes", "lots"], "--max-trace-bytes lots:"),
    ])
    def test_invalid_values(self, option: list[str], message: str, rules: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
        assert 2 == main(scan("http://127.0.0.1:9", rules, "--retries", "0", *option))
        assert message in capsys.readouterr().err

    @pytest.mark.parametrize(("url", "message"), [
        ("http://[::1", "is not a URL"),
        ("http://", "needs a host"),
        ("http://tempo:99999", "needs a host and a port from 1 to 65535"),
        ("http://tempo:3200/?x=1", "must not have a query"),
    ])
    def test_invalid_urls(self, url: str, message: str, rules: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
        assert 2 == main(scan(url, rules))
        assert f"--tempo {url}: {message}" in capsys.readouterr().err

    def test_since_too_long(self, rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = ["scan", "--rules", str(rules), "--tempo", "http://127.0.0.1:9", "--since", "99999999999999d",
                "--retries", "0"]
        assert 2 == main(args)
        assert "99999999999999d" in capsys.readouterr().err

    @pytest.mark.parametrize(("scale", "unit"), [(1000, "milliseconds"), (10**9, "nanoseconds")])
    def test_times_in_finer_units(self, scale: int, unit: str, rules: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
        args = ["scan", "--rules", str(rules), "--tempo", "http://127.0.0.1:9",
                "--start", str(START * scale), "--end", str(END * scale)]
        assert 2 == main(args)
        err = capsys.readouterr().err
        assert f"{START * scale} looks like unix {unit}, not seconds" in err
        assert f"give unix seconds ({START})" in err

    def test_otlp_port_hints_at_3200(self, fake: FakeTempo, rules: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        assert 3 == main(scan(fake.url, rules))  # every path answers Go's "404 page not found"
        err = capsys.readouterr().err
        assert "answered 404: 404 page not found" in err
        assert "3200" in err


# ================================================================= readiness


class TestReadiness:
    """/readyz is not ready while Tempo refuses requests, whatever /api/echo says."""

    @pytest.mark.parametrize("echo", [Reply(401, b"no org id", "text/plain"),
                                      Reply(200, b"echo", "text/plain")])
    def test_refused_searches(self, echo: Reply, fake: FakeTempo, tmp_path: Path, rules_dir: Path) -> None:
        fake.routes["/api/echo"] = echo
        fake.routes["/api/search"] = Reply(401, b"no org id", "text/plain")
        config = load_settings(write_settings(tmp_path, tempo_url=fake.url,
                                              store=f"sqlite:///{tmp_path / 'r.db'}", rules_dir=rules_dir))

        async def scenario() -> httpx.Response:
            daemon = await open_daemon(config)
            server = HttpServer(application(daemon.metrics.registry, daemon.readiness_checks()),
                                "127.0.0.1", 0)
            await server.start()
            try:
                await daemon.run_once()  # its searches are refused
                async with httpx.AsyncClient() as http:
                    return await http.get(f"http://127.0.0.1:{server.port}/readyz")
            finally:
                await server.stop()
                await daemon.close()

        response = asyncio.run(scenario())
        assert 503 == response.status_code
        assert "answered 401: no org id" in response.json()["checks"]["tempo"]

    def test_a_page_that_is_not_tempo(self, fake: FakeTempo) -> None:
        fake.routes["/api/echo"] = Reply(200, b"<html>login</html>", "text/html")
        with pytest.raises(TempoError, match="not Tempo's echo"):
            with_client(fake.url, lambda c: c.ping())


# ========================================================= queries too long for a URL


class TestLongQueries:
    """A 1000-value ``in`` list is searched in parts and finds what a local scan finds."""

    def test_thousand_values(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        users = [f"user-{i:04d}" for i in range(1000)]
        rule = tmp_path / "rules.yaml"
        listed = ", ".join(map(json.dumps, users))
        rule.write_text("rules:\n  - id: listed-users-audited\n    condition: |\n"
                        f"      when {{ pii.access.where(user_id in [{listed}]) }}\n"
                        "      always { audit.log }\n")
        traces = tmp_path / "traces.otlp.json"
        data = self.dataset(users)
        traces.write_text(json.dumps(data))
        with TempoDouble() as double:
            double.push(data)
            code = main(scan(double.url, rule))
            queries = [r.params["q"] for r in double.requests if r.path == "/api/search"]
        found = {(v["rule_id"], v["trace_id"]) for v in map(json.loads, capsys.readouterr().out.splitlines())}
        expected = {(v.rule_id, v.trace_id)
                    for v in Scanner(load_paths([rule]).rules).scan(read_traces([traces]))}
        assert len(expected) == 5
        assert expected == found
        assert 1 == code
        assert len(queries) > 4
        assert max(len(str(httpx.QueryParams({"q": q}))) for q in queries) <= 6 * 1024

    @staticmethod
    def dataset(users: list[str]) -> dict[str, Any]:
        """20 traces: listed users from all over the list and unlisted ones, half audited."""
        spans = []
        for n in range(20):
            trace_id = f"{n + 1:032x}"
            user = users[(n * 337) % 1000] if n % 4 else f"outsider-{n}"  # 0, 337, 674, 11, ...
            names = ["pii.access", "audit.log"] if n % 2 else ["pii.access"]
            spans += [{"traceId": trace_id, "spanId": f"{n * 10 + i + 1:016x}", "name": name,
                       "startTimeUnixNano": str((START + 10 + n) * 10**9),
                       "endTimeUnixNano": str((START + 10 + n) * 10**9 + 10**6),
                       "attributes": [{"key": "user_id", "value": {"stringValue": user}}]}
                      for i, name in enumerate(names)]
        return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]}

    def test_unsplittable_and_too_long_is_a_clear_error(self, fake: FakeTempo) -> None:
        query = "{ " + " && ".join(f'span.k{i} = "{"v" * 40}"' for i in range(300)) + " }"
        with pytest.raises(TempoError, match="too long for one request and cannot be split"):
            with_client(fake.url, lambda c: c.search_all(query, START, END))
        assert 0 == fake.count("/api/search")


# ===================================================== property: random answers


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def trace_ids() -> st.SearchStrategy[Any]:
    hex_ids = st.text("0123456789abcdefABCDEF", min_size=1, max_size=32)
    return hex_ids | st.text(max_size=40) | json_values()


def job_counts() -> st.SearchStrategy[Any]:
    return st.integers(0, 4) | st.integers(-3, 2**33) | st.booleans() | st.text(max_size=3) | st.floats()


@st.composite
def search_bodies(draw: st.DrawFn) -> Any:
    """Mostly near-Tempo shapes, with keys left out, mistyped or replaced by noise."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values())
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        items = st.fixed_dictionaries({"traceID": trace_ids()}) | json_values()
        body["traces"] = draw(st.lists(items, max_size=4) | json_values())
    if draw(st.integers(0, 5)):
        metrics = {key: draw(job_counts()) for key in ("completedJobs", "totalJobs")
                   if draw(st.integers(0, 5))}
        body["metrics"] = metrics if draw(st.integers(0, 6)) else draw(json_values())
    if draw(st.booleans()):
        body[draw(st.sampled_from(["error", "message", "status", "x"]))] = draw(json_values())
    return body


def proven_search(status: int, body: Any) -> frozenset[str] | None:
    """The oracle: the IDs a search answer proves, or None when it proves nothing."""
    if (status != 200 or not isinstance(body, dict) or "error" in body
            or not isinstance(body.get("metrics"), dict)):
        return None
    traces, metrics = body.get("traces", []), body["metrics"]
    counts = [metrics.get(key, 0) for key in ("completedJobs", "totalJobs")]
    if not isinstance(traces, list) or not all(type(c) is int and 0 <= c < 2**32 for c in counts):
        return None
    if counts[0] != counts[1] or (traces and counts[1] == 0):
        return None
    ids = [item.get("traceID") if isinstance(item, dict) else None for item in traces]
    if not all(isinstance(i, str) and 0 < len(i) <= 32 and all(c in "0123456789abcdefABCDEF" for c in i)
               for i in ids):
        return None
    return frozenset(str(i).lower().zfill(32) for i in ids)


STATUSES = st.sampled_from([200, 200, 200, 200, 204, 301, 400, 401, 403, 404, 429, 500, 503])
BODIES = search_bodies().map(lambda b: json.dumps(b).encode()) | st.binary(max_size=30) | st.sampled_from(
    [b"", b"[" * 100_000, b'{"traces": [' * 50_000, b"\xff\xfe", b'{"metrics": {}, "traces": []}'])


SHARED = FakeTempo()  # one server for every example; each sets its routes


@pytest.fixture(scope="class")
def _shared_fake() -> Iterator[None]:
    with SHARED:
        yield


@pytest.mark.usefixtures("_shared_fake")
class TestRandomAnswers:
    """Any status and body: a proven answer's exact IDs, or ``TempoError``; nothing else, no hang."""

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(status=STATUSES, body=BODIES)
    @example(status=200, body=b"{}")
    @example(status=200, body=b'{"error": "boom"}')
    @example(status=200, body=b'{"metrics": {}, "error": null}')
    @example(status=200, body=b"[" * 100_000)
    def test_search(self, status: int, body: bytes) -> None:
        SHARED.routes = {"/api/search": Reply(status, body)}
        try:
            got: frozenset[str] | None = frozenset(
                with_client(SHARED.url, lambda c: c.search_all("{ }", START, END), limit=5))
        except TempoError:
            got = None
        try:
            expected = proven_search(status, json.loads(body))
        except (ValueError, RecursionError):
            expected = None
        assert expected == got

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(status=STATUSES, body=json_values().map(lambda v: json.dumps({"trace": v}).encode()) | BODIES)
    @example(status=200, body=b'{"trace": {}, "metrics": {}}')
    @example(status=200, body=json.dumps({"trace": otlp_trace(TRACE, "a")}).encode())
    def test_fetch(self, status: int, body: bytes) -> None:
        SHARED.routes = {"/api/": Reply(status, body)}
        try:
            fetched = with_client(SHARED.url, lambda c: c.fetch(TRACE), limit=5)
        except TempoError:
            return
        if status != 200:  # 404: v2 is missing and v1 has no such trace; anything else raised
            assert (404, None) == (status, fetched.trace)
            return
        spans = json.loads(body)["trace"].get("resourceSpans")
        assert (fetched.trace is not None) == bool(spans)


# ============================================== property: split queries, same union


VALUES = st.sampled_from(["v0", "v1", "v2", "v3", 0, 1, 2, 3])


@st.composite
def fragments(draw: st.DrawFn) -> list[Fragment]:
    """A few one-fragment traces of spans named a/b whose k and j are set on the span, resource or not."""
    found = []
    for n in range(draw(st.integers(1, 6))):
        spans = []
        for i in range(draw(st.integers(1, 3))):
            attributes = [attribute(key, draw(VALUES)) for key in ("k", "j") if draw(st.booleans())]
            spans.append({"traceId": f"{n + 1:032x}", "spanId": f"{i + 1:016x}",
                          "name": draw(st.sampled_from(["a", "b"])), "startTimeUnixNano": "1",
                          "endTimeUnixNano": "2", "attributes": attributes})
        resource = [attribute("k", draw(VALUES))] if draw(st.booleans()) else []
        batch = {"resource": {"attributes": resource}, "scopeSpans": [{"spans": spans}]}
        found.append(Fragment(f"{n + 1:032x}", decode_request({"resourceSpans": [batch]})))
    return found


class TestSplitQueries:
    """Cut to any budget, the parts of a compiled query match exactly the fragments the whole does."""

    @settings(max_examples=60, deadline=None)
    @given(data=fragments(), first=st.lists(VALUES, min_size=1, max_size=6),
           second=st.lists(VALUES, min_size=1, max_size=6), budget=st.integers(40, 400))
    def test_same_union(self, data: list[Fragment], first: list[Any], second: list[Any], budget: int) -> None:
        condition = (f"when {{ a.where(k in [{', '.join(map(json.dumps, first))}]) }} "
                     f"always {{ b.where(j in [{', '.join(map(json.dumps, second))}]) }}")
        rule = load_text(f"rules:\n  - id: r\n    condition: '{condition}'\n", "r.yaml").rules[0]
        for search in compile_rule(rule.invariant).searches:
            try:
                parts = split_query(search.query, lambda text: len(text) <= budget)
            except QueryTooLongError:
                continue
            assert all(len(part) <= budget for part in parts)
            whole = parse_query(search.query)
            for fragment in data:
                expected = bool(evaluate(whole, fragment))
                assert expected == any(evaluate(parse_query(part), fragment) for part in parts), search.query
