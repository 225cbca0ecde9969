"""Notification policy and delivery without a daemon config: no Tempo URL, no rules_dir.

The policy is pure (routes + new violations + firing state -> outbox entries), and a
``Dispatcher`` is built from a store, senders and the delivery section, so a webhook's
delivery is tested over real HTTP on loopback with nothing else set up.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from daemon_kit import Clock
from receivers import Receiver, verify_signature

from checker.daemon.metrics import Metrics
from checker.engine.violation import SpanRef, Violation
from checker.notify.dispatcher import Dispatcher
from checker.notify.message import Payload
from checker.notify.policy import NotifyPolicy
from checker.notify.senders import WebhookSender
from checker.notify.settings import DeliverySettings, LogRoute, WebhookRoute
from checker.rules.load import load_text
from checker.store import Store, WindowRecord

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from checker.rules.rule import Rule

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
WINDOW = (T0, T0 + timedelta(minutes=1))
SECRET = "whsec-delivery-test"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(secret=SECRET) as started:
        yield started


def rule() -> Rule:
    return load_text("rules:\n  - id: r1\n    name: One\n    severity: high\n"
                     "    condition: never { db.query }\n", "r1.yaml").rules[0]


def violation(n: int, severity: str = "high") -> Violation:
    return Violation(rule_id="r1", rule_name="One", severity=severity, trace_id=f"{n:032x}",
                     reason="forbidden", frameworks=(), controls=(), missing=(), forbidden=(),
                     trigger_spans=(SpanRef("db.query", f"{n:016x}"),), root_service="api",
                     root_name="GET /x", start_time_unix_nano=1)


class TestPolicy:
    """The decisions the store used to make, as a pure function of plain data."""

    def policy(self, **route: object) -> NotifyPolicy:
        log = LogRoute.model_validate({"type": "log", **route})
        return NotifyPolicy({"log": log}, ("log",), max_listed=5)

    @pytest.mark.parametrize(("outcome", "firing", "backfill", "expected"), [
        ("ok", {"log": True}, False, (["resolved"], {"log": False})),
        ("ok", {"log": False}, False, ([], {})),
        ("ok", {"log": True}, True, ([], {})),  # a backfill never resolves the live alert
        ("incomplete", {"log": True}, False, ([], {})),  # only a clean window resolves
    ])
    def test_resolved_only_for_a_firing_rule_on_a_clean_live_window(
            self, outcome: str, firing: dict[str, bool], backfill: bool,
            expected: tuple[list[str], dict[str, bool]]) -> None:
        notice = self.policy(send_resolved=True).notice(rule(), WINDOW)
        assert notice is not None
        written = notice.entries([], firing, outcome=outcome, backfill=backfill)
        assert expected == ([e.payload["kind"] for e in written.entries], written.firing)

    def test_violations_go_by_severity_and_set_firing_unless_backfill(self) -> None:
        notice = self.policy(min_severity="critical").notice(rule(), WINDOW)
        assert notice is not None
        new = [violation(1), violation(2, "critical")]
        live = notice.entries(new, {}, outcome="violations", backfill=False)
        backfill = notice.entries(new, {}, outcome="violations", backfill=True)
        [entry] = live.entries
        assert [f"{2:032x}"] == Payload.from_json(entry.payload).trace_ids
        assert {"log": True} == live.firing
        assert {} == backfill.firing
        assert Payload.from_json(backfill.entries[0].payload).backfill

    def test_failed_and_skipped_windows_notify_nothing(self) -> None:
        notice = self.policy(send_resolved=True).notice(rule(), WINDOW)
        assert notice is not None
        for outcome in ("failed", "skipped"):
            written = notice.entries([violation(1)], {"log": True}, outcome=outcome, backfill=False)
            assert () == written.entries

    def test_a_rule_without_a_known_route_has_no_notice(self) -> None:
        assert NotifyPolicy({}, ("gone",), max_listed=5).notice(rule(), WINDOW) is None

    def test_the_payload_survives_its_json(self) -> None:
        payload = Payload.of("violations", {"id": "r1"}, WINDOW, [violation(1)], 5, backfill=False)
        stored = json.loads(json.dumps(payload.to_json()))
        assert stored == Payload.from_json(stored).to_json()


class TestDispatcher:
    def test_a_committed_violation_reaches_a_signed_webhook(self, receiver: Receiver, tmp_path: Path) -> None:
        route = WebhookRoute(type="webhook", url=receiver.url + "/hook", secret=SECRET)
        policy = NotifyPolicy({"hook": route}, ("hook",), max_listed=5)
        store = Store.open(f"sqlite:///{tmp_path / 'd.db'}")
        store.start_checkpoint("r1", T0)
        store.commit(WindowRecord(rule(), *WINDOW, T0, 0.1, "violations", violations=(violation(1),)),
                     policy.notice(rule(), WINDOW))
        senders = {"hook": WebhookSender(route, None)}
        dispatcher = Dispatcher(store, senders, DeliverySettings(), Metrics(dict), clock=lambda: WINDOW[1])
        assert 1 == asyncio.run(dispatcher.drain()).sent
        [received] = receiver.accepted("/hook")
        assert verify_signature(SECRET, received.headers["x-betrace-signature"], received.body)
        body = received.json
        assert ("violations", 1, [f"{1:032x}"]) == (
            body["kind"], body["total"], [v["trace_id"] for v in body["violations"]])
        assert [] == store.outbox.undelivered()

    def test_every_violation_reaches_a_webhook_in_parts_under_stable_keys(self, receiver: Receiver,
                                                                          tmp_path: Path) -> None:
        route = WebhookRoute(type="webhook", url=receiver.url + "/hook", secret=SECRET)  # max_batch 100
        policy = NotifyPolicy({"hook": route}, ("hook",), max_listed=5)
        store = Store.open(f"sqlite:///{tmp_path / 'd.db'}")
        store.start_checkpoint("r1", T0)
        store.commit(WindowRecord(rule(), *WINDOW, T0, 0.1, "violations",
                                  violations=tuple(violation(n) for n in range(250))),
                     policy.notice(rule(), WINDOW))
        clock = Clock(WINDOW[1])
        delivery = DeliverySettings.model_validate({"backoff": "1s", "max_backoff": "2s"})
        senders = {"hook": WebhookSender(route, None)}
        dispatcher = Dispatcher(store, senders, delivery, Metrics(dict), clock=clock)
        receiver.fail_with(200, times=2, text="accepted")
        receiver.fail_with(503)  # the third part: the whole alert is retried
        assert 1 == asyncio.run(dispatcher.drain()).retry
        clock.advance(seconds=5)
        assert 1 == asyncio.run(dispatcher.drain()).sent

        first, retry = receiver.received[:3], receiver.received[3:]
        assert ([200, 200, 503], [200, 200, 200]) == ([r.status for r in first], [r.status for r in retry])
        assert all(verify_signature(SECRET, r.headers["x-betrace-signature"], r.body) for r in retry)
        bodies = [r.json for r in retry]
        assert [(1, 3, 100), (2, 3, 100), (3, 3, 50)] == [
            (b["part"], b["parts"], len(b["violations"])) for b in bodies]
        traces = [v["trace_id"] for b in bodies for v in b["violations"]]
        assert sorted(traces) == sorted(violation(n).trace_id for n in range(250))
        assert {250} == {b["total"] for b in bodies}
        keys = [r.headers["idempotency-key"] for r in retry]
        assert 3 == len(set(keys))
        assert keys == [r.headers["idempotency-key"] for r in first]
        assert [] == store.outbox.undelivered()
