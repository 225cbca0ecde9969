"""Delivery to one route: Slack (webhook or bot token), a webhook, Alertmanager, or the log.

Every answer is classified the same way (``http.classify``); what a receiver answered is
reported with every secret of the route removed. Every request
has one deadline (the route's ``timeout``) for the whole exchange, answer included, and no
answer is read past a few kilobytes (a megabyte for Slack's).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from checker.notify.alertmanager import AlertmanagerSender
from checker.notify.http import Delivery, Redacting, classify, send_in_parts, tls_context
from checker.notify.message import (
    part_key,
    parts_of,
    retraction_reply,
    slack_message,
    struck_message,
    webhook_body,
)
from checker.notify.settings import AlertmanagerRoute, LogRoute, SlackRoute, WebhookRoute
from checker.redact import url_parts
from checker.store import SlackPost

if TYPE_CHECKING:

    from checker.notify.message import Alert
    from checker.notify.settings import AnyRoute

log = structlog.get_logger(__name__)
# Slack Web API errors that a later attempt may not see.
SLACK_TRANSIENT = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                             "request_timeout"})
# chat.postMessage echoes the message it posted (up to 50 blocks): Slack's answers get more room.
SLACK_ANSWER_LIMIT = 1 << 20


class Sender(Protocol):
    """Sends one alert to one route."""

    async def send(self, alert: Alert) -> Delivery:
        """Deliver, or say why not."""


class _CappedResponse(aiohttp.ClientResponse):
    """An answer read to ``SLACK_ANSWER_LIMIT`` bytes at most, then the connection dropped.

    slack-sdk reads whole answers; an endless or 1 GB one must not cost more memory than this.
    """

    async def read(self) -> bytes:
        """At most ``SLACK_ANSWER_LIMIT`` bytes of the body."""
        if self._body is None:
            try:
                self._body = await self.content.readexactly(SLACK_ANSWER_LIMIT)
            except asyncio.IncompleteReadError as short:  # the whole answer, shorter than the cap
                self._body = short.partial
            self.close()  # anything past the cap stays unread
        return self._body


def _slack_session(timeout: float) -> aiohttp.ClientSession:
    """What slack-sdk sends through: a deadline for the whole request and a capped answer."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), response_class=_CappedResponse)


class SlackWebhookSender(Redacting):
    """An incoming-webhook URL: the URL itself is the secret."""

    def __init__(self, route: SlackRoute, template: str | None) -> None:
        assert route.webhook_url is not None  # noqa: S101  (validated by SlackRoute)
        self._url = route.webhook_url.get_secret_value()
        super().__init__(route.secrets(), template)
        self._template = template
        self._timeout = route.timeout.total_seconds()

    async def send(self, alert: Alert) -> Delivery:
        """POST the Block Kit message to the webhook URL, within the route's timeout."""
        text, blocks = slack_message(alert, self._template)
        try:
            async with asyncio.timeout(self._timeout), _slack_session(self._timeout) as session:
                client = AsyncWebhookClient(self._url, session=session, retry_handlers=[])
                response = await client.send(text=text, blocks=blocks)
        except (aiohttp.ClientError, TimeoutError) as err:
            return self.failure(err)
        return classify(response.status_code, self.redact(f"{response.status_code} {response.body}"),
                        response.headers and {k: str(v) for k, v in response.headers.items()})


class SlackBotSender(Redacting):
    """``chat.postMessage`` with a bot token."""

    def __init__(self, route: SlackRoute, template: str | None) -> None:
        assert route.token is not None  # noqa: S101  (validated by SlackRoute)
        assert route.channel is not None  # noqa: S101
        self._token = route.token.get_secret_value()
        super().__init__(route.secrets(), template)
        self._channel = route.channel
        self._api_url = route.api_url
        self._template = template
        self._timeout = route.timeout.total_seconds()

    async def send(self, alert: Alert) -> Delivery:
        """``chat.postMessage`` within the route's timeout; Slack's error codes are classified too.

        A retraction replies in the thread of each message that announced one of its traces
        (``alert.threads``) and strikes that message with ``chat.update``; the traces of no known
        message get a new message. Every call runs under the one deadline.
        """
        try:
            async with asyncio.timeout(self._timeout), _slack_session(self._timeout) as session:
                client = AsyncWebClient(token=self._token, base_url=self._api_url, session=session,
                                        retry_handlers=[])
                if alert.kind == "retracted":
                    return await self._retract(client, alert)
                text, blocks = slack_message(alert, self._template)
                response = await client.chat_postMessage(channel=self._channel, text=text, blocks=blocks)
        except SlackApiError as err:
            return self._refused(err)
        except (aiohttp.ClientError, TimeoutError) as err:
            return self.failure(err)
        except (AttributeError, TypeError, ValueError) as err:  # slack-sdk choking on a non-Slack answer
            return Delivery(ok=False, retryable=True,
                            detail=f"an answer that is not Slack's ({type(err).__name__})")
        posts: tuple[SlackPost, ...] = ()
        channel, ts = response.get("channel"), response.get("ts")
        if alert.kind == "violations" and channel and ts:
            traces = alert.trace_ids or tuple(v["trace_id"] for v in alert.violations)
            posts = (SlackPost(0, str(channel), str(ts), traces, text, blocks),)
        return Delivery(ok=True, detail=f"{response.status_code} ok ts={ts}", posts=posts)

    async def _retract(self, client: AsyncWebClient, alert: Alert) -> Delivery:
        """Strike and reply under each known original, then one new message for the rest.

        ``chat.update`` goes first: it can be repeated, so a retry after a failed reply
        rewrites the original the same way and only then replies.
        """
        reasons = {v["trace_id"]: str(v.get("retraction_reason") or "") for v in alert.violations}
        withdrawn = list(alert.trace_ids or reasons)
        unknown = dict.fromkeys(withdrawn)
        struck: list[SlackPost] = []
        answers: list[str] = []
        for post in alert.threads:
            mine = [t for t in withdrawn if t in post.trace_ids]
            if not mine:
                continue
            for trace in mine:
                unknown.pop(trace, None)
            now_withdrawn = {**post.withdrawn, **{t: reasons.get(t, "") for t in mine}}
            text, blocks = struck_message(post, now_withdrawn)
            await client.chat_update(channel=post.channel, ts=post.ts, text=text, blocks=blocks)
            text, blocks = retraction_reply(alert, mine, reasons, self._template)
            reply = await client.chat_postMessage(channel=post.channel, thread_ts=post.ts, text=text,
                                                  blocks=blocks)
            answers.append(f"thread_ts={post.ts} ts={reply.get('ts')}")
            struck.append(replace(post, withdrawn=now_withdrawn))
        if unknown:
            rest = replace(alert, violations=[v for v in alert.violations if v["trace_id"] in unknown],
                           total=alert.total - (len(withdrawn) - len(unknown)),
                           trace_ids=tuple(unknown), threads=())
            text, blocks = slack_message(rest, self._template)
            response = await client.chat_postMessage(channel=self._channel, text=text, blocks=blocks)
            answers.append(f"ts={response.get('ts')}")
        return Delivery(ok=True, detail="200 ok " + " ".join(answers), posts=tuple(struck))

    def _refused(self, err: SlackApiError) -> Delivery:
        """Slack said no (``ok: false``), or answered something that is not Slack's JSON.

        slack-sdk puts a SlackResponse, a raw HTTP response or a string in ``err.response``.
        """
        response: Any = err.response
        status = int(getattr(response, "status_code", None) or getattr(response, "status", None) or 0)
        error = ""
        if isinstance(getattr(response, "data", None), dict):
            error = str(response.data.get("error", ""))
        raw_headers = getattr(response, "headers", None) or {}
        headers = {str(k): str(v) for k, v in dict(raw_headers).items()}
        detail = self.redact(f"{status} {error or 'an answer that is not Slack API JSON'}")
        retryable = status == 429 or status >= 500 or error in SLACK_TRANSIENT or not error
        return Delivery(ok=False, detail=detail, retryable=retryable,
                        retry_after=classify(status, detail, headers).retry_after)


class WebhookSender(Redacting):
    """A JSON POST; with a ``secret``, ``X-Betrace-Signature: t=<unix>,v1=<hex>`` over ``<t>.<body>``."""

    def __init__(self, route: WebhookRoute, template: str | None) -> None:
        self._url = route.url.get_secret_value()
        self._secret = route.secret.get_secret_value() if route.secret else None
        # Every header value, not only auth-looking ones: only this receiver's answers are redacted.
        super().__init__([*route.secrets(), *url_parts(self._url), *route.headers.values()], template)
        self._headers = dict(route.headers)
        self._timeout = route.timeout.total_seconds()
        self._max_batch = route.max_batch
        self._template = template
        self._tls = tls_context()

    async def send(self, alert: Alert) -> Delivery:
        """POST every violation, ``max_batch`` a message, each part signed and under its own key.

        A part refused ends the attempt: the retry sends every part again under the same
        keys, so a receiver that keeps Idempotency-Keys drops the parts it already has.
        """
        return await send_in_parts(parts_of(alert.violations, self._max_batch),
                                   lambda listed, part, parts: self._post(replace(alert, violations=listed),
                                                                          part, parts))

    async def _post(self, alert: Alert, part: int, parts: int) -> Delivery:
        body = webhook_body(alert, self._template, part, parts)
        headers = {"Idempotency-Key": part_key(alert.key, part, parts), **self._headers}
        if self._secret is not None:
            headers["X-Betrace-Signature"] = sign(self._secret, body, int(time.time()))
        return await self.post(self._url, body, headers, seconds=self._timeout, verify=self._tls)


class LogSender:
    """A structured log line per alert."""

    async def send(self, alert: Alert) -> Delivery:
        """Log the alert at warning level."""
        log.warning("notification.sent", kind=alert.kind, rule=alert.rule["id"], total=alert.total,
                    traces=[v["trace_id"] for v in alert.violations], title=alert.title,
                    window_start=alert.window_start.isoformat(), window_end=alert.window_end.isoformat())
        await asyncio.sleep(0)
        return Delivery(ok=True, detail="logged")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """``t=<unix>,v1=<hex HMAC-SHA256 of "<unix>." + body>``, as receivers verify it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def sender_for(route: AnyRoute, template: str | None) -> Sender:
    """The sender a route's ``type`` calls for."""
    if isinstance(route, SlackRoute):
        return SlackWebhookSender(route, template) if route.webhook_url else SlackBotSender(route, template)
    if isinstance(route, WebhookRoute):
        return WebhookSender(route, template)
    if isinstance(route, AlertmanagerRoute):
        return AlertmanagerSender(route, template)
    assert isinstance(route, LogRoute)  # noqa: S101
    return LogSender()
