"""Notifications over real HTTP on loopback: Slack (webhook and Web API), signed webhooks, the outbox."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from daemon_kit import LAST_TRACE, RULES_D, Clock, dataset, expected_pairs, write_settings
from receivers import BOT_TOKEN, WEBHOOK_PATH, Receiver, block_problems, verify_signature
from recordings import needs_recordings
from tempo_double import TempoDouble

from checker.cli import main
from checker.config import load_settings
from checker.daemon.factory import build_dispatcher, notify_policy, open_daemon
from checker.daemon.metrics import Metrics
from checker.engine.violation import SpanRef, Violation
from checker.notify.message import Alert, slack_message, webhook_body
from checker.notify.senders import sign
from checker.rules.load import load_text
from checker.store import Store, WindowRecord

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from checker.config import Settings
    from checker.rules.rule import Rule

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
SECRET = "whsec-test-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(secret=SECRET) as started:
        yield started


def routes(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    return {
        "team-slack": {"type": "slack", "webhook_url": receiver.url + WEBHOOK_PATH},
        "soc-bot": {"type": "slack", "token": BOT_TOKEN, "channel": "#soc",
                    "api_url": receiver.url + "/api/"},
        "ops-hook": {"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET,
                     "headers": {"X-Team": "ops"}},
        "console": {"type": "log"},
        **overrides,
    }


def notify_settings(tmp_path: Path, receiver: Receiver, *, tempo_url: str = "http://127.0.0.1:9",
                    rules_dir: Path = RULES_D, notifiers: dict[str, Any] | None = None,
                    **delivery: Any) -> Settings:
    path = write_settings(tmp_path, tempo_url=tempo_url, store=f"sqlite:///{tmp_path / 'n.db'}",
                          rules_dir=rules_dir, notifiers=notifiers or routes(receiver),
                          default_notifiers=list(notifiers or routes(receiver)),
                          trace_url_template="https://grafana.example.com/explore?trace={trace_id}",
                          delivery={"backoff": "1s", "max_backoff": "4s", **delivery})
    return load_settings(path)


def noisy_rule() -> Rule:
    return load_text("rules:\n  - id: noisy\n    name: Noisy <rule> & co\n    severity: high\n"
                     "    controls: [SOC2:CC7.2]\n    condition: never { db.query }\n", "noisy.yaml").rules[0]


def violation(n: int, rule_id: str = "noisy") -> Violation:
    return Violation(rule_id=rule_id, rule_name="Noisy", severity="high", trace_id=f"{n:032x}",
                     reason=f"db.query <{n}> & forbidden", frameworks=("SOC2",), controls=("SOC2:CC7.2",),
                     trigger_spans=(SpanRef("db.query", f"{n:016x}"),), missing=(), forbidden=(),
                     root_service="api", root_name="GET /x", start_time_unix_nano=1)


def commit_window(store: Store, rule: Rule, settings: Settings, index: int,
                  violations: tuple[Violation, ...]) -> None:
    start = T0 + index * MINUTE
    store.start_checkpoint(rule.id, T0)
    store.commit(WindowRecord(rule, start, start + MINUTE, start, 0.1, "violations" if violations else "ok",
                              violations=violations),
                 notify_policy(settings).notice(rule, (start, start + MINUTE)))


class TestMessages:
    def alert(self, count: int, reason: str = "why") -> Alert:
        rule = {"id": "r" * 300, "name": "N" * 400, "severity": "critical", "frameworks": ["SOC2"] * 500,
                "controls": ["CC6.1"] * 500}
        violations = [{"trace_id": f"{i:032x}", "reason": reason, "root_service": "s<vc>", "root_name": "a&b"}
                      for i in range(count)]
        return Alert("violations", rule, T0, T0 + MINUTE, violations, total=count * 10)

    def test_slack_limits_hold_for_huge_alerts(self) -> None:
        text, blocks = slack_message(self.alert(500, reason="x" * 10_000), "https://g/{trace_id}")
        assert [] == block_problems(blocks)
        assert len(text) <= 3000
        listing = blocks[3]["text"]["text"]
        more = re.search(r"…and (\d+) more$", listing)
        assert more is not None
        assert 5000 == int(more.group(1)) + listing.count("• ")

    def test_links_escaping_and_fallback(self) -> None:
        text, blocks = slack_message(self.alert(2), "https://grafana/explore?trace={trace_id}")
        rendered = json.dumps(blocks)
        assert f"<https://grafana/explore?trace={0:032x}|{0:032x}>" in rendered
        assert "s&lt;vc&gt; a&amp;b" in rendered
        assert text.startswith("CRITICAL: ")
        assert f"{1:032x}" in text

    def test_webhook_body_is_versioned_and_complete(self) -> None:
        body = json.loads(webhook_body(self.alert(2), "https://g/{trace_id}"))
        assert {"version", "kind", "part", "parts", "rule", "window", "total", "since_last_alert",
                "violations"} == set(body)
        assert (1, 1) == (body["part"], body["parts"])
        assert "1" == body["version"]
        assert 20 == body["total"]
        assert f"https://g/{1:032x}" == body["violations"][1]["trace_url"]

    def test_signature_verifies_as_the_readme_says(self) -> None:
        body = b'{"version": "1"}'
        header = sign(SECRET, body, int(datetime.now(UTC).timestamp()))
        assert verify_signature(SECRET, header, body)
        assert not verify_signature(SECRET, header, body + b" ")
        assert not verify_signature("other", header, body)


class TestDelivery:
    def test_one_message_per_rule_window_and_route(self, receiver: Receiver, tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver)
        store = Store.open(settings.store)
        rule = noisy_rule()
        commit_window(store, rule, settings, 0, tuple(violation(i) for i in range(12)))
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=Clock(T0 + MINUTE))
        summary = asyncio.run(dispatcher.drain())
        assert 4 == summary.sent
        assert 1 == len(receiver.accepted(WEBHOOK_PATH))
        [bot] = receiver.accepted("/api/chat.postMessage")
        assert "#soc" == bot.json["channel"]
        [hook] = receiver.accepted("/hook")
        assert "ops" == hook.headers["x-team"]
        assert len(hook.headers["idempotency-key"]) == 64
        body = hook.json
        assert 12 == body["total"]
        assert 12 == len(body["violations"])  # a webhook gets every one; max_listed is for people
        slack = receiver.accepted(WEBHOOK_PATH)[0].json["blocks"][3]["text"]["text"]
        assert (5, True) == (slack.count("• "), slack.endswith("…and 7 more"))
        assert [] == store.outbox.undelivered()

    def test_receiver_down_then_up_delivers_each_exactly_once(self, receiver: Receiver,
                                                              tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers={k: v for k, v in routes(receiver).items()
                                                                   if k != "console"})
        store = Store.open(settings.store)
        rule = noisy_rule()
        clock = Clock(T0 + MINUTE)
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        commit_window(store, rule, settings, 0, (violation(1),))
        receiver.stop()  # connection refused
        for _ in range(3):
            assert 3 == asyncio.run(dispatcher.drain()).retry
            clock.advance(seconds=10)
        receiver.start()
        receiver.fail_with(503, times=3)
        receiver.fail_with(429, times=1, retry_after="7")
        for _ in range(8):
            asyncio.run(dispatcher.drain())
            clock.advance(seconds=10)
        assert 1 == len(receiver.accepted(WEBHOOK_PATH))
        assert 1 == len(receiver.accepted("/api/chat.postMessage"))
        assert 1 == len(receiver.accepted("/hook"))
        assert [] == store.outbox.undelivered()
        for _ in range(3):  # acknowledged ones never again
            asyncio.run(dispatcher.drain())
            clock.advance(minutes=30)
        assert 3 == len(receiver.accepted())

    @pytest.mark.parametrize("route", ["team-slack", "soc-bot", "ops-hook"])
    def test_429_retry_after_is_honoured(self, receiver: Receiver, tmp_path: Path, route: str) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers={route: routes(receiver)[route]})
        store = Store.open(settings.store)
        commit_window(store, noisy_rule(), settings, 0, (violation(1),))
        receiver.fail_with(429, times=1, retry_after="120")
        clock = Clock(T0 + MINUTE)
        assert 1 == asyncio.run(build_dispatcher(settings, store, Metrics(dict), clock=clock).drain()).retry
        [row] = store.outbox.undelivered()
        assert row.next_attempt_at >= clock.now + timedelta(seconds=120)
        assert 1 == row.attempts
        clock.advance(seconds=121)
        assert 1 == asyncio.run(build_dispatcher(settings, store, Metrics(dict), clock=clock).drain()).sent

    def test_a_permanent_4xx_is_dead_lettered_not_retried(self, receiver: Receiver, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": routes(receiver)["ops-hook"]})
        store = Store.open(settings.store)
        commit_window(store, noisy_rule(), settings, 0, (violation(1),))
        receiver.fail_with(400, times=1)  # refused for good
        clock = Clock(T0 + MINUTE)
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        assert 1 == asyncio.run(dispatcher.drain()).dead
        requests = len(receiver.received)
        for _ in range(5):
            clock.advance(minutes=10)
            asyncio.run(dispatcher.drain())
        assert requests == len(receiver.received)
        [dead] = store.outbox.undelivered()
        assert dead.dead
        assert "400" in (dead.last_error or "")
        assert 1.0 == dispatcher.metrics.outbox_dead._value.get()
        assert 0 == main(["violations", "--config", str(tmp_path / "betrace.yaml"), "--format", "json"])
        out = capsys.readouterr()
        [row] = [json.loads(line) for line in out.out.splitlines()]
        assert [{"route": dead.route, "state": "dead", "error": dead.last_error}] == row["notifications"]
        assert "1 dead-lettered" in out.err

    def test_retries_end_after_max_age(self, receiver: Receiver, tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": routes(receiver)["ops-hook"]},
                                   max_age="1m")
        store = Store.open(settings.store)
        commit_window(store, noisy_rule(), settings, 0, (violation(1),))
        receiver.fail_with(503, times=100)
        clock = Clock(T0 + timedelta(seconds=1))
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        outcomes = []
        for _ in range(10):
            summary = asyncio.run(dispatcher.drain())
            outcomes.append("dead" if summary.dead else "retry" if summary.retry else "-")
            clock.advance(seconds=20)
        assert "dead" in outcomes
        assert outcomes.index("dead") >= 2
        assert "still failing after" in (store.outbox.undelivered()[0].last_error or "")

    def test_realert_holds_messages_down_and_counts_stay_right(self, receiver: Receiver,
                                                              tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": routes(receiver)["ops-hook"]},
                                   realert="15m")
        store = Store.open(settings.store)
        rule = noisy_rule()
        clock = Clock(T0)
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        total = 0
        for index in range(60):  # an hour of one-minute windows, each with 3 new violations
            commit_window(store, rule, settings, index, tuple(violation(index * 3 + k) for k in range(3)))
            total += 3
            clock.now = T0 + (index + 1) * MINUTE
            asyncio.run(dispatcher.drain())
        clock.advance(minutes=15)
        asyncio.run(dispatcher.drain())
        bodies = [r.json for r in receiver.accepted("/hook")]
        assert 4 <= len(bodies) <= 5
        assert total == sum(b["total"] for b in bodies)
        assert bodies[0]["since_last_alert"] is None
        assert all(b["since_last_alert"] for b in bodies[1:])
        assert 180 == len(store.violations())
        assert [] == store.outbox.undelivered()

    def test_send_resolved_once_after_a_clean_window(self, receiver: Receiver, tmp_path: Path) -> None:
        hook = {**routes(receiver)["ops-hook"], "send_resolved": True, "min_severity": "high"}
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": hook}, realert="0s")
        store = Store.open(settings.store)
        rule = noisy_rule()
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=Clock(T0 + timedelta(hours=1)))
        commit_window(store, rule, settings, 0, (violation(1),))
        commit_window(store, rule, settings, 1, ())
        commit_window(store, rule, settings, 2, ())
        asyncio.run(dispatcher.drain())
        assert ["violations", "resolved"] == [r.json["kind"] for r in receiver.accepted("/hook")]

    def test_min_severity_filters_a_route(self, receiver: Receiver, tmp_path: Path) -> None:
        hook = {**routes(receiver)["ops-hook"], "min_severity": "critical"}
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": hook})
        store = Store.open(settings.store)
        commit_window(store, noisy_rule(), settings, 0, (violation(1),))  # high < critical
        assert [] == store.outbox.undelivered()

    def test_no_secret_in_logs_or_errors(self, receiver: Receiver, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        settings = notify_settings(tmp_path, receiver)
        store = Store.open(settings.store)
        commit_window(store, noisy_rule(), settings, 0, (violation(1),))
        receiver.fail_with(500, times=3)
        asyncio.run(build_dispatcher(settings, store, Metrics(dict), clock=Clock(T0 + MINUTE)).drain())
        receiver.stop()
        asyncio.run(build_dispatcher(settings, store, Metrics(dict), clock=Clock(T0 + MINUTE * 60)).drain())
        logs = capsys.readouterr().err
        errors = " ".join(r.last_error or "" for r in store.outbox.undelivered())
        assert "notification.retry" in logs
        for secret in (WEBHOOK_PATH, BOT_TOKEN, SECRET):
            assert secret not in logs
            assert secret not in errors


@needs_recordings
class TestWithTheDaemon:
    def test_run_once_notifies_and_a_crash_before_sending_loses_nothing(self, receiver: Receiver,
                                                                      tmp_path: Path) -> None:
        rules = tmp_path / "rules.d"
        rules.mkdir()
        (rules / "sre.yaml").write_text((RULES_D / "sre.yaml").read_text())
        with TempoDouble() as tempo:
            tempo.push(dataset())
            settings = notify_settings(tmp_path, receiver, tempo_url=tempo.url, rules_dir=rules)
            clock = Clock.at(LAST_TRACE + 150)  # on the 5m grid

            async def crash_before_sending() -> None:
                daemon = await open_daemon(settings, clock=clock)
                for rule in daemon.live.rules.values():
                    await daemon.run_rule(rule)  # committed, outbox filled, never drained: a crash now
                await daemon.close()

            asyncio.run(crash_before_sending())
            assert [] == receiver.received
            store = Store.open(settings.store)
            assert store.outbox.undelivered()

            async def restart() -> None:
                daemon = await open_daemon(settings, clock=clock)
                await daemon.run_once()
                await daemon.close()

            asyncio.run(restart())
            assert [] == store.outbox.undelivered()
            hooks = [r.json for r in receiver.accepted("/hook")]
            found = {(h["rule"]["id"], v["trace_id"]) for h in hooks for v in h["violations"]}
            assert expected_pairs(dataset(), tmp_path, rules) == found
            assert len(hooks) == len({h["rule"]["id"] for h in hooks})  # one message per rule here
            assert len(receiver.accepted(WEBHOOK_PATH)) == len(hooks)
            assert len(receiver.accepted("/api/chat.postMessage")) == len(hooks)


class TestNotifyTestCommand:
    def test_reports_what_the_receiver_answered(self, receiver: Receiver, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        notify_settings(tmp_path, receiver)
        config = str(tmp_path / "betrace.yaml")
        assert 0 == main(["notify", "test", "soc-bot", "--config", config])
        assert "soc-bot: delivered; the receiver answered: 200 ok" in capsys.readouterr().out
        assert 0 == main(["notify", "test", "ops-hook", "--config", config])
        assert "200 accepted" in capsys.readouterr().out
        receiver.fail_with(400)
        assert 3 == main(["notify", "test", "team-slack", "--config", config])
        assert "team-slack: refused; the receiver answered: 400" in capsys.readouterr().out
        assert 2 == main(["notify", "test", "nope", "--config", config])
        assert "the config has: console, ops-hook, soc-bot, team-slack" in capsys.readouterr().err

    def test_route_validation(self, receiver: Receiver, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
        bad = {"a": {"type": "slack", "token": "xoxb-1"}, "b": {"type": "webhook", "url": "ftp://x"},
               "c": {"type": "pager"}}
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store="sqlite:///x.db",
                              notifiers=bad, default_notifiers=["missing"])
        assert 2 == main(["run", "--once", "--config", str(path)])
        err = capsys.readouterr().err
        assert "notifiers.a.slack: a bot token needs a channel" in err
        assert "notifiers.b.webhook.url" in err
        assert "notifiers.c" in err
        assert "xoxb-1" not in err


@needs_recordings
def test_kill_9_between_commit_and_send_then_restart(receiver: Receiver, tmp_path: Path) -> None:
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "sre.yaml").write_text((RULES_D / "sre.yaml").read_text())
    data = dataset(int(time.time()) // 600 * 600 - LAST_TRACE - 120)  # in the last whole 10m window
    with TempoDouble() as tempo:
        tempo.push(data)
        hook = {"ops-hook": routes(receiver)["ops-hook"]}
        path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'k.db'}",
                              rules_dir=rules, notifiers=hook, default_notifiers=["ops-hook"],
                              schedule__initial_lookback="20m", schedule__every="10m")
        receiver.slow(30)  # every delivery hangs: the process dies with notifications committed, unsent
        process = subprocess.Popen([sys.executable, "-m", "checker", "run", "--config", str(path)],  # noqa: S603
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = Store.open(f"sqlite:///{tmp_path / 'k.db'}")
        deadline = time.monotonic() + 30
        while len(store.outbox.undelivered()) < 3:
            assert time.monotonic() < deadline, "no notifications committed"
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=10)
        pending = store.outbox.undelivered()
        assert pending
        receiver.slow(0)
        done = subprocess.run([sys.executable, "-m", "checker", "run", "--once", "--config", str(path)],  # noqa: S603
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode in {0, 1}, done.stderr
        assert [] == store.outbox.undelivered()
        delivered = {(r.json["rule"]["id"], v["trace_id"]) for r in receiver.accepted("/hook")
                     for v in r.json["violations"]}
        assert expected_pairs(data, tmp_path, rules) == delivered
        keys = [r.headers["idempotency-key"] for r in receiver.accepted("/hook")]
        assert len(set(keys)) == 3  # one message per rule; a repeat after the crash has the same key


class TestEdgeCases:
    """Cases a review found: none of them may lose, bury or leak a notification."""

    def test_an_incomplete_window_still_notifies_its_violations(self, receiver: Receiver,
                                                                tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": routes(receiver)["ops-hook"]})
        store = Store.open(settings.store)
        rule = noisy_rule()
        store.start_checkpoint(rule.id, T0)
        record = WindowRecord(rule, T0, T0 + MINUTE, T0, 0.1, "incomplete", violations=(violation(1),),
                              error="1 candidates not judged")
        store.commit(record, notify_policy(settings).notice(rule, (T0, T0 + MINUTE)))
        assert 1 == len(store.outbox.undelivered())

    def test_a_slack_answer_that_is_not_json_is_retried_and_blocks_nothing(
            self, receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        settings = notify_settings(tmp_path, receiver)
        store = Store.open(settings.store)
        commit_window(store, noisy_rule(), settings, 0, (violation(1),))
        receiver.fail_with(503, times=3, text="upstream connect error")  # a proxy in front of every route
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=Clock(T0 + MINUTE))
        summary = asyncio.run(dispatcher.drain())
        assert (1, 3) == (summary.sent, summary.retry)  # the log route; the three others retried
        assert all(r.attempts == 1 and not r.dead for r in store.outbox.undelivered())
        receiver.fail_with(200, times=1, text="<html>not json</html>")
        config = str(tmp_path / "betrace.yaml")
        assert 3 == main(["notify", "test", "soc-bot", "--config", config])
        assert "retryable failure" in capsys.readouterr().out

    def test_max_age_is_per_row(self, receiver: Receiver, tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": routes(receiver)["ops-hook"]},
                                   max_age="10m", realert="0s")
        store = Store.open(settings.store)
        rule = noisy_rule()
        commit_window(store, rule, settings, 0, (violation(1),))  # created at T0
        receiver.fail_with(503, times=100)
        clock = Clock(T0 + MINUTE)
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        asyncio.run(dispatcher.drain())
        commit_window(store, rule, settings, 1, (violation(2),))  # created at T0 + 1m
        clock.now = T0 + timedelta(minutes=10, seconds=30)
        asyncio.run(dispatcher.drain())
        asyncio.run(dispatcher.drain())
        states = {r.payload["trace_ids"][0]: r.dead for r in store.outbox.undelivered()}
        assert {f"{1:032x}": True, f"{2:032x}": False} == states

    def test_resolved_never_overtakes_held_violations(self, receiver: Receiver, tmp_path: Path) -> None:
        hook = {**routes(receiver)["ops-hook"], "send_resolved": True}
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": hook}, realert="15m")
        store = Store.open(settings.store)
        rule = noisy_rule()
        clock = Clock(T0 + MINUTE)
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        commit_window(store, rule, settings, 0, (violation(1),))
        asyncio.run(dispatcher.drain())  # sent at T0+1m
        commit_window(store, rule, settings, 1, (violation(2),))  # held by realert until T0+16m
        commit_window(store, rule, settings, 2, ())  # clean: resolved
        for minute in range(3, 20):
            clock.now = T0 + minute * MINUTE
            asyncio.run(dispatcher.drain())
        kinds = [(r.json["kind"], r.json["total"]) for r in receiver.accepted("/hook")]
        assert [("violations", 1), ("violations", 1), ("resolved", 0)] == kinds

    def test_backfill_never_resolves_or_resets_the_live_alert(self, receiver: Receiver,
                                                              tmp_path: Path) -> None:
        hook = {**routes(receiver)["ops-hook"], "send_resolved": True}
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": hook})
        store = Store.open(settings.store)
        rule = noisy_rule()
        commit_window(store, rule, settings, 0, (violation(1),))  # live: firing
        store.start_checkpoint("backfill:x", T0)
        clean = WindowRecord(rule, T0, T0 + MINUTE, T0, 0.1, "ok", backfill=True, checkpoint="backfill:x")
        store.commit(clean, notify_policy(settings).notice(rule, (T0, T0 + MINUTE)))
        assert ["violations"] == [r.kind for r in store.outbox.undelivered()]

    def test_a_huge_retry_after_is_capped(self, receiver: Receiver, tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers={"ops-hook": routes(receiver)["ops-hook"]})
        store = Store.open(settings.store)
        commit_window(store, noisy_rule(), settings, 0, (violation(1),))
        receiver.fail_with(429, times=1, retry_after="1e12")
        clock = Clock(T0 + MINUTE)
        assert 1 == asyncio.run(build_dispatcher(settings, store, Metrics(dict), clock=clock).drain()).retry
        [row] = store.outbox.undelivered()
        assert row.next_attempt_at <= clock.now + timedelta(hours=24)

    def test_a_receiver_echoing_the_secret_path_does_not_leak_it(self, receiver: Receiver, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
        slack = {"team-slack": routes(receiver)["team-slack"]}
        settings = notify_settings(tmp_path, receiver, notifiers=slack)
        store = Store.open(settings.store)
        commit_window(store, noisy_rule(), settings, 0, (violation(1),))
        receiver.fail_with(404, text=f"Cannot POST {WEBHOOK_PATH}")
        asyncio.run(build_dispatcher(settings, store, Metrics(dict), clock=Clock(T0 + MINUTE)).drain())
        [row] = store.outbox.undelivered()
        secret = WEBHOOK_PATH.rsplit("/", 1)[-1]
        assert row.dead
        assert secret not in (row.last_error or "")
        assert secret not in capsys.readouterr().err

    def test_two_processes_on_one_sqlite_file_take_turns(self, tmp_path: Path) -> None:
        one, two = Store.open(f"sqlite:///{tmp_path / 'l.db'}"), Store.open(f"sqlite:///{tmp_path / 'l.db'}")
        held = one.try_lock("noisy")
        assert held is not None
        assert two.try_lock("noisy") is None
        held.release()
        again = two.try_lock("noisy")
        assert again is not None
        again.release()
