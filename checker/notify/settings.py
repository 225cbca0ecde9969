"""Notification routes and delivery settings, part of the daemon's config (``notifiers:``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, ClassVar, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from checker.config_types import Duration, HttpAuth, Section
from checker.redact import header_secrets, url_parts, url_secrets
from checker.rules.rule import SEVERITIES, SEVERITY_RANK, Severity

# Plain http is for a local test receiver only: anywhere else the URL (a secret) crosses a network.
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be more than 0s, e.g. 5s")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
# Violations per message (webhook) or per request (Alertmanager) on routes that get them all.
MaxBatch = Annotated[int, Field(ge=1)]


class Route(Section):
    """What every route has: the least severe violation it carries, and resolved messages."""

    min_severity: Severity = "info"
    send_resolved: bool = False
    # provisional: told at once, and told again when a late span withdraws a violation;
    # final: told only what holds once the window has settled (never a retraction).
    verdicts: Literal["provisional", "final"] = "provisional"
    # People read the first ``delivery.max_listed`` violations and the total; a machine (a
    # SIEM, a ticketing system, Alertmanager) must get every one, in batches.
    lists_all: ClassVar[bool] = False

    def accepts(self, severity: str) -> bool:
        """Whether a violation of ``severity`` goes to this route."""
        return SEVERITY_RANK.get(severity, len(SEVERITIES)) <= SEVERITY_RANK[self.min_severity]

    def secrets(self) -> list[str]:
        """What must never be logged or stored: registered with the process-wide redactor."""
        return []


class SlackRoute(Route):
    """Slack by incoming webhook (``webhook_url``) or by bot token and channel."""

    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"  # the Web API; tests point it at a local server
    timeout: PositiveDuration = timedelta(seconds=15)  # for the whole request, answer included

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = urlsplit(value.get_secret_value())
            local = url.scheme == "http" and url.hostname in LOOPBACK
            if not url.hostname or not (url.scheme == "https" or local):
                raise ValueError("must be an https:// URL (Slack's incoming webhooks are "
                                 "https://hooks.slack.com/services/...)")
        return value

    def secrets(self) -> list[str]:
        """The bot token, or the webhook URL and its parts (the URL is the credential)."""
        if self.webhook_url is not None:
            return url_parts(self.webhook_url.get_secret_value())
        return [self.token.get_secret_value()] if self.token else []

    @model_validator(mode="after")
    def _one_way_in(self) -> Self:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("give webhook_url, or token and channel")
        if self.token is not None and not self.channel:
            raise ValueError("a bot token needs a channel, e.g. channel: '#soc'")
        return self


def _http_url(value: SecretStr) -> SecretStr:
    url = urlsplit(value.get_secret_value())
    if url.scheme not in {"http", "https"} or not url.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrl = Annotated[SecretStr, AfterValidator(_http_url)]


class WebhookRoute(Route):
    """A JSON POST signed with HMAC-SHA256 when ``secret`` is set."""

    type: Literal["webhook"]
    url: HttpUrl
    secret: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveDuration = timedelta(seconds=10)  # for the whole request, answer included
    max_batch: MaxBatch = 100
    lists_all: ClassVar[bool] = True

    def secrets(self) -> list[str]:
        """The whole URL, its password or token parameters, the signing secret, auth headers."""
        url = self.url.get_secret_value()
        return [url, *url_secrets(url), self.secret.get_secret_value() if self.secret else "",
                *header_secrets(self.headers)]


class AlertmanagerRoute(Route, HttpAuth):
    """Alertmanager's ``POST /api/v2/alerts``: one alert per violation, ended after ``alert_ttl``.

    A violation is an event about a finished trace, not a state that a later evaluation
    could see end: nothing would re-send it as Prometheus re-sends a firing alert. So each
    alert carries its own end, ``alert_ttl`` after it was posted, and a retraction ends it
    at once. Auth and TLS keys are Tempo's (``HttpAuth``).
    """

    type: Literal["alertmanager"]
    url: HttpUrl  # the base URL, e.g. http://alertmanager:9093 (may carry a path prefix)
    timeout: PositiveDuration = timedelta(seconds=10)  # for the whole request, answer included
    alert_ttl: PositiveDuration = timedelta(hours=1)
    max_batch: MaxBatch = 100
    lists_all: ClassVar[bool] = True

    @model_validator(mode="after")
    def _events_not_states(self) -> Self:
        if self.send_resolved:
            raise ValueError("send_resolved does not apply to alertmanager routes: each alert ends "
                             "on its own after alert_ttl, and a retraction ends it at once")
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("give username and password, or bearer_token, not both")
        return self

    def secrets(self) -> list[str]:
        """The URL's credentials, the password (also as Basic auth sends it), token, auth headers."""
        return [*self.auth_secrets(), *url_secrets(self.url.get_secret_value())]


class LogRoute(Route):
    """Notifications as log lines (``notification.sent``), for development and as a fallback."""

    type: Literal["log"]


AnyRoute = Annotated[SlackRoute | WebhookRoute | AlertmanagerRoute | LogRoute, Field(discriminator="type")]
# The ``type`` values: pydantic puts the one that matched in an error's location.
ROUTE_TYPES = frozenset(get_args(route.model_fields["type"].annotation)[0]
                        for route in (SlackRoute, WebhookRoute, AlertmanagerRoute, LogRoute))


class DeliverySettings(Section):
    """How the outbox is drained."""

    realert: Duration = timedelta(minutes=15)
    max_age: Duration = timedelta(hours=24)
    max_listed: int = Field(5, ge=1, le=20)
    poll: PositiveDuration = timedelta(seconds=5)
    backoff: Duration = timedelta(seconds=5)
    max_backoff: Duration = timedelta(minutes=10)
    # How long run --once and backfill --notify wait for receivers before exiting; what is
    # not delivered by then stays in the outbox for the next run.
    flush_timeout: PositiveDuration = timedelta(seconds=60)
