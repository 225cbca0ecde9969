"""The store's tables (design.md "Storage"); migrations/ creates them, this module queries them.

Times are timezone-aware UTC datetimes in Python and ``timestamp with time zone`` in
PostgreSQL; SQLite keeps them as UTC text, read back as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import postgresql, sqlite

if TYPE_CHECKING:
    from sqlalchemy import Connection


def upsert_insert(connection: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which has ``on_conflict_do_nothing``/``on_conflict_do_update``."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime that is always UTC and aware on the way out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """SQLite has no time zones: it gets naive UTC; a naive datetime here is a bug."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} given to the store: times must be aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware UTC, whichever way the database returned it."""
        del dialect
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def id_column() -> Column[Any]:
    """A 64-bit surrogate key; SQLite only auto-increments INTEGER PRIMARY KEY."""
    return Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)


metadata = MetaData()

rules = Table(
    "rules", metadata,
    Column("rule_id", String(200), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("condition", Text, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("frameworks", JSON, nullable=False),
    Column("controls", JSON, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
)

evaluations = Table(
    "evaluations", metadata,
    id_column(),
    Column("rule_id", String(200), nullable=False),
    Column("rule_version", String(64), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_seconds", Float, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("scope_size", Integer),
    Column("candidates", Integer, nullable=False),
    Column("violations", Integer, nullable=False),  # confirmed in this window
    Column("new_violations", Integer, nullable=False),  # of which first recorded here
    Column("plan", Text, nullable=False),
    Column("error", Text),
    Column("checker_version", String(40), nullable=False),
    Column("backfill", Boolean, nullable=False, server_default=false()),
    Column("prev_hash", String(64)),  # the ledger (checker/store/ledger.py)
    Column("hash", String(64)),
    Index("ix_evaluations_rule_window", "rule_id", "window_start"),
)

violations = Table(
    "violations", metadata,
    id_column(),
    Column("rule_id", String(200), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("rule_version", String(64), nullable=False),
    Column("evaluation_id", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("evaluations.id"), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("found_at", UTCDateTime, nullable=False),
    Column("trace_start", UTCDateTime),
    Column("detail", JSON, nullable=False),
    UniqueConstraint("rule_id", "trace_id", name="uq_violations_rule_trace"),
    Index("ix_violations_found_at", "found_at"),
    Index("ix_violations_evaluation_id", "evaluation_id"),
)

checkpoints = Table(
    "checkpoints", metadata,
    Column("rule_id", String(200), primary_key=True),
    Column("position", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

outbox = Table(
    "outbox", metadata,
    id_column(),
    Column("rule_id", String(200), nullable=False),
    Column("evaluation_id", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("evaluations.id"), nullable=False),
    Column("route", String(200), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("dead", Boolean, nullable=False, default=False),
    Column("last_error", Text),
    Index("ix_outbox_due", "dead", "next_attempt_at"),
)

alert_state = Table(
    "alert_state", metadata,
    Column("rule_id", String(200), primary_key=True),
    Column("route", String(200), primary_key=True),
    Column("last_sent_at", UTCDateTime),
    Column("firing", Boolean, nullable=False),
)
