"""The outbox: notifications written with their violations, removed only once delivered.

Rows are filled inside the store's commit transaction (``fill``) and drained by the
dispatcher (``Outbox``). ``alert_state`` remembers, per rule and route, when the last
message went out (for ``realert``) and whether the rule is firing (for ``send_resolved``).
The tables store rows and decide nothing: which rows a window makes, and when a message
counts for ``realert``, is the notification policy's to say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import and_, delete, func, select, update

from checker.store.schema import alert_state, outbox, slack_posts, upsert_insert

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy import Connection, Engine

    from checker.engine import Violation


@dataclass(frozen=True)
class OutboxEntry:
    """A notification to write: its route and its payload's JSON, stored as given."""

    route: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class OutboxWrite:
    """What one commit adds to the outbox, and the firing flags it sets, route by route."""

    entries: tuple[OutboxEntry, ...] = ()
    firing: dict[str, bool] = field(default_factory=dict)


class OutboxPolicy(Protocol):
    """Decides, inside a commit, which notifications a window's new violations make.

    The store hands it what it read in the transaction (the violations not seen before and
    the rule's firing state) and writes back what it returns: the decision is the
    notification policy's (``checker.notify.policy``), the atomicity the store's.
    """

    def entries(self, new: Sequence[Violation], firing: Mapping[str, bool], *,
                outcome: str, backfill: bool) -> OutboxWrite:
        """The rows to add and the firing flags to set."""
        ...


@dataclass(frozen=True)
class SlackPost:
    """A ``violations`` message posted on a Slack bot-token route: where it is and what it said.

    ``id`` is 0 until stored. ``withdrawn`` holds the traces a retraction has struck in it so
    far, with the reason; ``text`` and ``blocks`` stay what was first posted.
    """

    id: int
    channel: str
    ts: str
    trace_ids: tuple[str, ...]
    text: str
    blocks: list[dict[str, Any]]
    withdrawn: dict[str, str] = field(default_factory=dict)
    posted_at: datetime | None = None


@dataclass(frozen=True)
class OutboxRow:
    """A pending or dead notification."""

    id: int
    rule_id: str
    route: str
    payload: dict[str, Any]
    created_at: datetime
    next_attempt_at: datetime
    attempts: int
    dead: bool
    last_error: str | None

    @property
    def kind(self) -> str:
        """``violations`` or ``resolved``."""
        return str(self.payload["kind"])

    @property
    def backfill(self) -> bool:
        """Written by ``betrace backfill --notify``: outside the live alert state."""
        return bool(self.payload.get("backfill"))


def fill(connection: Connection, policy: OutboxPolicy, *, rule_id: str, evaluation_id: int,
         new: Sequence[Violation], outcome: str, backfill: bool, now: datetime) -> None:
    """Inside a commit: ask ``policy`` with the rule's firing state, write what it returns.

    ``now`` is the evaluation's clock, which the dispatcher's clock is compared with.
    """
    firing = {row.route: bool(row.firing) for row in connection.execute(
        select(alert_state.c.route, alert_state.c.firing).where(alert_state.c.rule_id == rule_id))}
    written = policy.entries(new, firing, outcome=outcome, backfill=backfill)
    for entry in written.entries:
        connection.execute(outbox.insert().values(
            rule_id=rule_id, evaluation_id=evaluation_id, route=entry.route, payload=entry.payload,
            created_at=now, next_attempt_at=now, attempts=0, dead=False))
    for route, flag in written.firing.items():
        _set_state(connection, rule_id, route, firing=flag)


def _set_state(connection: Connection, rule_id: str, route: str, **values: Any) -> None:
    row = {"rule_id": rule_id, "route": route, "firing": False, **values}
    statement = upsert_insert(connection, alert_state).values(row)
    connection.execute(statement.on_conflict_do_update(index_elements=["rule_id", "route"], set_=values))


class Outbox:
    """What the dispatcher reads and writes; synchronous, called through ``asyncio.to_thread``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def due(self, now: datetime) -> list[OutboxRow]:
        """Rows to attempt now, oldest first."""
        return self._rows(and_(outbox.c.dead.is_(False), outbox.c.next_attempt_at <= now))

    def undelivered(self) -> list[OutboxRow]:
        """Every pending and dead row."""
        return self._rows(None)

    def pending(self, rule_id: str, route: str) -> list[OutboxRow]:
        """The rows of one rule and route still to send (due or not)."""
        return self._rows(and_(outbox.c.dead.is_(False), outbox.c.rule_id == rule_id,
                               outbox.c.route == route))

    def _rows(self, condition: Any) -> list[OutboxRow]:
        query = select(outbox).order_by(outbox.c.id)
        if condition is not None:
            query = query.where(condition)
        with self.engine.connect() as connection:
            return [OutboxRow(r.id, r.rule_id, r.route, r.payload, r.created_at, r.next_attempt_at,
                              r.attempts, r.dead, r.last_error) for r in connection.execute(query)]

    def last_sent(self, rule_id: str, route: str) -> datetime | None:
        """When the last message for this rule went out on this route."""
        with self.engine.connect() as connection:
            sent: datetime | None = connection.scalar(select(alert_state.c.last_sent_at).where(
                alert_state.c.rule_id == rule_id, alert_state.c.route == route))
            return sent

    def delivered(self, rows: Sequence[OutboxRow], at: datetime, *, sent: bool,
                  posts: Sequence[SlackPost] = ()) -> int:
        """Remove delivered rows; with ``sent``, remember ``at`` as the route's last message.

        ``posts``, in the same transaction: Slack messages the delivery posted (``id`` 0: added)
        or struck (their ``withdrawn`` replaced). Returns how many rows were still there.
        """
        with self.engine.begin() as connection:
            removed = connection.execute(delete(outbox).where(outbox.c.id.in_([r.id for r in rows]))).rowcount
            if sent:
                _set_state(connection, rows[0].rule_id, rows[0].route, last_sent_at=at)
            for post in posts:
                if post.id:
                    connection.execute(update(slack_posts).where(slack_posts.c.id == post.id).values(
                        withdrawn=post.withdrawn))
                else:
                    connection.execute(slack_posts.insert().values(
                        rule_id=rows[0].rule_id, route=rows[0].route, channel=post.channel, ts=post.ts,
                        trace_ids=list(post.trace_ids), text=post.text, blocks=post.blocks,
                        withdrawn=post.withdrawn, posted_at=at))
            return int(removed)

    def slack_posts(self, rule_id: str, route: str, trace_ids: Sequence[str],
                    since: datetime) -> list[SlackPost]:
        """The messages posted on ``route`` for ``rule_id`` since ``since`` covering ``trace_ids``.

        Any of them, oldest first.
        """
        wanted = set(trace_ids)
        query = select(slack_posts).where(
            slack_posts.c.rule_id == rule_id, slack_posts.c.route == route,
            slack_posts.c.posted_at >= since).order_by(slack_posts.c.id)
        with self.engine.connect() as connection:
            return [SlackPost(r.id, r.channel, r.ts, tuple(r.trace_ids), r.text, r.blocks,
                              dict(r.withdrawn), r.posted_at)
                    for r in connection.execute(query) if wanted & set(r.trace_ids)]

    def retry(self, rows: Sequence[OutboxRow], at: datetime, error: str | None, *, attempted: bool) -> None:
        """Try again at ``at``; ``attempted`` counts an attempt (realert holds do not)."""
        values: dict[str, Any] = {"next_attempt_at": at}
        if attempted:
            values |= {"attempts": outbox.c.attempts + 1, "last_error": error}
        with self.engine.begin() as connection:
            connection.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows])).values(**values))

    def dead(self, rows: Sequence[OutboxRow], error: str) -> None:
        """Give up: the rows stay, marked dead, for metrics and ``betrace violations``."""
        with self.engine.begin() as connection:
            connection.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows])).values(
                dead=True, last_error=error, attempts=outbox.c.attempts + 1))

    def stats(self) -> tuple[int, int, datetime | None]:
        """Pending rows, dead rows, and when the oldest pending row was written."""
        with self.engine.connect() as connection:
            pending, oldest = connection.execute(
                select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.dead.is_(False))).one()
            dead = connection.scalar(select(func.count()).where(outbox.c.dead.is_(True)))
        if isinstance(oldest, str):  # SQLite's min() over a TypeDecorator returns the stored text
            oldest = datetime.fromisoformat(oldest).replace(tzinfo=UTC)
        return int(pending), int(dead or 0), oldest
