"""The store: what was evaluated, what was found, and how far each rule has got.

Every write that advances a rule happens in one transaction with a compare-and-set on its
checkpoint: a window's evaluation record, its violations and the new checkpoint land
together or not at all, and a window another worker already committed is refused
(``CheckpointMoved``) rather than recorded twice. Violations are unique per rule and trace,
so finding a trace again never duplicates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Self

from sqlalchemy import create_engine, event, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from checker import __version__
from checker.engine import Violation
from checker.redact import Redactor, mask_url, url_secrets
from checker.store import ledger, migrate
from checker.store.errors import CheckpointMoved, StoreError
from checker.store.locks import HeldLocks, Locks, RuleLock
from checker.store.outbox import Outbox, OutboxPolicy, fill
from checker.store.schema import checkpoints, evaluations, rules, upsert_insert, violations

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy import Connection, Engine, Table
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

    from checker.rules.rule import Rule

Outcome = Literal["ok", "violations", "incomplete", "skipped", "failed"]
ADVANCING: frozenset[Outcome] = frozenset({"ok", "violations", "incomplete", "skipped"})
Verdict = Literal["provisional", "final"]
Status = Literal["provisional", "confirmed", "retracted"]


@dataclass(frozen=True)
class WindowRecord:
    """One evaluation of one rule over ``[start, end)``, as it will be recorded."""

    rule: Rule
    start: datetime
    end: datetime
    started_at: datetime
    duration: float
    outcome: Outcome
    scope_size: int | None = None
    candidates: int = 0
    plan: str = ""
    error: str | None = None
    violations: tuple[Violation, ...] = ()
    backfill: bool = False
    checkpoint: str | None = None  # the checkpoint it advances; the rule's own by default
    verdict: Verdict = "final"
    # The final pass's checkpoint, moved with the rule's own by a window judged final at once.
    settle_checkpoint: str | None = None
    judged: Mapping[str, frozenset[str] | None] | None = None  # a provisional pass's, for its final pass
    amendment: Amendment | None = None  # a final pass over provisional windows
    # Not stored as such: which candidates could not be judged, and (a final pass) which traces
    # no span has joined since the provisional pass, so that their verdict stands.
    unjudged: frozenset[str] = frozenset()
    unchanged: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Amendment:
    """What a final pass changes in its provisional windows' verdicts.

    ``provisional`` are those windows' evaluations; ``confirmed`` and ``retracted`` (with the
    reason) are their violations by trace ID. Violations found only now are the record's
    ``violations`` that were not recorded before: the late ones.
    """

    provisional: tuple[int, ...]
    confirmed: tuple[str, ...] = ()
    retracted: Mapping[str, str] = field(default_factory=dict)
    unjudged: tuple[str, ...] = ()  # provisional violations the final pass could not judge: kept so

    def to_json(self, late: Sequence[str]) -> dict[str, Any]:
        """What the ledger chains with the final pass's record."""
        return {"provisional": list(self.provisional), "confirmed": sorted(self.confirmed),
                "retracted": dict(sorted(self.retracted.items())), "late": sorted(late),
                **({"unjudged": sorted(self.unjudged)} if self.unjudged else {})}


@dataclass(frozen=True)
class ProvisionalWindow:
    """A window judged provisionally and not yet finally, with what its final pass needs."""

    evaluation_id: int
    start: datetime
    end: datetime
    judged: dict[str, frozenset[str] | None]
    rule_version: str = ""


@dataclass(frozen=True)
class Committed:
    """What a commit wrote: the evaluation's id and the violations not seen before."""

    evaluation_id: int
    new_violations: list[Violation] = field(default_factory=list)


@dataclass(frozen=True)
class StoredViolation:
    """A violation as recorded, with when it was first found and by which evaluation."""

    violation: Violation
    found_at: datetime
    evaluation_id: int
    # Notifications not delivered (yet): {"route", "state": "pending" | "dead", "error"}.
    notifications: tuple[dict[str, Any], ...] = ()
    status: Status = "confirmed"
    retraction_reason: str | None = None


def engine_url(url: str) -> str:
    """SQLAlchemy's URL for a store setting: ``postgresql://`` uses psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


class Store:
    """Synchronous and thread-safe: the daemon calls it through ``asyncio.to_thread``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        full = engine.url.render_as_string(hide_password=False)
        self.url = mask_url(full)
        self._redactor = Redactor(url_secrets(full))
        self.outbox = Outbox(engine)
        self.locks = Locks(engine)

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect and migrate; an unreachable or unusable database is a ``StoreError``."""
        try:
            store = cls(_engine(engine_url(url)))
        except SQLAlchemyError as err:
            raise StoreError(f"cannot use store {mask_url(url)}: {_reason(err, Redactor(url_secrets(url)))}",
                             hint="the store is sqlite:///PATH or postgresql://USER@HOST/DB") from None
        try:
            migrate.upgrade(store.engine)
        except SQLAlchemyError as err:
            store.close()
            raise StoreError(f"cannot open store {store.url}: {_reason(err, store._redactor)}",
                             hint="check the `store` setting and that the database is reachable") from None
        return store

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        self.locks.close()

    def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(select(1))
        except SQLAlchemyError as err:
            raise StoreError(f"store {self.url} unreachable: {_reason(err, self._redactor)}",
                             hint="check that the database is running and reachable") from None

    # ----------------------------------------------------------------- rules, checkpoints

    def record_rule(self, rule: Rule) -> bool:
        """Remember this version of a rule; True when it is new."""
        row = {
            "rule_id": rule.id, "version": rule.version, "name": rule.name,
            "source": str(rule.location), "condition": rule.condition,
            "severity": rule.severity, "frameworks": list(rule.frameworks),
            "controls": list(rule.controls), "first_seen_at": datetime.now(UTC),
        }
        with self.engine.begin() as connection:
            return _insert_new(connection, rules, row, ("rule_id", "version"))

    def checkpoint(self, rule_id: str) -> datetime | None:
        """The end of the rule's last committed window, if it has one."""
        with self.engine.connect() as connection:
            return connection.scalar(select(checkpoints.c.position).where(checkpoints.c.rule_id == rule_id))

    def start_checkpoint(self, rule_id: str, position: datetime) -> datetime:
        """The rule's checkpoint, set to ``position`` if it has none yet (first sight)."""
        with self.engine.begin() as connection:
            _insert_new(connection, checkpoints,
                        {"rule_id": rule_id, "position": position, "updated_at": datetime.now(UTC)},
                        ("rule_id",))
            stored: datetime | None = connection.scalar(
                select(checkpoints.c.position).where(checkpoints.c.rule_id == rule_id))
            assert stored is not None  # noqa: S101  (inserted above or already there)
            return stored

    def try_lock(self, name: str) -> RuleLock | None:
        """The named lock (a rule's, a route's), or None when another worker holds it."""
        return self.locks.try_lock(name)

    def try_lock_many(self, names: Sequence[str]) -> HeldLocks:
        """As many of the names' locks as are free now (``Locks.try_lock_many``)."""
        return self.locks.try_lock_many(names)

    # ----------------------------------------------------------------- evaluations

    def commit(self, record: WindowRecord, notify: OutboxPolicy | None = None) -> Committed:
        """Record an evaluation; an advancing outcome moves the checkpoint from start to end.

        With a ``notify`` policy, the notifications it makes of the new violations (or a
        resolved message) join the outbox in the same transaction. Raises ``CheckpointMoved`` (and writes
        nothing) when the checkpoint is no longer at ``record.start``: another worker got
        there first.
        """
        key = record.checkpoint or record.rule.id
        with self.engine.begin() as connection:
            ledger.lock(connection)
            if record.outcome in ADVANCING:
                for moving in filter(None, (key, record.settle_checkpoint)):
                    _advance(connection, moving, record)
            evaluation_id = connection.scalar(insert(evaluations).values(
                rule_id=record.rule.id, rule_version=record.rule.version,
                window_start=record.start, window_end=record.end, started_at=record.started_at,
                duration_seconds=record.duration, outcome=record.outcome,
                scope_size=record.scope_size, candidates=record.candidates,
                violations=len(record.violations), new_violations=0, plan=record.plan, error=record.error,
                checker_version=__version__, backfill=record.backfill, verdict=record.verdict,
                judged=None if record.judged is None else {
                    trace: None if spans is None else sorted(spans)
                    for trace, spans in record.judged.items()},
            ).returning(evaluations.c.id))
            assert evaluation_id is not None  # noqa: S101  (RETURNING always yields the new id)
            found_at = datetime.now(UTC)
            new = [v for v in record.violations if _insert_new(connection, violations, {
                "rule_id": v.rule_id, "trace_id": v.trace_id, "rule_version": record.rule.version,
                "evaluation_id": evaluation_id, "severity": v.severity, "found_at": found_at,
                "trace_start": _from_unix_nano(v.start_time_unix_nano), "detail": v.to_json(),
                "status": "provisional" if record.verdict == "provisional" else "confirmed",
            }, ("rule_id", "trace_id"))]
            changes: dict[str, Any] = {"new_violations": len(new)} if new else {}
            if record.amendment is not None:
                _amend(connection, record.rule.id, record.amendment, found_at)
                changes["amendments"] = record.amendment.to_json([v.trace_id for v in new])
            if changes:
                connection.execute(update(evaluations).where(evaluations.c.id == evaluation_id)
                                   .values(**changes))
            ledger.append(connection, evaluation_id)
            if notify is not None:
                fill(connection, notify, rule_id=record.rule.id, evaluation_id=evaluation_id, new=new,
                     outcome=record.outcome, backfill=record.backfill, now=record.started_at)
            return Committed(evaluation_id, new)

    def evaluations(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        """Evaluation records in the order they were written."""
        query = select(evaluations).order_by(evaluations.c.id)
        if rule_id is not None:
            query = query.where(evaluations.c.rule_id == rule_id)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]  # noqa: SLF001

    def violations(self, rule_id: str | None = None, since: datetime | None = None) -> list[StoredViolation]:
        """Recorded violations, oldest first."""
        query = select(violations.c.detail, violations.c.found_at, violations.c.evaluation_id,
                       violations.c.status, violations.c.retraction_reason).order_by(violations.c.id)
        if rule_id is not None:
            query = query.where(violations.c.rule_id == rule_id)
        if since is not None:
            query = query.where(violations.c.found_at >= since)
        undelivered: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for pending in self.outbox.undelivered():
            state = {"route": pending.route, "state": "dead" if pending.dead else "pending",
                     "error": pending.last_error}
            for trace_id in pending.payload.get("trace_ids", []):
                undelivered.setdefault((pending.rule_id, trace_id), []).append(state)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [StoredViolation(Violation.from_json(row.detail), row.found_at, row.evaluation_id,
                                tuple(undelivered.get((row.detail["rule_id"], row.detail["trace_id"]), ())),
                                row.status, row.retraction_reason)
                for row in rows]

    def provisional_windows(self, rule_id: str, since: datetime, until: datetime) -> list[ProvisionalWindow]:
        """The rule's windows judged provisionally within [since, until], oldest first."""
        query = (select(evaluations.c.id, evaluations.c.window_start, evaluations.c.window_end,
                        evaluations.c.judged, evaluations.c.rule_version)
                 .where(evaluations.c.rule_id == rule_id, evaluations.c.verdict == "provisional",
                        evaluations.c.outcome.in_(ADVANCING), evaluations.c.window_start >= since,
                        evaluations.c.window_end <= until)
                 .order_by(evaluations.c.window_start))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [ProvisionalWindow(row.id, row.window_start, row.window_end, {
            trace: None if spans is None else frozenset(spans)
            for trace, spans in (row.judged or {}).items()}, row.rule_version) for row in rows]

    def provisional_violations(self, rule_id: str, evaluation_ids: Sequence[int]) -> list[Violation]:
        """The violations those provisional windows recorded and no final pass has settled."""
        query = select(violations.c.detail).where(
            violations.c.rule_id == rule_id, violations.c.evaluation_id.in_(evaluation_ids),
            violations.c.status == "provisional").order_by(violations.c.id)
        with self.engine.connect() as connection:
            return [Violation.from_json(detail) for detail in connection.scalars(query)]


def _advance(connection: Connection, key: str, record: WindowRecord) -> None:
    """Compare-and-set: the checkpoint moves from the window's start to its end, or nothing is written."""
    moved = connection.execute(
        update(checkpoints)
        .where(checkpoints.c.rule_id == key, checkpoints.c.position == record.start)
        .values(position=record.end, updated_at=datetime.now(UTC)))
    if moved.rowcount != 1:
        raise CheckpointMoved(f"rule {record.rule.id}: window {record.start.isoformat()} .. "
                              f"{record.end.isoformat()} was already committed ({key})")


def _amend(connection: Connection, rule_id: str, amendment: Amendment, now: datetime) -> None:
    """The provisional violations become confirmed or retracted; their windows' judged sets go."""
    mine = (violations.c.rule_id == rule_id) & violations.c.evaluation_id.in_(amendment.provisional)
    if amendment.confirmed:
        connection.execute(update(violations).where(mine, violations.c.trace_id.in_(amendment.confirmed))
                           .values(status="confirmed", amended_at=now))
    for trace_id, reason in amendment.retracted.items():
        connection.execute(update(violations).where(mine, violations.c.trace_id == trace_id)
                           .values(status="retracted", retraction_reason=reason, amended_at=now))
    connection.execute(update(evaluations).where(evaluations.c.id.in_(amendment.provisional))
                       .values(judged=None))


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    # Threads take turns on the pooled connections (asyncio.to_thread), hence check_same_thread.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    return engine


def _insert_new(connection: Connection, table: Table, row: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """Insert unless a row with the same keys exists; True when inserted."""
    statement = (upsert_insert(connection, table).values(row)
                 .on_conflict_do_nothing(index_elements=list(keys)).returning(table.c[keys[0]]))
    return connection.execute(statement).first() is not None


def _from_unix_nano(nanos: int) -> datetime | None:
    return datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else None


def _reason(err: SQLAlchemyError, redactor: Redactor) -> str:
    """The driver's message, first line only (SQLAlchemy's full text repeats the URL).

    A driver may quote its connection string back; the URL's password is removed.
    """
    origin = getattr(err, "orig", None) or err
    text = str(origin).strip()
    return redactor.redact(text.splitlines()[0]) if text else type(origin).__name__
