"""The daemon's Prometheus metrics, on a registry of its own (one daemon, one registry)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from datetime import datetime

    from prometheus_client.registry import Collector

    from checker.engine.violation import Violation

PREFIX = "betrace"


_CHECKPOINT_HELP = "Seconds between now and the end of the rule's last committed window"
_SETTLE_HELP = ("Seconds between now and the end of the rule's last window judged finally "
                "(normally about settle plus one batch)")


class _CheckpointLag:
    """Lag is computed at scrape time, so a stuck rule's lag keeps growing between runs."""

    def __init__(self, checkpoints: Callable[[], Mapping[str, datetime]],
                 settled: Callable[[], Mapping[str, datetime]]) -> None:
        self._checkpoints = checkpoints
        self._settled = settled

    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = time.time()
        for name, text, positions in (
                ("checkpoint_lag_seconds", _CHECKPOINT_HELP, self._checkpoints),
                ("settle_lag_seconds", _SETTLE_HELP, self._settled)):
            family = GaugeMetricFamily(f"{PREFIX}_{name}", text, labels=["rule"])
            for rule_id, position in sorted(positions().items()):
                family.add_metric([rule_id], now - position.timestamp())
            yield family


class Metrics:
    """Every metric docs/daemon.md lists, created on one registry."""

    def __init__(self, checkpoints: Callable[[], Mapping[str, datetime]],
                 settled: Callable[[], Mapping[str, datetime]] = dict) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.evaluations = Counter(f"{PREFIX}_evaluations", "Window evaluations by rule and outcome",
                                   ["rule", "outcome"], registry=r)
        self.violations = Counter(f"{PREFIX}_violations", "Violations recorded (first time seen) by rule",
                                  ["rule", "severity"], registry=r)
        self.control_violations = Counter(
            f"{PREFIX}_control_violations", "Violations recorded (first time seen), once for each "
            "compliance control their rule names", ["control"], registry=r)
        self.evaluation_seconds = Histogram(
            f"{PREFIX}_evaluation_duration_seconds", "Time to evaluate one window of one rule", ["rule"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.tempo_requests = Counter(f"{PREFIX}_tempo_requests", "Requests to Tempo by route and status",
                                      ["route", "status"], registry=r)
        self.rules_loaded = Gauge(f"{PREFIX}_rules_loaded", "Enabled rules currently scheduled", registry=r)
        self.rule_load_errors = Gauge(f"{PREFIX}_rule_load_errors",
                                      "Errors found in rules_dir at the last (re)load", registry=r)
        self.reloads = Counter(f"{PREFIX}_rule_reloads", "Reloads of rules_dir by result", ["result"],
                               registry=r)
        self.tempo_last_answer = Gauge(f"{PREFIX}_tempo_last_answer_timestamp_seconds",
                                       "When Tempo last answered an HTTP request", registry=r)
        self.notifications = Counter(f"{PREFIX}_notifications", "Notification attempts by route and outcome "
                                     "(sent, retry, dead, held by realert)", ["route", "outcome"], registry=r)
        self.outbox_pending = Gauge(f"{PREFIX}_outbox_pending", "Notifications waiting for delivery",
                                    registry=r)
        self.outbox_dead = Gauge(f"{PREFIX}_outbox_dead", "Notifications given up on (dead letters)",
                                 registry=r)
        self.outbox_oldest_age = Gauge(f"{PREFIX}_outbox_oldest_pending_age_seconds",
                                       "Age of the oldest pending notification", registry=r)
        self.in_scope = Counter(f"{PREFIX}_rule_in_scope_traces",
                                "Traces in a rule's scope as its windows are first judged (scope searches)",
                                ["rule"], registry=r)
        self.amendments = Counter(f"{PREFIX}_amendments", "Final passes' changes to provisional verdicts: "
                                  "late violations and retractions", ["rule", "kind"], registry=r)
        lag: Collector = _CheckpointLag(checkpoints, settled)
        r.register(lag)

    def violation(self, violation: Violation) -> None:
        """A violation recorded for the first time.

        Its trace ID goes in an exemplar, never a label: one series per rule or control however
        many traces break it, and Grafana still links the latest one to its trace.
        """
        exemplar = {"trace_id": violation.trace_id}
        self.violations.labels(violation.rule_id, violation.severity).inc(exemplar=exemplar)
        for control in violation.controls:
            self.control_violations.labels(control).inc(exemplar=exemplar)

    def tempo_request(self, route: str, status: str) -> None:
        """The Tempo client's observer."""
        self.tempo_requests.labels(route, status).inc()
        if status.isdigit():
            self.tempo_last_answer.set_to_current_time()

    def notification(self, route: str, outcome: str) -> None:
        """The dispatcher's report of one delivery attempt."""
        self.notifications.labels(route, outcome).inc()

    def outbox(self, pending: int, dead: int, oldest_age: float) -> None:
        """The dispatcher's report after a pass over the outbox."""
        self.outbox_pending.set(pending)
        self.outbox_dead.set(dead)
        self.outbox_oldest_age.set(oldest_age)
