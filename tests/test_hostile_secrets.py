"""Issue 11, secrets and outgoing requests: masking, redaction, slow receivers, hostile text in the store.

Every test talks real HTTP on loopback to a local fake (a trickling or endless receiver, the
Tempo double); the store tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import string
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import structlog
from daemon_kit import write_settings
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from stores import STORE_KINDS, needs_postgres, postgres_schema, store_url
from tempo_double import Fault, TempoDouble

from checker.cli import main
from checker.config import load_settings
from checker.daemon.factory import build_dispatcher, notify_policy
from checker.daemon.metrics import Metrics
from checker.engine.violation import SpanRef, Violation
from checker.errors import ConfigError
from checker.log import configure, redact_secrets
from checker.notify.message import Alert, slack_message
from checker.notify.senders import WebhookSender, sender_for
from checker.notify.settings import WebhookRoute
from checker.redact import KNOWN, REDACTED, Redactor, basic_auth_token, mask_url, url_secrets
from checker.rules.load import load_text
from checker.store import Store, StoreError, WindowRecord, ledger

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from checker.config import Settings
    from checker.rules.rule import Rule

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PRINTABLE = string.ascii_letters + string.digits + string.punctuation
SECRETS = st.text(alphabet=PRINTABLE, min_size=8, max_size=40)


# ----------------------------------------------------------------- fakes


class Receivers:
    """Loopback receivers: ``/fast`` accepts at once; ``/trickle`` sends its answer a byte at a
    time; ``/endless`` answers 500 with a body that never ends. Times of fast answers are kept."""

    def __init__(self, byte_every: float = 0.3) -> None:
        self.fast_at: list[float] = []
        self.streamed = 0  # bytes of endless bodies written before the client hung up
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    getattr(self, "answer_" + self.path.strip("/").split("/")[0])()
                except (BrokenPipeError, ConnectionResetError):
                    return

            def answer_fast(self) -> None:
                receivers.fast_at.append(time.monotonic())
                self._head(200, 2)
                self.wfile.write(b"ok")

            def answer_trickle(self) -> None:
                self._head(200, 100)
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(byte_every)

            def answer_endless(self) -> None:
                self._head(500, 1 << 40)
                chunk = b"x" * 65536
                while receivers.streamed < 1 << 31:
                    self.wfile.write(chunk)
                    receivers.streamed += len(chunk)

            def _head(self, status: int, length: int) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.flush()

            def log_message(self, *_args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    started = Receivers()
    yield started
    started.close()


def rule(rule_id: str = "r0", name: str = "Rule") -> Rule:
    return load_text(f"rules:\n  - id: {rule_id}\n    name: {json.dumps(name)}\n    severity: high\n"
                     "    condition: never { db.query }\n", f"{rule_id}.yaml").rules[0]


def violation(n: int, rule_id: str = "r0", reason: str = "db.query is forbidden") -> Violation:
    return Violation(rule_id=rule_id, rule_name="Rule", severity="high", trace_id=f"{n:032x}",
                     reason=reason, frameworks=(), controls=(),
                     trigger_spans=(SpanRef("db.query", f"{n:016x}"),), missing=(), forbidden=(),
                     root_service="api", root_name="GET /x", start_time_unix_nano=1)


def notify_settings(tmp_path: Path, notifiers: dict[str, Any], **delivery: Any) -> Settings:
    return load_settings(write_settings(
        tmp_path, tempo_url="http://127.0.0.1:9", store=f"sqlite:///{tmp_path / 'n.db'}",
        notifiers=notifiers, default_notifiers=list(notifiers), delivery={"backoff": "1s", **delivery}))


def commit(store: Store, settings: Settings, rules: list[Rule]) -> None:
    for index, each in enumerate(rules):
        store.start_checkpoint(each.id, T0)
        store.commit(WindowRecord(each, T0, T0 + MINUTE, T0, 0.1, "violations",
                                  violations=(violation(index, each.id),)),
                     notify_policy(settings).notice(each, (T0, T0 + MINUTE)))


def config_error(tmp_path: Path, **overrides: Any) -> str:
    values = {"tempo_url": "http://127.0.0.1:9", "store": "sqlite:///x.db", **overrides}
    path = write_settings(tmp_path, **values)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


# ----------------------------------------------------------------- one redaction path


class TestMasking:
    @pytest.mark.parametrize(("url", "secret"), [
        ("postgresql://bob:hun/ter2@db/x", "ter2"),
        ("postgresql://bob@db/x?password=s3cr3tp4ss&sslmode=require", "s3cr3tp4ss"),
        ("postgresql://bob:p@ssw0rd@db/x", "ssw0rd"),
        ("https://grafana.example/explore?token=abc123xyz&trace={trace_id}", "abc123xyz"),
        ("https://bob:80/ter2@tempo.example", "ter2"),
    ])
    def test_mask_url_parses_instead_of_matching(self, url: str, secret: str) -> None:
        assert secret not in mask_url(url)

    def test_what_is_not_secret_stays_as_written(self) -> None:
        for url in ("sqlite:///var/lib/betrace.db", "http://localhost:3200",
                    "postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dx",
                    "https://grafana.example/explore?trace={trace_id}"):
            assert url == mask_url(url)
        assert "postgresql://bob:***@db/x?password=***&sslmode=require" == mask_url(
            "postgresql://bob:hun/ter2@db/x?password=zz&sslmode=require")

    def test_config_errors_mask_the_store_password(self, tmp_path: Path) -> None:
        error = config_error(tmp_path, store="postgresql://bob:hun/ter2@db:nope/x?password=qu3ryp4ss")
        assert "store = 'postgresql://***@db:nope/x?password=***'" in error
        assert "ter2" not in error
        assert "qu3ryp4ss" not in error

    def test_an_unencoded_at_in_the_store_password_is_refused_masked(self, tmp_path: Path) -> None:
        error = config_error(tmp_path, store="postgresql://bob:p@ssw0rd@db/x")
        assert "percent-encode it" in error
        assert "ssw0rd" not in error

    def test_store_errors_and_readiness_mask_the_password(self) -> None:
        url = "postgresql://bob:hun%2Fter2@127.0.0.1:1/x?password=qu3ryp4ss&connect_timeout=2"
        with pytest.raises(StoreError) as caught:
            Store.open(url)
        assert "127.0.0.1" in str(caught.value)
        for secret in ("hun/ter2", "hun%2Fter2", "ter2", "qu3ryp4ss"):
            assert secret not in str(caught.value)
        # /readyz shows the first line of the store check's error: Store.ping's message.
        store = Store(create_engine("postgresql+psycopg://bob:hun%2Fter2@127.0.0.1:1/x?password=qu3ryp4ss"))
        with pytest.raises(StoreError) as unreachable:
            store.ping()
        assert "ter2" not in str(unreachable.value)
        assert "qu3ryp4ss" not in str(unreachable.value) + store.url

    def test_a_token_in_the_trace_url_template_is_never_shown(self, tmp_path: Path) -> None:
        error = config_error(tmp_path, trace_url_template="https://grafana.example/explore?token=t0k3nv4lue")
        assert "must contain {trace_id}" in error
        assert "t0k3nv4lue" not in error


def fail_with(message: str) -> None:
    raise RuntimeError(message)


class TestLogRedaction:
    def test_every_configured_secret_is_removed_from_every_log_event(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store="sqlite:///x.db",
                              tempo__bearer_token="b34r3r-t0k3n-log", tempo__username="svc",
                              tempo__password="b4s1c-p4ss-log",
                              notifiers={"hook": {"type": "webhook", "url": "https://hooks.example/in",
                                                  "secret": "whsec-sign-log",
                                                  "headers": {"X-Api-Key": "k3y-v4lue"}}},
                              trace_url_template="https://g.example/explore?token=t3mpl4te&trace={trace_id}")
        load_settings(path)
        basic = basic_auth_token("svc", "b4s1c-p4ss-log")
        structlog.get_logger("test").error(
            "tempo.refused", answer=f"401 Bearer b34r3r-t0k3n-log / Basic {basic}",
            nested={"list": ["whsec-sign-log", "k3y-v4lue"], "url": "https://g.example/explore?token=t3mpl4te"})
        err = capsys.readouterr().err
        assert "tempo.refused" in err
        for secret in ("b34r3r-t0k3n-log", "b4s1c-p4ss-log", basic, "whsec-sign-log", "k3y-v4lue",
                       "t3mpl4te"):
            assert secret not in err

    @pytest.mark.parametrize("as_json", [True, False], ids=["json", "console"])
    def test_a_traceback_quoting_a_secret_is_redacted_in_both_renderers(
            self, as_json: bool, capsys: pytest.CaptureFixture[str]) -> None:
        KNOWN.add(["tr4c3b4ck-s3cr3t"])
        configure(json=as_json)
        try:
            fail_with("failed with tr4c3b4ck-s3cr3t")
        except RuntimeError:
            structlog.get_logger("test").exception("window.internal_error")
        err = capsys.readouterr().err
        assert "RuntimeError" in err
        assert "tr4c3b4ck-s3cr3t" not in err

    def test_the_processor_walks_nested_values(self) -> None:
        KNOWN.add(["n3st3d-s3cr3t"])
        event = redact_secrets(None, "info", {"event": "x", "a": ("n3st3d-s3cr3t",),
                                              "b": {"c": "n3st3d-s3cr3t!"}})
        assert "n3st3d-s3cr3t" not in json.dumps(event)


class TestEchoedSecrets:
    def test_a_webhook_receiver_echoing_a_token_header_or_the_template_is_redacted(self) -> None:
        route = WebhookRoute(type="webhook", url="https://hooks.example/in?sig=s1gn4ture", secret="whsec-x1",
                             headers={"Authorization": "Bearer h3ad3r-t0k3n"})
        sender = WebhookSender(route, "https://g.example/explore?token=t3mpl4te&trace={trace_id}")
        echoed = sender.answer(401, b"no: Bearer h3ad3r-t0k3n s1gn4ture whsec-x1 "
                               b"https://g.example/explore?token=t3mpl4te&trace=1 h3ad3r-t0", cut_off=True)
        for secret in ("h3ad3r-t0k3n", "s1gn4ture", "whsec-x1", "t3mpl4te", "h3ad3r-t0"):
            assert secret not in echoed

    def test_a_slack_bot_answer_echoing_just_the_token_is_redacted(self) -> None:
        token = "xoxb-echo-0123456789"

        class Echo(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.dumps({"ok": False, "error": f"invalid_auth {token}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            settings = notify_settings_in_memory({"bot": {
                "type": "slack", "token": token, "channel": "#x",
                "api_url": f"http://127.0.0.1:{server.server_address[1]}/api/"}})
            delivery = asyncio.run(sender_for(settings.notifiers["bot"], None).send(alert("r")))
        finally:
            server.shutdown()
            server.server_close()
        assert not delivery.ok
        assert token not in delivery.detail
        assert "invalid_auth" in delivery.detail


def notify_settings_in_memory(notifiers: dict[str, Any]) -> Settings:
    from checker.config import Settings  # noqa: PLC0415

    return Settings(notifiers=notifiers)


def alert(name: str, trace_id: str = "0" * 32) -> Alert:
    info = {"id": "r", "name": name, "severity": "high", "frameworks": [], "controls": [], "version": "1"}
    return Alert("violations", info, T0, T0 + MINUTE,
                 [{"trace_id": trace_id, "reason": "<!here> & more", "root_service": "<@U1>",
                   "root_name": "a&b"}],
                 total=1, key="k")


# ----------------------------------------------------------------- slow and huge answers


class TestSlowReceivers:
    def test_a_trickling_webhook_times_out_as_a_whole(self, receivers: Receivers) -> None:
        route = WebhookRoute(type="webhook", url=receivers.url + "/trickle", timeout="1s")
        started = time.monotonic()
        delivery = asyncio.run(asyncio.wait_for(WebhookSender(route, None).send(alert("r")), 15))
        assert time.monotonic() - started < 5
        assert delivery.retryable
        assert delivery.detail.startswith("timeout")

    @pytest.mark.parametrize("route", ["webhook", "slack"])
    def test_an_endless_error_body_is_read_only_in_part(self, receivers: Receivers, route: str) -> None:
        url = receivers.url + "/endless"
        config = ({"type": "webhook", "url": url, "timeout": "20s"} if route == "webhook"
                  else {"type": "slack", "webhook_url": url, "timeout": "20s"})
        settings = notify_settings_in_memory({"r": config})
        started = time.monotonic()
        sending = sender_for(settings.notifiers["r"], None).send(alert("r"))
        delivery = asyncio.run(asyncio.wait_for(sending, 30))
        assert time.monotonic() - started < 10
        assert delivery.retryable
        assert delivery.detail.startswith("500 xxx")
        assert len(delivery.detail) <= 301
        assert receivers.streamed < 64 << 20  # the client hung up long before

    def test_a_slow_route_never_delays_another_route(self, receivers: Receivers, tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, {
            "slow": {"type": "webhook", "url": receivers.url + "/trickle", "timeout": "1.5s"},
            "fast": {"type": "webhook", "url": receivers.url + "/fast"}}, flush_timeout="30s")
        store = Store.open(settings.store)
        commit(store, settings, [rule(f"r{i}") for i in range(6)])  # more pairs than a route's 4 slots
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=lambda: T0 + MINUTE)
        started = time.monotonic()
        summary = asyncio.run(asyncio.wait_for(dispatcher.drain(), 25))
        assert 6 == len(receivers.fast_at)
        assert max(receivers.fast_at) - started < 1.2  # not after the slow route's 1.5 s timeouts
        assert (6, 6) == (summary.sent, summary.retry)

    def test_the_daemon_keeps_delivering_while_a_route_hangs(self, receivers: Receivers,
                                                             tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, {
            "slow": {"type": "webhook", "url": receivers.url + "/trickle", "timeout": "20s"},
            "fast": {"type": "webhook", "url": receivers.url + "/fast"}}, poll="0.1s")
        store = Store.open(settings.store)
        commit(store, settings, [rule("first")])

        async def scenario() -> float:
            stop = asyncio.Event()
            dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=lambda: T0 + MINUTE)
            running = asyncio.create_task(dispatcher.run(stop))
            while len(receivers.fast_at) < 1:  # noqa: ASYNC110  (the receiver runs in another thread)
                await asyncio.sleep(0.05)
            await asyncio.to_thread(commit, store, settings, [rule("second")])
            woken = time.monotonic()
            dispatcher.wake.set()
            while len(receivers.fast_at) < 2:  # noqa: ASYNC110  (the receiver runs in another thread)
                await asyncio.sleep(0.05)
            stop.set()
            running.cancel()  # the daemon's shutdown cancels what outlives shutdown_grace
            await asyncio.gather(running, return_exceptions=True)
            return receivers.fast_at[1] - woken

        assert asyncio.run(asyncio.wait_for(scenario(), 15)) < 2

    def test_the_flush_at_exit_is_bounded_and_loses_nothing(self, receivers: Receivers,
                                                            tmp_path: Path) -> None:
        slow = {"type": "webhook", "url": receivers.url + "/trickle", "timeout": "30s"}
        settings = notify_settings(tmp_path, {"slow": slow}, flush_timeout="1s")
        store = Store.open(settings.store)
        commit(store, settings, [rule("r0"), rule("r1")])
        started = time.monotonic()
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=lambda: T0 + MINUTE)
        asyncio.run(asyncio.wait_for(dispatcher.drain(), 20))
        assert time.monotonic() - started < 4
        assert 2 == len([row for row in store.outbox.undelivered() if not row.dead])


# ----------------------------------------------------------------- config validation


class TestConfigValidation:
    def test_a_zero_poll_is_refused(self, tmp_path: Path) -> None:
        error = config_error(tmp_path, delivery={"poll": "0s"})
        assert "delivery.poll = '0s': must be more than 0s" in error

    def test_a_slack_webhook_must_be_https(self, tmp_path: Path) -> None:
        error = config_error(tmp_path, notifiers={"s1": {
            "type": "slack", "webhook_url": "http://hooks.slack.com/services/T0/B0/pl41nt3xt"}})
        assert "must be an https:// URL" in error
        assert "pl41nt3xt" not in error

    @pytest.mark.parametrize("template", ["javascript:alert(document.cookie)//{trace_id}",
                                          " javascript:alert(1)//{trace_id}", "data:text/html,{trace_id}",
                                          "java\tscript:alert(1)//{trace_id}"])
    def test_a_trace_link_is_http_only(self, tmp_path: Path, template: str) -> None:
        assert "must be an http:// or https:// URL" in config_error(tmp_path, trace_url_template=template)

    def test_the_hinted_variable_is_the_one_pydantic_settings_reads(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store="sqlite:///x.db",
                              notifiers={"s1": {"type": "slack", "webhook_url": "http://hooks.slack.com/x"},
                                         "w1": {"type": "webhook", "url": "ftp://x", "timeout": "0s"}})
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        hinted = [problem.rsplit("(env ", 1)[1].rstrip(")") for problem in caught.value.problems]
        assert ["BETRACE_NOTIFIERS__S1__WEBHOOK_URL", "BETRACE_NOTIFIERS__W1__URL",
                "BETRACE_NOTIFIERS__W1__TIMEOUT"] == hinted
        fixes = ["https://hooks.slack.com/services/T0/B0/x", "https://hooks.example/in", "5s"]
        for variable, value in zip(hinted, fixes, strict=True):
            monkeypatch.setenv(variable, value)
        loaded = load_settings(path)
        assert fixes[0] == loaded.notifiers["s1"].webhook_url.get_secret_value()  # type: ignore[union-attr]
        assert timedelta(seconds=5) == loaded.notifiers["w1"].timeout  # type: ignore[union-attr]


# ----------------------------------------------------------------- hostile text in the store


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_nul_in_an_error_or_a_rule_is_stored_and_the_ledger_verifies(kind: str, tmp_path: Path) -> None:
    with store_url(kind, tmp_path) as url, Store.open(url) as store:
        hostile = replace(rule("nul"), name="bad\x00name \ud83d")
        store.record_rule(hostile)
        store.start_checkpoint(hostile.id, T0)
        store.commit(WindowRecord(hostile, T0, T0 + MINUTE, T0, 0.1, "failed",
                                  error="Tempo answered 500: upstream\x00error \udc00"))
        store.commit(WindowRecord(hostile, T0, T0 + MINUTE, T0, 0.1, "violations",
                                  violations=(violation(1, "nul", reason="span a\x00b"),)))
        [failed, found] = store.evaluations("nul")
        assert "Tempo answered 500: upstream\ufffderror \ufffd" == failed["error"]
        assert "failed" == failed["outcome"]
        assert "span a\ufffdb" == store.violations("nul")[0].violation.reason
        assert found["outcome"] == "violations"
        with store.engine.connect() as connection:
            assert "bad\ufffdname \ufffd" == connection.scalar(text("select name from rules"))
        assert ledger.verify(store.engine).ok


# ----------------------------------------------------------------- Slack escaping


def test_slack_text_never_carries_a_mention_from_rule_or_trace_data() -> None:
    text_fallback, blocks = slack_message(alert("<!channel> & <@U123> <https://evil|click>", "a|b>c"),
                                          "https://g.example/t/{trace_id}")
    assert text_fallback.startswith("HIGH: &lt;!channel&gt; &amp; &lt;@U123&gt;")
    rendered = [text_fallback, blocks[0]["text"]["text"],
                *(json.dumps(block) for block in blocks[1:])]
    for part in rendered:
        assert "<!channel>" not in part
        assert "<@U123>" not in part
        assert "<!here>" not in part
        assert "<https://evil" not in part
    assert "<https://g.example/t/a%7Cb%3Ec|a|b&gt;c>" in json.dumps(blocks)


def test_a_cut_never_leaves_half_an_entity() -> None:
    text_fallback, blocks = slack_message(alert("&" * 700), None)
    for part in (text_fallback, blocks[0]["text"]["text"]):
        assert part.endswith("&amp;…")


# ----------------------------------------------------------------- through the daemon


def test_a_tempo_echoing_credentials_leaks_them_nowhere(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    token, password = "b34r3r-d43m0n-t0k3n", "b4s1c/d43m0n?p4ss"
    basic = basic_auth_token("svc", password)
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "audit.yaml").write_text(
        "rules:\n  - id: audit\n    name: PII access is audited\n    severity: high\n"
        "    controls: [SOC2:CC6.7]\n    condition: when { pii.access } always { audit.log }\n")
    with TempoDouble() as tempo:
        tempo.inject(Fault(status=401, times=10_000, body=f"unauthorized: token {token} / Basic {basic} "
                                                          f"/ password {quote(password)} / {password}"))
        path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'd.db'}",
                              rules_dir=rules, tempo__bearer_token=token, tempo__username="svc",
                              tempo__password=password)
        code = main(["run", "--once", "--config", str(path)])
        shown = capsys.readouterr()
    assert 3 == code
    now = int(time.time())
    assert 0 == main(["violations", "--config", str(path), "--format", "json"])
    assert 0 == main(["evidence", "report", "--config", str(path), "--from", str(now - 7200),
                      "--to", str(now + 60), "--format", "html"])
    report = capsys.readouterr()
    store = Store.open(f"sqlite:///{tmp_path / 'd.db'}")
    errors = [row["error"] or "" for row in store.evaluations()]
    assert errors
    assert all("401" in error for error in errors), errors
    everything = "\n".join([shown.out, shown.err, report.out, report.err, *errors])
    assert "401" in shown.err
    for secret in (token, password, basic, quote(password), quote(password, safe="")):
        assert secret not in everything, secret


# ----------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(secret=SECRETS)
def test_a_store_password_never_survives_masking(secret: str) -> None:
    encoded = f"postgresql://bob:{quote(secret, safe='')}@db.example:5432/x"
    masked = mask_url(encoded)
    assert masked == mask_url("postgresql://bob:placeholder@db.example:5432/x")
    assert secret in url_secrets(encoded)
    in_query = mask_url(f"postgresql://bob@db.example/x?password={quote(secret, safe='')}&sslmode=require")
    assert in_query == "postgresql://bob@db.example/x?password=***&sslmode=require"
    raw = f"postgresql://bob:{secret}@db.example:5432/x"
    assume(secret not in f"driver said: postgresql://***@db.example:5432/x {REDACTED}")
    assert secret not in mask_url(raw)
    assert Redactor(url_secrets(raw)).redact(f"driver said: {raw}").count(secret) == 0


@settings(max_examples=200, deadline=None)
@given(secret=SECRETS, noise=st.text(alphabet=PRINTABLE + " \n", max_size=60))
def test_an_echoed_bearer_token_is_always_redacted(secret: str, noise: str) -> None:
    assume(secret not in REDACTED)  # a "secret" inside the placeholder cannot be told from it
    redactor = Redactor([secret])
    for echoed in (f"{noise}Bearer {secret}{noise}", json.dumps({"auth": secret}), quote(secret, safe=""),
                   f"{noise}{secret}{secret}"):
        assert secret not in redactor.redact(echoed)
    begins = secret[: max(4, len(secret) // 2)]
    assume(begins not in f"Bearer {REDACTED}")
    assert begins not in redactor.redact(f"Bearer {begins}", cut_off=True)


@settings(max_examples=40, deadline=None)  # a sender loads the CA bundle: tens of milliseconds each
@given(secret=SECRETS)
def test_a_webhook_url_secret_never_reaches_a_detail(secret: str) -> None:
    assume(secret not in f"404 {REDACTED} Cannot POST /services/{REDACTED} https://hooks.example/in?token=***")
    url = f"https://hooks.example/services/{quote(secret, safe='')}?token={quote(secret, safe='')}"
    sender = WebhookSender(WebhookRoute(type="webhook", url=url), None)
    for echoed in (url, f"Cannot POST /services/{quote(secret, safe='')}", secret):
        assert secret not in sender.answer(404, echoed.encode(), cut_off=False)
    assert secret not in mask_url(f"https://hooks.example/in?token={quote(secret, safe='')}")


@needs_postgres
def test_postgres_store_url_with_a_query_password_is_masked() -> None:
    with postgres_schema() as url, Store.open(url + "&password=qu3ryp4ss") as store:
        assert "qu3ryp4ss" not in store.url
        assert "password=***" in store.url
