"""Alertmanager as a route: the alerts it is sent, its refusals, and a real Alertmanager's notifications."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from alertmanager_kit import Alertmanager, wait_for
from daemon_kit import Clock, write_settings
from pydantic import ValidationError
from receivers import ALERTS_PATH, SINK_PATH, Receiver

from checker.config import load_settings
from checker.daemon.metrics import Metrics
from checker.engine.violation import SpanRef, Violation
from checker.errors import CheckerError
from checker.notify.alertmanager import AlertmanagerSender, label_name, to_alerts
from checker.notify.dispatcher import Dispatcher
from checker.notify.message import Alert, Kind, sample_alert
from checker.notify.policy import NotifyPolicy, rule_info
from checker.notify.settings import AlertmanagerRoute, DeliverySettings
from checker.redact import basic_auth_token
from checker.rules.load import load_text
from checker.store import Store, WindowRecord

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from checker.rules.rule import Rule

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TEMPLATE = "https://grafana.example.com/explore?trace={trace_id}"
TOKEN = "am-bearer-t0ken-s3cret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def pii_rule(rule_id: str = "pii-audited") -> Rule:
    return load_text(
        f"rules:\n  - id: {rule_id}\n    name: PII access is audited\n    severity: high\n"
        "    compliance_frameworks: [SOC2, HIPAA]\n    controls: ['SOC2:CC6.7', 'HIPAA:164.312(b)']\n"
        "    labels: {team: privacy, app.kubernetes.io/part-of: shop, alertname: spoofed}\n"
        "    runbook_url: https://wiki.example.com/runbooks/pii\n"
        "    condition: never { db.query }\n", f"{rule_id}.yaml").rules[0]


def violation(rule: Rule, n: int, start: datetime = T0) -> Violation:
    return Violation(rule_id=rule.id, rule_name=rule.name, severity=rule.severity, trace_id=f"{n:032x}",
                     reason=f"pii.access without audit.log ({n})", frameworks=rule.frameworks,
                     controls=rule.controls, trigger_spans=(SpanRef("pii.access", f"{n:016x}"),),
                     missing=("audit.log",), forbidden=(), root_service="api", root_name="GET /x",
                     start_time_unix_nano=int(start.timestamp() * 1e9), labels=dict(rule.labels))


def route(url: str, **extra: Any) -> AlertmanagerRoute:
    return AlertmanagerRoute.model_validate({"type": "alertmanager", "url": url, **extra})


def alert(rule: Rule, *violations: Violation, kind: Kind = "violations") -> Alert:
    listed = [{**v.to_json(), "status": "confirmed"} for v in violations]
    return Alert(kind, rule_info(rule), T0, T0 + MINUTE, listed, len(listed), key="k")


class Outbox:
    """A store whose commits notify one Alertmanager route, and a dispatcher draining it."""

    def __init__(self, tmp_path: Path, am: AlertmanagerRoute, clock: Clock, **delivery: Any) -> None:
        self.store = Store.open(f"sqlite:///{tmp_path / 'am.db'}")
        self.policy = NotifyPolicy({"am": am}, ("am",), max_listed=5)
        settings = DeliverySettings.model_validate({"backoff": "1s", "max_backoff": "2s", **delivery})
        self.dispatcher = Dispatcher(self.store, {"am": AlertmanagerSender(am, TEMPLATE)}, settings,
                                     Metrics(dict), clock=clock)

    def commit(self, rule: Rule, index: int, violations: tuple[Violation, ...]) -> None:
        start = T0 + index * MINUTE
        self.store.start_checkpoint(rule.id, T0)
        notice = self.policy.notice(rule, (start, start + MINUTE))
        self.store.commit(WindowRecord(rule, start, start + MINUTE, start, 0.1, "violations",
                                       violations=violations), notice)

    def retract(self, rule: Rule, index: int, withdrawn: tuple[Violation, ...]) -> None:
        """The final pass over the provisional windows finds ``withdrawn`` compliant after all."""
        start = T0 + index * MINUTE
        notice = self.policy.notice(rule, (T0, start + MINUTE))
        assert notice is not None
        amendment = replace(notice, verdict="amendment",
                            retracted=tuple((v, "audit.log arrived later") for v in withdrawn))
        self.store.commit(WindowRecord(rule, start, start + MINUTE, start, 0.1, "ok"), amendment)

    def drain(self) -> Any:
        return asyncio.run(self.dispatcher.drain())


class TestAlerts:
    """What one violation becomes: Alertmanager's labels, annotations and times."""

    def test_labels_annotations_and_times(self) -> None:
        rule = pii_rule()
        now = T0 + timedelta(hours=2)
        [sent] = to_alerts(alert(rule, violation(rule, 7)), TEMPLATE, now, timedelta(hours=1))
        assert {"alertname": "pii-audited", "severity": "high", "framework": "SOC2,HIPAA",
                "control": "SOC2:CC6.7,HIPAA:164.312(b)", "trace_id": f"{7:032x}", "team": "privacy",
                "app_kubernetes_io_part_of": "shop"} == sent["labels"]
        assert {"summary": "pii.access without audit.log (7)", "rule_name": "PII access is audited",
                "status": "confirmed", "trace_url": TEMPLATE.format(trace_id=f"{7:032x}"),
                "runbook_url": "https://wiki.example.com/runbooks/pii"} == sent["annotations"]
        assert (T0.isoformat(), (now + timedelta(hours=1)).isoformat()) == (sent["startsAt"], sent["endsAt"])
        assert TEMPLATE.format(trace_id=f"{7:032x}") == sent["generatorURL"]

    def test_a_retraction_ends_the_same_alert_now(self) -> None:
        rule = pii_rule()
        now = T0 + timedelta(hours=2)
        firing = to_alerts(alert(rule, violation(rule, 1)), TEMPLATE, now, timedelta(hours=1))
        withdrawn = alert(rule, violation(rule, 1), kind="retracted")
        withdrawn.violations[0]["retraction_reason"] = "audit.log arrived later"
        [ended] = to_alerts(withdrawn, TEMPLATE, now, timedelta(hours=1))
        assert firing[0]["labels"] == ended["labels"]
        assert now.isoformat() == ended["endsAt"]
        assert "audit.log arrived later" == ended["annotations"]["retraction_reason"]

    def test_no_link_no_generator_url_and_never_starting_after_now(self) -> None:
        rule = pii_rule()
        now = T0 + timedelta(hours=2)
        future = violation(rule, 1, start=now + timedelta(minutes=5))  # a skewed clock in the trace
        [sent] = to_alerts(alert(rule, future), None, now, timedelta(hours=1))
        assert "generatorURL" not in sent
        assert "trace_url" not in sent["annotations"]
        assert now.isoformat() == sent["startsAt"]

    @pytest.mark.parametrize(("name", "expected"), [
        ("team", "team"), ("app.kubernetes.io/name", "app_kubernetes_io_name"), ("1st", "_1st"),
        ("", "_"), ("ünïcode", "_n_code"),
    ])
    def test_label_names_are_valid_for_alertmanager(self, name: str, expected: str) -> None:
        assert expected == label_name(name)


class TestRouteConfig:
    def test_send_resolved_is_refused_with_the_reason(self) -> None:
        with pytest.raises(ValidationError, match="ends on its own after alert_ttl"):
            route("http://am:9093", send_resolved=True)

    @pytest.mark.parametrize("kind", ["alertmanager", "webhook"])
    def test_max_batch_below_one_is_a_config_error(self, kind: str, tmp_path: Path) -> None:
        notifiers = {"r": {"type": kind, "url": "http://127.0.0.1:9", "max_batch": 0}}
        store = f"sqlite:///{tmp_path / 'x.db'}"
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store=store, notifiers=notifiers)
        with pytest.raises(CheckerError) as raised:
            load_settings(path)
        assert (f"notifiers.r.{kind}.max_batch = 0: Input should be greater than or equal to 1 "
                "(env BETRACE_NOTIFIERS__R__MAX_BATCH)") in str(raised.value)

    def test_secrets_are_registered(self) -> None:
        basic = route("https://am.example.com", username="betrace", password="pa55w0rd-x")
        assert {"pa55w0rd-x", "YmV0cmFjZTpwYTU1dzByZC14"} <= set(basic.secrets())
        assert TOKEN in route("https://am.example.com", bearer_token=TOKEN).secrets()
        with pytest.raises(ValidationError, match="not both"):
            route("https://am", username="u", password="p", bearer_token=TOKEN)


    def test_its_secrets_never_reach_a_log(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        notifiers = {"am": {"type": "alertmanager", "url": "https://am.example.com",
                            "username": "betrace", "password": "pa55w0rd-log"}}
        load_settings(write_settings(tmp_path, tempo_url="http://127.0.0.1:9",
                                     store=f"sqlite:///{tmp_path / 'x.db'}", notifiers=notifiers))
        basic = basic_auth_token("betrace", "pa55w0rd-log")
        structlog.get_logger("test").error("notification.dead", error=f"401 Basic {basic} pa55w0rd-log")
        err = capsys.readouterr().err
        assert "notification.dead" in err
        assert "pa55w0rd-log" not in err
        assert basic not in err


class TestBadAnswers:
    """Alertmanager's refusals get what every route gets: retried, dead-lettered, redacted."""

    def setup(self, tmp_path: Path, receiver: Receiver, **extra: Any) -> tuple[Outbox, Clock]:
        clock = Clock(T0 + MINUTE)
        outbox = Outbox(tmp_path, route(receiver.url + "/am", bearer_token=TOKEN, **extra), clock)
        rule = pii_rule()
        outbox.commit(rule, 0, (violation(rule, 1), violation(rule, 2)))
        return outbox, clock

    def test_posted_with_auth_to_the_api_path(self, tmp_path: Path, receiver: Receiver) -> None:
        outbox, _clock = self.setup(tmp_path, receiver)
        assert 1 == outbox.drain().sent
        [posted] = receiver.accepted("/am" + ALERTS_PATH)
        assert f"Bearer {TOKEN}" == posted.headers["authorization"]
        assert [f"{1:032x}", f"{2:032x}"] == [a["labels"]["trace_id"] for a in json.loads(posted.body)]

    @pytest.mark.parametrize(("status", "hint"), [
        (400, "Alertmanager refused the alerts as invalid"),
        (401, "check the route's username/password or bearer_token"),
        (404, "url is Alertmanager's base URL (with its --web.route-prefix), without /api/v2/alerts"),
    ])
    def test_a_4xx_is_dead_lettered_with_url_status_body_and_hint(self, tmp_path: Path, receiver: Receiver,
                                                                 status: int, hint: str) -> None:
        outbox, _clock = self.setup(tmp_path, receiver)
        receiver.fail_with(status, text=f'{{"code":{status},"message":"bad label; token {TOKEN}"}}')
        assert 1 == outbox.drain().dead
        [dead] = outbox.store.outbox.undelivered()
        error = dead.last_error or ""
        assert error.startswith(f"{receiver.url}/am/api/v2/alerts: {status} ")
        assert '"message":"bad label; token <redacted>"' in error
        assert error.endswith(f"({hint})")
        assert TOKEN not in error
        assert 1 == len(receiver.received)  # never retried

    def test_a_500_is_retried_then_delivered(self, tmp_path: Path, receiver: Receiver) -> None:
        outbox, clock = self.setup(tmp_path, receiver)
        receiver.fail_with(500, text="upstream down")
        assert 1 == outbox.drain().retry
        [waiting] = outbox.store.outbox.undelivered()
        assert (1, False) == (waiting.attempts, waiting.dead)
        assert "500 upstream down" in (waiting.last_error or "")
        clock.advance(seconds=5)
        assert 1 == outbox.drain().sent
        assert [] == outbox.store.outbox.undelivered()
        first, second = ([a["labels"] for a in json.loads(r.body)] for r in receiver.received)
        assert first == second  # the same alerts: Alertmanager updates them, nothing doubles

    def test_a_timeout_is_retried(self, tmp_path: Path, receiver: Receiver) -> None:
        outbox, _clock = self.setup(tmp_path, receiver, timeout="0.3s")
        receiver.slow(1.0)
        assert 1 == outbox.drain().retry
        [waiting] = outbox.store.outbox.undelivered()
        assert (waiting.last_error or "").startswith(f"{receiver.url}/am/api/v2/alerts: timeout")

    def test_batches_of_max_batch_and_a_failed_part_retries_all(self, tmp_path: Path,
                                                               receiver: Receiver) -> None:
        clock = Clock(T0 + MINUTE)
        outbox = Outbox(tmp_path, route(receiver.url, max_batch=2), clock)
        rule = pii_rule()
        outbox.commit(rule, 0, tuple(violation(rule, n) for n in range(5)))
        receiver.fail_with(200, times=1, text="")  # the first part goes through
        receiver.fail_with(503, times=1)
        assert 1 == outbox.drain().retry
        [waiting] = outbox.store.outbox.undelivered()
        assert (waiting.last_error or "").startswith("part 2 of 3: ")
        clock.advance(seconds=5)
        assert 1 == outbox.drain().sent
        sizes = [len(json.loads(r.body)) for r in receiver.received]
        assert [2, 2, 2, 2, 1] == sizes


def test_a_real_alertmanager_groups_notifies_and_resolves(tmp_path: Path, receiver: Receiver) -> None:
    """Two rules' violations reach Alertmanager's receiver grouped by rule; a retraction resolves."""
    with Alertmanager(tmp_path, receiver.url + SINK_PATH) as am:
        tried = asyncio.run(AlertmanagerSender(route(am.url), TEMPLATE).send(sample_alert()))
        assert (True, "200 ") == (tried.ok, tried.detail)  # notify test: accepted, already ended
        outbox = Outbox(tmp_path, route(am.url, alert_ttl="1h"), Clock(T0 + MINUTE))
        recent = datetime.now(UTC).replace(microsecond=0) - MINUTE
        pii, other = pii_rule(), pii_rule("card-data-encrypted")
        outbox.commit(pii, 0, (violation(pii, 1, recent), violation(pii, 2, recent)))
        outbox.commit(other, 0, (violation(other, 3, recent),))
        assert 2 == outbox.drain().sent

        def groups(bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {b["groupLabels"]["alertname"]: b for b in bodies if b["status"] == "firing"}

        firing = groups(wait_for(receiver, SINK_PATH, lambda bodies: len(groups(bodies)) == 2))
        assert {"pii-audited", "card-data-encrypted"} == set(firing)
        pii_alerts = sorted(firing["pii-audited"]["alerts"], key=lambda a: a["labels"]["trace_id"])
        assert [f"{1:032x}", f"{2:032x}"] == [a["labels"]["trace_id"] for a in pii_alerts]
        first = pii_alerts[0]
        assert {"alertname": "pii-audited", "severity": "high", "framework": "SOC2,HIPAA",
                "control": "SOC2:CC6.7,HIPAA:164.312(b)", "team": "privacy",
                "app_kubernetes_io_part_of": "shop", "trace_id": f"{1:032x}"} == first["labels"]
        assert "pii.access without audit.log (1)" == first["annotations"]["summary"]
        assert "https://wiki.example.com/runbooks/pii" == first["annotations"]["runbook_url"]
        assert TEMPLATE.format(trace_id=f"{1:032x}") == first["generatorURL"]
        assert recent == datetime.fromisoformat(first["startsAt"])

        outbox.retract(other, 1, (violation(other, 3, recent),))
        assert 1 == outbox.drain().sent
        bodies = wait_for(receiver, SINK_PATH, lambda found: any(b["status"] == "resolved" for b in found))
        [resolved] = [b for b in bodies if b["status"] == "resolved"]
        assert "card-data-encrypted" == resolved["groupLabels"]["alertname"]
        [ended] = resolved["alerts"]
        assert ("resolved", f"{3:032x}") == (ended["status"], ended["labels"]["trace_id"])
        assert "audit.log arrived later" == ended["annotations"]["retraction_reason"]
        assert not any(b["status"] == "resolved" and b["groupLabels"]["alertname"] == "pii-audited"
                       for b in bodies)
        assert "betrace-test" not in {b["groupLabels"]["alertname"] for b in bodies}
