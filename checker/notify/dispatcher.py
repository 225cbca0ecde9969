"""Drain the outbox: group, hold back for ``realert``, send, and retry or dead-letter.

A row leaves the outbox only when its receiver accepted it, so a Slack outage or a crash
between commit and send loses nothing: pending rows are sent after a restart. Rows of one
rule and route are merged into one message; while the last message on a route is younger
than ``realert``, new rows wait and then go out together, counted. Several replicas take
turns per rule and route through the store's lock.

Each rule and route pair is delivered by a task of its own and each route has its own
slots, so a receiver that answers slowly (every request has a deadline) holds back only its
own messages: the daemon's passes go on without waiting for it, and the pass at the end of
``run --once`` waits at most ``delivery.flush_timeout``.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Protocol

import structlog

from checker.notify.http import Delivery
from checker.notify.message import Alert, Payload
from checker.notify.senders import SlackBotSender

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

    from checker.notify.senders import Sender
    from checker.notify.settings import DeliverySettings
    from checker.store import OutboxRow, Store

log = structlog.get_logger(__name__)


GroupKey = tuple[str, str, str, bool]  # rule, route, kind, backfill
Pair = tuple[str, str]  # rule, route
PARALLEL_SENDS = 4  # per route


def _key(row: OutboxRow) -> GroupKey:
    return (row.rule_id, row.route, row.kind, row.backfill)


class DeliveryMetrics(Protocol):
    """What delivery reports; the daemon's metrics implement it (as Tempo's client has an observer)."""

    def notification(self, route: str, outcome: str) -> None:
        """One attempt on ``route`` ended with ``outcome`` (sent, retry, dead, held)."""

    def outbox(self, pending: int, dead: int, oldest_age: float) -> None:
        """The outbox after a pass: rows waiting, dead letters, the oldest wait in seconds."""


@dataclass
class DrainSummary:
    """What one pass over the outbox did."""

    sent: int = 0
    retry: int = 0
    dead: int = 0
    held: int = 0


class Dispatcher:
    """Sends what the outbox holds, on a poll and whenever a commit adds rows."""

    def __init__(self, store: Store, senders: Mapping[str, Sender], delivery: DeliverySettings,
                 metrics: DeliveryMetrics, *, clock: Callable[[], datetime]) -> None:
        """``store`` holds the outbox and the per-route locks; ``senders`` are the routes by name.

        A row whose route has no sender is a dead letter (a route removed from the config).
        """
        self.store = store
        self.senders = senders
        self.delivery = delivery
        self.metrics = metrics
        self.clock = clock
        self.wake = asyncio.Event()
        self._sending: dict[Pair, asyncio.Task[None]] = {}  # deliveries still under way
        # Per route, kept across passes: deliveries still under way from an earlier pass count.
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Pass over the outbox until ``stop``, never waiting for a delivery; then let them finish."""
        while not stop.is_set():
            try:
                await self._start(DrainSummary())
                await self._gauges()
            except Exception:  # the outbox keeps the rows: nothing is lost by trying again later
                log.exception("notify.drain_failed")
            self.wake.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, self.wake)]
            await asyncio.wait(waiters, timeout=self.delivery.poll.total_seconds(),
                               return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        # Each is bounded by its route's timeout; the daemon's shutdown_grace bounds them all.
        await asyncio.gather(*self._sending.values(), return_exceptions=True)

    async def drain(self) -> DrainSummary:
        """One pass that waits for its deliveries, at most ``delivery.flush_timeout``.

        Deliveries still under way then are cancelled: their rows stay in the outbox and the
        next run sends them (a receiver sees them again under the same Idempotency-Key).
        """
        summary = DrainSummary()
        started = await self._start(summary)
        if started:
            _done, late = await asyncio.wait(started, timeout=self.delivery.flush_timeout.total_seconds())
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
                log.warning("notify.flush_timeout", unfinished=len(late),
                            timeout=self.delivery.flush_timeout.total_seconds(),
                            detail="their notifications stay in the outbox for the next run")
        await self._gauges()
        return summary

    async def _start(self, summary: DrainSummary) -> list[asyncio.Task[None]]:
        """A task per rule and route pair with due rows, unless one is still delivering that pair."""
        now = self.clock()
        groups: dict[GroupKey, list[OutboxRow]] = {}
        for row in await asyncio.to_thread(self.store.outbox.due, now):
            groups.setdefault(_key(row), []).append(row)
        by_pair: dict[Pair, list[GroupKey]] = {}
        for key in sorted(groups, key=lambda k: k[2] != "violations"):  # violations before resolved
            by_pair.setdefault((key[0], key[1]), []).append(key)
        started = []
        for pair, keys in by_pair.items():
            if pair in self._sending:
                continue
            route_slots = self._slots.setdefault(pair[1], asyncio.Semaphore(PARALLEL_SENDS))
            task = asyncio.create_task(self._deliver_pair(keys, route_slots, now, summary))
            self._sending[pair] = task
            task.add_done_callback(partial(self._finished, pair))
            started.append(task)
        return started

    def _finished(self, pair: Pair, task: asyncio.Task[None]) -> None:
        if self._sending.get(pair) is task:
            del self._sending[pair]

    async def _deliver_pair(self, keys: list[GroupKey], slots: asyncio.Semaphore, now: datetime,
                            summary: DrainSummary) -> None:
        async with slots:
            for key in keys:
                try:
                    await self._deliver(key, now, summary)
                except Exception:  # one bad group must not stop the others; its rows stay queued
                    log.exception("notify.group_failed", rule=key[0], route=key[1])

    async def _deliver(self, key: GroupKey, now: datetime, summary: DrainSummary) -> None:
        rule_id, route, kind, _backfill = key
        lock = await asyncio.to_thread(self.store.try_lock, f"notify:{route}:{rule_id}")
        if lock is None:
            return
        try:
            # Re-read under the lock: another process may have sent some of them meanwhile.
            pending = await asyncio.to_thread(self.store.outbox.pending, rule_id, route)
            rows = [r for r in pending if _key(r) == key and r.next_attempt_at <= now]
            # A retry resends exactly the rows of the failed attempt, under the same Idempotency-Key.
            rows = [r for r in rows if r.attempts] or rows
            if kind == "resolved" and any(r.kind == "violations" and not r.backfill for r in pending):
                later = max(r.next_attempt_at for r in pending if r.kind == "violations")
                await asyncio.to_thread(self.store.outbox.retry, rows, max(later, now) + timedelta(seconds=1),
                                        None, attempted=False)
                return  # "resolved" never overtakes the violations it resolves
            if rows:
                await self._send(rows, route, kind, now, summary)
        finally:
            await asyncio.to_thread(lock.release)

    async def _send(self, rows: list[OutboxRow], route: str, kind: str, now: datetime,
                    summary: DrainSummary) -> None:
        bound = log.bind(route=route, rule=rows[0].rule_id, rows=len(rows))
        sender = self.senders.get(route)
        if sender is None:
            error = f"route {route!r} is not in the config's notifiers"
            await asyncio.to_thread(self.store.outbox.dead, rows, error)
            self._count(route, "dead", summary)
            bound.error("notification.dead", error=error)
            return
        since = None
        if kind == "violations" and not rows[0].backfill:
            since = await asyncio.to_thread(self.store.outbox.last_sent, rows[0].rule_id, route)
            if since is not None and now < since + self.delivery.realert:
                await asyncio.to_thread(self.store.outbox.retry, rows, since + self.delivery.realert, None,
                                        attempted=False)
                self._count(route, "held", summary)
                return
        alert = Alert.merge([Payload.from_json(r.payload) for r in rows], [r.id for r in rows], route,
                            max_listed=self.delivery.max_listed, since=since)
        if kind == "retracted" and isinstance(sender, SlackBotSender):
            # Where the withdrawn traces were announced on this route: the retraction replies there.
            threads = await asyncio.to_thread(self.store.outbox.slack_posts, rows[0].rule_id, route,
                                              alert.trace_ids, alert.window_start)
            alert = replace(alert, threads=tuple(threads))
        try:
            delivery = await sender.send(alert)
        except Exception as err:  # noqa: BLE001  (a sender bug or an unforeseen answer: retried, never lost)
            # Only the type: the message of a library's exception may carry a URL with a secret in it.
            bound.error("notification.sender_failed", error=type(err).__name__)
            delivery = Delivery(ok=False, retryable=True, detail=f"unexpected {type(err).__name__}")
        await self._settle(rows, route, delivery, now, summary)

    async def _settle(self, rows: list[OutboxRow], route: str, delivery: Delivery, now: datetime,
                      summary: DrainSummary) -> None:
        bound = log.bind(route=route, rule=rows[0].rule_id, rows=len(rows), answer=delivery.detail)
        if delivery.ok:
            # Only live violations start a realert period; resolved and backfill messages do not.
            live = rows[0].kind == "violations" and not rows[0].backfill
            await asyncio.to_thread(partial(self.store.outbox.delivered, rows, now, sent=live,
                                            posts=delivery.posts))
            self._count(route, "sent", summary)
            bound.info("notification.delivered")
            return
        if not delivery.retryable:
            await asyncio.to_thread(self.store.outbox.dead, rows, delivery.detail)
            self._count(route, "dead", summary)
            bound.error("notification.dead", error=delivery.detail)
            return
        expired = [r for r in rows if now - r.created_at >= self.delivery.max_age]
        fresh = [r for r in rows if r not in expired]
        if expired:
            why = f"still failing after {self.delivery.max_age} (delivery.max_age): {delivery.detail}"
            await asyncio.to_thread(self.store.outbox.dead, expired, why)
            self._count(route, "dead", summary)
            bound.error("notification.dead", error=why, expired=len(expired))
        if fresh:
            at = now + self._backoff(max(r.attempts for r in fresh), delivery.retry_after)
            await asyncio.to_thread(self.store.outbox.retry, fresh, at, delivery.detail, attempted=True)
            self._count(route, "retry", summary)
            bound.warning("notification.retry", next_attempt=at.isoformat())

    def _backoff(self, attempts: int, retry_after: float | None) -> timedelta:
        """Exponential, with half of it random; a longer Retry-After wins, up to ``max_age``."""
        ceiling = min(self.delivery.max_backoff.total_seconds(),
                      self.delivery.backoff.total_seconds() * 2**attempts)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not cryptography
        if retry_after is not None and math.isfinite(retry_after):
            delay = max(delay, min(retry_after, self.delivery.max_age.total_seconds()))
        return timedelta(seconds=delay)

    def _count(self, route: str, outcome: str, summary: DrainSummary) -> None:
        self.metrics.notification(route, outcome)
        setattr(summary, outcome, getattr(summary, outcome) + 1)

    async def _gauges(self) -> None:
        pending, dead, oldest = await asyncio.to_thread(self.store.outbox.stats)
        self.metrics.outbox(pending, dead, (self.clock() - oldest).total_seconds() if oldest else 0.0)
