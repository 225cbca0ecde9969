"""What every HTTP route shares: the answer's classification, redaction, and one capped POST.

Every answer is classified the same way: 2xx is delivered; 429, 5xx, timeouts and
connection errors are worth retrying (a ``Retry-After`` is kept); any other answer is final.
What a receiver answered is reported with every secret of the route removed.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import certifi
import httpx

from checker import __version__
from checker.redact import Redactor, url_secrets
from checker.timeparse import retry_after_seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
    from pathlib import Path

    from checker.store import SlackPost

# Bytes of a webhook's answer read (the rest is never downloaded), and characters of it reported.
ANSWER_LIMIT, DETAIL_LIMIT = 4096, 300
USER_AGENT = f"betrace-checker/{__version__}"
T = TypeVar("T")


@dataclass(frozen=True)
class Delivery:
    """The receiver's answer: delivered, worth retrying, or refused for good."""

    ok: bool
    detail: str
    retryable: bool = False
    retry_after: float | None = None
    status: int | None = None  # the HTTP status, when the receiver answered
    # Slack bot routes: the message posted for a violations alert, or the originals a
    # retraction struck (their ``withdrawn`` updated); the dispatcher stores them.
    posts: tuple[SlackPost, ...] = ()


def classify(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Delivery:
    """2xx delivered; 429 and 5xx retried (honouring Retry-After); anything else final."""
    if 200 <= status < 300:
        return Delivery(ok=True, detail=detail, status=status)
    value = (headers.get("Retry-After") or headers.get("retry-after")) if headers else None
    return Delivery(ok=False, detail=detail, retryable=status == 429 or status >= 500,
                    retry_after=retry_after_seconds(value), status=status)


def tls_context(ca_bundle: Path | None = None, *, insecure: bool = False) -> ssl.SSLContext | bool:
    """What a route checks its receiver's certificate against: off, a CA bundle, or certifi's.

    Built once per sender: loading a CA bundle takes tens of milliseconds, on the event loop.
    """
    if insecure:
        return False
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else certifi.where())


class Redacting:
    """Reports about a route without any of its secrets (a receiver may echo them)."""

    def __init__(self, secrets: list[str], template: str | None) -> None:
        self._redactor = Redactor([*secrets, *url_secrets(template)])

    def redact(self, text: str, *, cut_off: bool = False) -> str:
        """The text without any secret, then cut (cutting first could split a secret)."""
        return self._redactor.redact(text, DETAIL_LIMIT, cut_off=cut_off)

    def answer(self, status: int, body: bytes, *, cut_off: bool) -> str:
        """``<status> <body>`` as a detail: decoded leniently, secrets removed."""
        return self.redact(f"{status} {body.decode('utf-8', 'replace')}", cut_off=cut_off)

    def failure(self, err: BaseException) -> Delivery:
        """A timeout or connection error: retried."""
        kind = "timeout" if isinstance(err, (TimeoutError, httpx.TimeoutException)) else "connection error"
        return Delivery(ok=False, retryable=True,
                        detail=self.redact(f"{kind}: {type(err).__name__}: {err}".rstrip(": ")))

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, seconds: float,
                   verify: ssl.SSLContext | bool) -> Delivery:
        """POST ``body`` as JSON and classify the answer, within ``seconds`` for the whole exchange.

        httpx's timeout is per read: a receiver trickling a byte a second would never time
        out, so the whole request, answer included, runs under one deadline, and at most
        ``ANSWER_LIMIT`` bytes of the answer are read.
        """
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        try:
            async with (asyncio.timeout(seconds),
                        httpx.AsyncClient(timeout=seconds, verify=verify) as client,
                        client.stream("POST", url, content=body, headers=headers) as response):
                answer, more = await read_capped(response.aiter_bytes(), ANSWER_LIMIT)
        except (httpx.TransportError, httpx.DecodingError, TimeoutError) as err:
            return self.failure(err)
        return classify(response.status_code, self.answer(response.status_code, answer, cut_off=more),
                        response.headers)


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a streamed body, and whether more was left unread."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


async def send_in_parts(parts: Sequence[T], post: Callable[[T, int, int], Awaitable[Delivery]]) -> Delivery:
    """``post(part, number, count)`` for each part in turn, stopping at the first one refused.

    A retry sends every part again: receivers drop what they already have (an
    Idempotency-Key, Alertmanager's labels), so no state is kept of the parts delivered.
    """
    answer = Delivery(ok=True, detail="nothing to send")
    for number, part in enumerate(parts, start=1):
        answer = await post(part, number, len(parts))
        if not answer.ok:
            return replace(answer, detail=f"part {number} of {len(parts)}: {answer.detail}"
                           if len(parts) > 1 else answer.detail)
    return replace(answer, detail=f"{len(parts)} parts: {answer.detail}") if len(parts) > 1 else answer
