"""Notification routes and delivery settings, part of the daemon's config (``notifiers:``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from checker.config_types import Duration, Section
from checker.rules.rule import SEVERITIES, SEVERITY_RANK, Severity


class Route(Section):
    """What every route has: the least severe violation it carries, and resolved messages."""

    min_severity: Severity = "info"
    send_resolved: bool = False

    def accepts(self, severity: str) -> bool:
        """Whether a violation of ``severity`` goes to this route."""
        return SEVERITY_RANK.get(severity, len(SEVERITIES)) <= SEVERITY_RANK[self.min_severity]


class SlackRoute(Route):
    """Slack by incoming webhook (``webhook_url``) or by bot token and channel."""

    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"  # the Web API; tests point it at a local server

    @model_validator(mode="after")
    def _one_way_in(self) -> Self:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("give webhook_url, or token and channel")
        if self.token is not None and not self.channel:
            raise ValueError("a bot token needs a channel, e.g. channel: '#soc'")
        return self


class WebhookRoute(Route):
    """A JSON POST signed with HMAC-SHA256 when ``secret`` is set."""

    type: Literal["webhook"]
    url: SecretStr
    secret: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class LogRoute(Route):
    """Notifications as log lines (``notification.sent``), for development and as a fallback."""

    type: Literal["log"]


AnyRoute = Annotated[SlackRoute | WebhookRoute | LogRoute, Field(discriminator="type")]


class DeliverySettings(Section):
    """How the outbox is drained."""

    realert: Duration = timedelta(minutes=15)
    max_age: Duration = timedelta(hours=24)
    max_listed: int = Field(5, ge=1, le=20)
    poll: Duration = timedelta(seconds=5)
    backoff: Duration = timedelta(seconds=5)
    max_backoff: Duration = timedelta(minutes=10)
