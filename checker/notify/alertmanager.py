"""Alertmanager as a route: each violation an alert on ``POST /api/v2/alerts``.

Alertmanager identifies an alert by its labels, so every violation carries ``trace_id``:
two traces breaking one rule are two alerts, grouped by Alertmanager (by ``alertname``, the
rule id, say), never merged. Posting the same labels again updates the alert, which makes a
retry idempotent and lets a retraction end the alert it withdraws (``endsAt`` = now).

Violations are events, not states: nothing re-evaluates a finished trace to say that it
still violates, so nothing would re-send the alert as Prometheus re-sends a firing one.
Each alert therefore carries its end, ``alert_ttl`` after it was posted, and resolves on
its own then. Label names are made valid for Alertmanager 0.25 (``[a-zA-Z_][a-zA-Z0-9_]*``):
one bad name would make it refuse the whole request.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from checker.notify.http import Delivery, Redacting, send_in_parts, tls_context
from checker.notify.message import parts_of, trace_url
from checker.redact import basic_auth_token, mask_url

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from checker.notify.message import Alert
    from checker.notify.settings import AlertmanagerRoute

API_PATH = "/api/v2/alerts"
# What a refusal most likely means, for the person reading the dead letter.
HINTS = {
    400: "Alertmanager refused the alerts as invalid",
    401: "check the route's username/password or bearer_token",
    403: "check the route's username/password or bearer_token",
    404: "url is Alertmanager's base URL (with its --web.route-prefix), without /api/v2/alerts",
}
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    """``app.kubernetes.io/team`` → ``app_kubernetes_io_team``; a leading digit gets a ``_``."""
    name = _INVALID.sub("_", name) or "_"
    return f"_{name}" if name[0].isdigit() else name


def alert_labels(violation: Mapping[str, Any]) -> dict[str, str]:
    """The rule's own labels, then ours (which win): what makes this alert this alert.

    Several frameworks or controls are one comma-joined value (``SOC2,HIPAA``): Alertmanager
    has one value per label, and a matcher ``control=~".*CC6.7.*"`` still finds each.
    """
    found = {label_name(k): str(v) for k, v in (violation.get("labels") or {}).items()}
    found |= {"alertname": violation["rule_id"], "severity": violation["severity"],
              "framework": ",".join(violation.get("frameworks") or ()),
              "control": ",".join(violation.get("controls") or ()), "trace_id": violation["trace_id"]}
    return {name: value for name, value in found.items() if value}


def alert_annotations(alert: Alert, violation: Mapping[str, Any], template: str | None) -> dict[str, str]:
    """What a person reads in the notification; not part of the alert's identity."""
    found = {"summary": violation.get("reason", ""), "rule_name": alert.rule.get("name", ""),
             "status": violation.get("status", ""), "trace_url": trace_url(template, violation["trace_id"]),
             "runbook_url": alert.rule.get("runbook_url"),
             "retraction_reason": violation.get("retraction_reason")}
    return {name: str(value) for name, value in found.items() if value}


def to_alerts(alert: Alert, template: str | None, now: datetime, ttl: timedelta) -> list[dict[str, Any]]:
    """One Alertmanager alert per violation.

    ``startsAt`` is the trace's start (the window's for a violation without one, never after
    now: Alertmanager refuses an alert that ends before it starts); ``endsAt`` is now for a
    retraction, and for ``notify test`` (accepted, checked, and notifying no one), else now +
    ``ttl``.
    """
    ends = now if alert.kind in {"retracted", "test"} else now + ttl
    found = []
    for violation in alert.violations:
        nanos = int(violation.get("start_time_unix_nano") or 0)
        starts = datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else alert.window_start
        url = trace_url(template, violation["trace_id"])
        found.append({"labels": alert_labels(violation),
                      "annotations": alert_annotations(alert, violation, template),
                      "startsAt": min(starts, now).isoformat(), "endsAt": ends.isoformat(),
                      **({"generatorURL": url} if url else {})})
    return found


class AlertmanagerSender(Redacting):
    """Posts an alert's violations to Alertmanager, ``max_batch`` alerts a request."""

    def __init__(self, route: AlertmanagerRoute, template: str | None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        base = route.url.get_secret_value()
        super().__init__([*route.secrets(), *route.headers.values()], template)
        self._url = base.rstrip("/") + API_PATH
        self._shown = mask_url(self._url)
        self._headers = {**self._auth(route), **route.headers}
        self._tls = tls_context(route.ca_bundle, insecure=route.insecure)
        self._timeout = route.timeout.total_seconds()
        self._ttl = route.alert_ttl
        self._max_batch = route.max_batch
        self._template = template
        self._clock = clock

    @staticmethod
    def _auth(route: AlertmanagerRoute) -> dict[str, str]:
        if route.bearer_token is not None:
            return {"Authorization": f"Bearer {route.bearer_token.get_secret_value()}"}
        if route.username is not None:
            password = route.password.get_secret_value() if route.password else ""
            return {"Authorization": f"Basic {basic_auth_token(route.username, password)}"}
        return {}

    async def send(self, alert: Alert) -> Delivery:
        """POST the alerts in batches; a refusal names the URL and says what to check."""
        alerts = to_alerts(alert, self._template, self._clock(), self._ttl)
        return await send_in_parts(parts_of(alerts, self._max_batch), self._post)

    async def _post(self, alerts: list[dict[str, Any]], _part: int, _parts: int) -> Delivery:
        if not alerts:
            return Delivery(ok=True, detail="no violations to post")
        body = json.dumps(alerts, ensure_ascii=False).encode()
        answer = await self.post(self._url, body, self._headers, seconds=self._timeout, verify=self._tls)
        if answer.ok:
            return answer
        hint = HINTS.get(answer.status or 0)
        return replace(answer, detail=f"{self._shown}: {answer.detail}" + (f" ({hint})" if hint else ""))
