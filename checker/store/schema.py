"""The store's tables (design.md "Storage"); migrations/ creates them, this module queries them.

Times are timezone-aware UTC datetimes in Python and ``timestamp with time zone`` in
PostgreSQL; SQLite keeps them as UTC text, read back as UTC.
"""

from __future__ import annotations

import re
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
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from checker.redact import KNOWN

if TYPE_CHECKING:
    from sqlalchemy import Connection

# PostgreSQL text refuses NUL; UTF-8 (both databases) cannot encode a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


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


def storable(text: str) -> str:
    """Text any database keeps: PostgreSQL refuses NUL and UTF-8 cannot carry a lone surrogate."""
    return _UNSTORABLE.sub(REPLACEMENT, text) if _UNSTORABLE.search(text) else text


def _storable_json(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(key)): _storable_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable_json(item) for item in value]
    return value


class StorableText(TypeDecorator[str]):
    """Every text column: what comes from traces, rules or receivers may hold a NUL.

    Cleaned on the way in, in this one place, so the ledger hashes what was stored and a
    window's record is never lost to a character the database refuses.
    """

    impl: type[String] = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """The value as the database can keep it."""
        del dialect
        return None if value is None else storable(value)


class StorableString(StorableText):
    """A text key (rule id, route): cleaned the same way, so lookups match what was stored."""

    impl = String
    cache_ok = True


class ErrorText(StorableText):
    """An error message that may quote a remote answer: also without any configured secret.

    The ledger chains it and can never be scrubbed, so a secret that a component forgot to
    redact at the source is removed here.
    """

    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """Storable and redacted."""
        cleaned = super().process_bind_param(value, dialect)
        return None if cleaned is None else KNOWN.redact(cleaned)


class StorableJSON(TypeDecorator[Any]):
    """A JSON document whose strings (keys too) are cleaned like text."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """The document as the database can keep it."""
        del dialect
        return _storable_json(value)


def id_column() -> Column[Any]:
    """A 64-bit surrogate key; SQLite only auto-increments INTEGER PRIMARY KEY."""
    return Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)


metadata = MetaData()

# The partial indexes' conditions, written as the report's queries write them, so that SQLite
# (which matches a partial index's condition against the query's terms) uses them.
SETTLING = "amendments IS NOT NULL"
ATTEMPTS = "outcome IN ('skipped', 'failed')"

rules = Table(
    "rules", metadata,
    Column("rule_id", StorableString(200), primary_key=True),
    Column("version", StorableString(64), primary_key=True),
    Column("name", StorableText, nullable=False),
    Column("source", StorableText, nullable=False),
    Column("condition", StorableText, nullable=False),
    Column("severity", StorableString(16), nullable=False),
    Column("frameworks", StorableJSON, nullable=False),
    Column("controls", StorableJSON, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
)

evaluations = Table(
    "evaluations", metadata,
    id_column(),
    Column("rule_id", StorableString(200), nullable=False),
    Column("rule_version", StorableString(64), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_seconds", Float, nullable=False),
    Column("outcome", StorableString(16), nullable=False),
    Column("scope_size", Integer),
    Column("candidates", Integer, nullable=False),
    Column("violations", Integer, nullable=False),  # confirmed in this window
    Column("new_violations", Integer, nullable=False),  # of which first recorded here
    Column("plan", StorableText, nullable=False),
    Column("error", ErrorText),
    Column("checker_version", StorableString(40), nullable=False),
    Column("backfill", Boolean, nullable=False, server_default=false()),
    # provisional: judged while late spans may still arrive; final: judged when settled.
    Column("verdict", StorableString(16), nullable=False, server_default="final"),
    # A final pass's changes to the provisional verdicts: {"late": [...], "retracted": {...},
    # "confirmed": [...]} by trace ID (a retraction with its reason).
    Column("amendments", StorableJSON),
    # A provisional pass's judged traces, for its final pass: trace ID -> the span IDs judged,
    # or null for a trace judged unfinished. Cleared by the final pass.
    Column("judged", StorableJSON),
    Column("prev_hash", StorableString(64)),  # the ledger (checker/store/ledger.py)
    Column("hash", StorableString(64)),
    Index("ix_evaluations_rule_window", "rule_id", "window_start"),
    # For evidence reports (checker/evidence/queries.py): final passes, failed and skipped attempts.
    Index("ix_evaluations_settling", "rule_id", "window_start",
          postgresql_where=text(SETTLING), sqlite_where=text(SETTLING)),
    Index("ix_evaluations_attempts", "rule_id", "window_start",
          postgresql_where=text(ATTEMPTS), sqlite_where=text(ATTEMPTS)),
)

violations = Table(
    "violations", metadata,
    id_column(),
    Column("rule_id", StorableString(200), nullable=False),
    Column("trace_id", StorableString(32), nullable=False),
    Column("rule_version", StorableString(64), nullable=False),
    Column("evaluation_id", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("evaluations.id"), nullable=False),
    Column("severity", StorableString(16), nullable=False),
    Column("found_at", UTCDateTime, nullable=False),
    Column("trace_start", UTCDateTime),
    Column("detail", StorableJSON, nullable=False),
    Column("status", StorableString(16), nullable=False, server_default="confirmed"),
    Column("retraction_reason", StorableText),
    Column("amended_at", UTCDateTime),
    UniqueConstraint("rule_id", "trace_id", name="uq_violations_rule_trace"),
    Index("ix_violations_found_at", "found_at"),
    Index("ix_violations_evaluation_id", "evaluation_id"),
)

checkpoints = Table(
    "checkpoints", metadata,
    Column("rule_id", StorableString(200), primary_key=True),
    Column("position", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

outbox = Table(
    "outbox", metadata,
    id_column(),
    Column("rule_id", StorableString(200), nullable=False),
    Column("evaluation_id", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("evaluations.id"), nullable=False),
    Column("route", StorableString(200), nullable=False),
    Column("payload", StorableJSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("dead", Boolean, nullable=False, default=False),
    Column("last_error", ErrorText),
    Index("ix_outbox_due", "dead", "next_attempt_at"),
)

alert_state = Table(
    "alert_state", metadata,
    Column("rule_id", StorableString(200), primary_key=True),
    Column("route", StorableString(200), primary_key=True),
    Column("last_sent_at", UTCDateTime),
    Column("firing", Boolean, nullable=False),
)

# Where a ``violations`` message went on a Slack bot-token route (chat.postMessage's answer), so
# that a retraction can reply in its thread and strike it: one row per message posted.
slack_posts = Table(
    "slack_posts", metadata,
    id_column(),
    Column("rule_id", StorableString(200), nullable=False),
    Column("route", StorableString(200), nullable=False),
    Column("channel", StorableString(64), nullable=False),
    Column("ts", StorableString(32), nullable=False),
    Column("trace_ids", StorableJSON, nullable=False),  # every trace the message covered
    Column("text", StorableText, nullable=False),  # what was posted, for chat.update
    Column("blocks", StorableJSON, nullable=False),
    Column("withdrawn", StorableJSON, nullable=False),  # trace ID -> reason, as struck so far
    Column("posted_at", UTCDateTime, nullable=False),
    Index("ix_slack_posts_rule_route", "rule_id", "route", "posted_at"),
)

# The ledger head signed with ``evidence.signing_key`` (checker/store/ledger_checkpoints.py): who
# vouches for the chain up to ``last_record``. ``payload`` is the exact JSON that was signed; the
# other columns repeat it for queries. ``summary``: what a retention checkpoint pruned.
ledger_checkpoints = Table(
    "ledger_checkpoints", metadata,
    id_column(),
    Column("signed_at", UTCDateTime, nullable=False),
    Column("kind", StorableString(16), nullable=False),
    Column("last_record", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("records", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("head", StorableString(64), nullable=False),
    Column("key_id", StorableString(16), nullable=False),
    Column("payload", StorableText, nullable=False),
    Column("signature", StorableString(128), nullable=False),
    Column("summary", StorableJSON),
    Index("ix_ledger_checkpoints_signed_at", "signed_at"),
)

