"""Retractions in Slack: a threaded reply under the original and the original struck (bot token),
a new message (incoming webhook, or an original the store does not know)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from daemon_kit import Clock, write_settings
from receivers import BOT_TOKEN, CHANNEL_ID, WEBHOOK_PATH, Receiver, block_problems
from tempo_double import TempoDouble
from test_notify import MINUTE, T0, noisy_rule, notify_settings, violation
from test_settled import T, push, run_once, span

from checker.cli import main
from checker.config import load_settings
from checker.daemon.factory import build_dispatcher, notify_policy
from checker.daemon.metrics import Metrics
from checker.notify.message import Payload
from checker.store import OutboxEntry, OutboxWrite, Store, WindowRecord
from checker.store.schema import slack_posts

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

    from checker.config import Settings
    from checker.engine import Violation
    from checker.rules.rule import Rule

REASON = "audit.log arrived later"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def slack_routes(receiver: Receiver, *names: str) -> dict[str, Any]:
    every = {"soc-bot": {"type": "slack", "token": BOT_TOKEN, "channel": "#soc",
                         "api_url": receiver.url + "/api/"},
             "team-slack": {"type": "slack", "webhook_url": receiver.url + WEBHOOK_PATH}}
    return {name: every[name] for name in names}


@dataclass(frozen=True)
class Retraction:
    """A commit's policy that writes one retraction per route (as an amendment's policy does)."""

    rule: Rule
    routes: Sequence[str]
    withdrawn: Sequence[Violation]
    window: tuple[Any, Any]

    def entries(self, new: Sequence[Violation], firing: Mapping[str, bool], *,
                outcome: str, backfill: bool) -> OutboxWrite:
        del new, firing, outcome, backfill
        payload = Payload.of("retracted", {"id": self.rule.id, "name": self.rule.name, "severity": "high",
                                           "frameworks": [], "controls": []},
                             self.window, self.withdrawn, 5, backfill=False, status="retracted",
                             reasons={v.trace_id: REASON for v in self.withdrawn})
        return OutboxWrite(tuple(OutboxEntry(route, payload.to_json()) for route in self.routes))


def announce(store: Store, rule: Rule, settings: Settings, index: int,
             violations: tuple[Violation, ...]) -> None:
    start = T0 + index * MINUTE
    store.start_checkpoint(rule.id, T0)
    store.commit(WindowRecord(rule, start, start + MINUTE, start, 0.1, "violations", violations=violations),
                 notify_policy(settings).notice(rule, (start, start + MINUTE)))


def retract(store: Store, rule: Rule, settings: Settings, index: int,
            withdrawn: tuple[Violation, ...]) -> None:
    start = T0 + index * MINUTE
    store.commit(WindowRecord(rule, start, start + MINUTE, start, 0.1, "ok"),
                 Retraction(rule, list(settings.notifiers), withdrawn, (T0, start + MINUTE)))


def api(receiver: Receiver, method: str) -> list[dict[str, Any]]:
    return [r.json for r in receiver.accepted(f"/api/{method}")]


def texts(blocks: list[dict[str, Any]]) -> str:
    return "\n".join([b.get("text", {}).get("text", "") for b in blocks]
                     + [e["text"] for b in blocks for e in b.get("elements", [])])


class TestBotRoute:
    def test_retraction_is_threaded_under_the_original_which_is_struck(self, receiver: Receiver,
                                                                         tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, realert="0s",
                                   notifiers=slack_routes(receiver, "soc-bot", "team-slack"))
        store = Store.open(settings.store)
        rule = noisy_rule()
        clock = Clock(T0 + MINUTE)
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        announce(store, rule, settings, 0, (violation(1), violation(2), violation(3)))
        assert 2 == asyncio.run(dispatcher.drain()).sent
        [original] = receiver.messages.values()
        assert (CHANNEL_ID, None) == (original.channel, original.thread_ts)

        # One of the three withdrawn: its line struck, the header kept, a reply in the thread.
        clock.advance(minutes=6)
        retract(store, rule, settings, 1, (violation(2),))
        assert 2 == asyncio.run(dispatcher.drain()).sent
        [update] = api(receiver, "chat.update")
        assert (CHANNEL_ID, original.ts) == (update["channel"], update["ts"])
        posted = api(receiver, "chat.postMessage")
        assert 2 == len(posted)
        reply = posted[1]
        assert original.ts == reply["thread_ts"]
        assert CHANNEL_ID == reply["channel"]
        assert f"{2:032x}" in reply["text"]
        assert REASON in reply["text"]
        assert REASON in texts(reply["blocks"])
        struck = texts(original.blocks)
        lines = {n: next(line for line in struck.split("\n") if f"{n:032x}" in line and "•" in line)
                 for n in (1, 2, 3)}
        assert lines[2].startswith("• ~<https://")
        assert lines[2].endswith("~")
        assert lines[1].startswith("• <https://")
        assert lines[3].startswith("• <https://")
        assert "header" == original.blocks[0]["type"]  # two still hold
        assert f"Withdrawn: `{2:032x}` {REASON}" in struck

        # The other two: the whole message now reads as withdrawn.
        clock.advance(minutes=6)
        retract(store, rule, settings, 2, (violation(1), violation(3)))
        asyncio.run(dispatcher.drain())
        assert [original.ts] * 2 == [u["ts"] for u in api(receiver, "chat.update")]
        replies = [m for m in receiver.messages.values() if m.thread_ts == original.ts]
        assert 2 == len(replies)
        assert original.blocks[0]["type"] == "section"
        assert original.blocks[0]["text"]["text"].startswith("*~HIGH: ")
        assert f"Withdrawn: {REASON}" == original.blocks[-1]["elements"][0]["text"]
        assert original.text.startswith("Withdrawn: ")
        assert [] == block_problems(original.blocks)
        assert 3 == len(receiver.messages)  # no new top-level message
        assert [] == store.outbox.undelivered()

        # The incoming-webhook route got a new message each time, saying what and why.
        hooks = [r.json for r in receiver.accepted(WEBHOOK_PATH)]
        assert 3 == len(hooks)
        assert hooks[1]["text"].startswith("Withdrawn: ")
        assert f"{2:032x} ({REASON})" in hooks[1]["text"]
        assert f"*Withdrawn because:* {REASON}" in texts(hooks[1]["blocks"])
        store.close()

    def test_an_unknown_original_gets_a_new_message(self, receiver: Receiver, tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers=slack_routes(receiver, "soc-bot"),
                                   realert="0s")
        store = Store.open(settings.store)
        rule = noisy_rule()
        clock = Clock(T0 + MINUTE)
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        announce(store, rule, settings, 0, (violation(1), violation(2)))
        asyncio.run(dispatcher.drain())
        [original] = receiver.messages.values()
        with store.engine.begin() as connection:  # as if posted before the store kept Slack's answers
            connection.execute(slack_posts.update().values(trace_ids=[f"{1:032x}"]))
        clock.advance(minutes=6)
        retract(store, rule, settings, 1, (violation(1), violation(2)))
        asyncio.run(dispatcher.drain())
        [update] = api(receiver, "chat.update")
        assert original.ts == update["ts"]
        threaded, fresh = list(api(receiver, "chat.postMessage"))[1:]
        assert original.ts == threaded["thread_ts"]
        assert f"{1:032x}" in threaded["text"]
        assert "thread_ts" not in fresh
        assert fresh["text"].startswith("Withdrawn: ")
        assert f"{2:032x} ({REASON})" in fresh["text"]
        assert f"{1:032x}" not in fresh["text"]
        assert [] == store.outbox.undelivered()
        store.close()

    def test_a_failed_update_is_retried_and_the_thread_gets_one_reply(self, receiver: Receiver,
                                                                       tmp_path: Path) -> None:
        settings = notify_settings(tmp_path, receiver, notifiers=slack_routes(receiver, "soc-bot"),
                                   realert="0s")
        store = Store.open(settings.store)
        rule = noisy_rule()
        clock = Clock(T0 + MINUTE)
        dispatcher = build_dispatcher(settings, store, Metrics(dict), clock=clock)
        announce(store, rule, settings, 0, (violation(1),))
        asyncio.run(dispatcher.drain())
        [original] = receiver.messages.values()
        clock.advance(minutes=6)
        retract(store, rule, settings, 1, (violation(1),))
        receiver.fail_with(503, times=1)  # the chat.update
        assert 1 == asyncio.run(dispatcher.drain()).retry
        [row] = store.outbox.undelivered()
        assert 1 == row.attempts
        assert "503" in (row.last_error or "")
        assert [] == [m for m in receiver.messages.values() if m.thread_ts]  # no reply before the update
        clock.advance(seconds=10)
        assert 1 == asyncio.run(dispatcher.drain()).sent
        assert ["/api/chat.postMessage", "/api/chat.update", "/api/chat.update", "/api/chat.postMessage"] == [
            r.path for r in receiver.received]
        assert 1 == original.updates
        assert [original.ts] == [m.thread_ts for m in receiver.messages.values() if m.thread_ts]
        assert [] == store.outbox.undelivered()
        store.close()

    def test_notify_test_still_works(self, receiver: Receiver, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        settings_path = tmp_path / "betrace.yaml"
        notify_settings(tmp_path, receiver, notifiers=slack_routes(receiver, "soc-bot", "team-slack"))
        for route in ("soc-bot", "team-slack"):
            assert 0 == main(["notify", "test", route, "--config", str(settings_path)])
        assert "delivered" in capsys.readouterr().out
        [posted] = receiver.messages.values()
        assert posted.text.startswith("BeTrace Checker test message")
        assert [] == api(receiver, "chat.update")


def test_end_to_end_late_audit_is_withdrawn_in_the_thread(tmp_path: Path, receiver: Receiver) -> None:
    """The daemon, the Tempo double and a late audit.log: provisional alert, then its retraction."""
    clock = Clock.at(T)
    at = T - 100
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - id: audited\n    severity: high\n    condition: |\n"
                                  "      when   { pii.access }\n      always { audit.log }\n")
    with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
        notifiers = slack_routes(receiver, "soc-bot", "team-slack")
        settings = load_settings(write_settings(
            tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 's.db'}", rules_dir=rules,
            notifiers=notifiers, default_notifiers=list(notifiers), delivery={"realert": "0s"},
            schedule={"every": "1m", "evaluation_delay": "0s", "initial_lookback": "2m", "jitter": "0s",
                      "settle": "5m", "trace_idle": "30s"}))
        push(tempo, span(1, 1, "GET /patients", at), span(1, 2, "pii.access", at + 1, parent=1))
        push(tempo, span(3, 1, "GET /patients", at), span(3, 2, "pii.access", at + 1, parent=1))
        run_once(settings, clock)
        [original] = receiver.messages.values()
        assert 1 == len(receiver.accepted(WEBHOOK_PATH))

        push(tempo, span(1, 3, "audit.log", at + 2, parent=1))
        clock.advance(minutes=6)
        run_once(settings, clock)
        [update] = api(receiver, "chat.update")
        assert original.ts == update["ts"]
        [reply] = [m for m in receiver.messages.values() if m.thread_ts]
        assert original.ts == reply.thread_ts
        assert f"{1:032x}" in reply.text
        assert REASON in reply.text
        assert f"{3:032x}" not in reply.text
        assert f"• ~`{1:032x}`" in texts(original.blocks)
        assert f"Withdrawn: `{1:032x}` {REASON}" in texts(original.blocks)
        hooks = [r.json for r in receiver.accepted(WEBHOOK_PATH)]
        assert 2 == len(hooks)
        assert hooks[1]["text"].startswith("Withdrawn: ")
        assert REASON in hooks[1]["text"]
        assert 2 == len(receiver.messages)
