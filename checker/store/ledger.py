"""The evaluation ledger: every evaluation record chained to the one before it.

Each row stores ``prev_hash`` and ``hash = sha256(prev_hash + canonical record)``, where the
canonical record is the row's evidence (rule, version, window, counts, outcome, plan,
checker version, the traces it found) as sorted, compact JSON. Altering, deleting or
reordering a record breaks the chain at that record; ``verify`` names it. Appends are
serialised: PostgreSQL through a transaction-scoped advisory lock, SQLite by its write lock,
which the commit already holds when it appends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from checker.store.schema import evaluations, violations

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from sqlalchemy import Connection, Engine

GENESIS = "0" * 64
LEDGER_LOCK = 0x6C6564676572  # "ledger"
FIELDS = ("id", "rule_id", "rule_version", "window_start", "window_end", "started_at", "outcome",
          "scope_size", "candidates", "violations", "new_violations", "plan", "error", "checker_version",
          "backfill")


def canonical(row: Mapping[str, Any], traces: list[str]) -> bytes:
    """The bytes that are hashed: one form whatever the database returned.

    The settled-verdict fields enter only when they differ from what every record before them
    meant (a single, final pass without amendments), so older records keep their hashes while
    a changed verdict or amendment still breaks the chain.
    """
    record = {name: row[name].isoformat() if hasattr(row[name], "isoformat") else row[name]
              for name in FIELDS}
    record["traces"] = sorted(traces)
    if row.get("verdict", "final") != "final":
        record["verdict"] = row["verdict"]
    if row.get("amendments") is not None:
        record["amendments"] = row["amendments"]
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev_hash: str, record: bytes) -> str:
    """The chain step."""
    return hashlib.sha256(prev_hash.encode() + record).hexdigest()


def lock(connection: Connection) -> None:
    """Serialise appends across PostgreSQL writers; call before inserting the evaluation."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(LEDGER_LOCK)))


def append(connection: Connection, evaluation_id: int) -> str:
    """Chain the just-inserted evaluation (its violations already written); returns its hash.

    Rows before it that have no hash (written by a checker older than the ledger, during a
    rolling upgrade) are chained first, in order, so the chain never restarts mid-way.
    """
    before = connection.execute(select(evaluations.c.id, evaluations.c.hash).where(
        evaluations.c.id < evaluation_id).order_by(evaluations.c.id.desc()).limit(1)).first()
    unchained = [] if before is None or before.hash is not None else list(connection.scalars(
        select(evaluations.c.id).where(evaluations.c.id < evaluation_id, evaluations.c.hash.is_(None))
        .order_by(evaluations.c.id)))
    digest = ""
    for row_id in [*unchained, evaluation_id]:
        digest = _link_row(connection, row_id)
    return digest


def _link_row(connection: Connection, evaluation_id: int) -> str:
    prev = connection.scalar(select(evaluations.c.hash).where(evaluations.c.id < evaluation_id)
                             .order_by(evaluations.c.id.desc()).limit(1)) or GENESIS
    found = connection.execute(select(evaluations).where(evaluations.c.id == evaluation_id)).one()
    traces = list(connection.scalars(select(violations.c.trace_id)
                                     .where(violations.c.evaluation_id == evaluation_id)))
    digest = link(prev, canonical(dict(found._mapping), traces))  # noqa: SLF001
    connection.execute(update(evaluations).where(evaluations.c.id == evaluation_id)
                       .values(prev_hash=prev, hash=digest))
    return digest


@dataclass(frozen=True)
class Verdict:
    """The chain checked: its head, or the first record that breaks it."""

    records: int
    head: str
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every record is intact and in place."""
        return self.broken_at is None


def verify(engine: Engine) -> Verdict:
    """Recompute the whole chain, oldest first."""
    prev, count = GENESIS, 0
    for row, traces in _records(engine):
        count += 1
        if row["prev_hash"] != prev:
            return Verdict(count, prev, row["id"],
                           f"record {row['id']} does not follow the record before it: a record was "
                           "deleted, inserted or reordered just before it")
        digest = link(prev, canonical(row, traces))
        if row["hash"] != digest:
            return Verdict(count, prev, row["id"],
                           f"record {row['id']} was altered (its content no longer matches its hash)")
        prev = digest
    return Verdict(count, prev)


def _records(engine: Engine) -> Iterator[tuple[Mapping[str, Any], list[str]]]:
    with engine.connect() as connection:
        found: dict[int, list[str]] = {}
        for evaluation_id, trace_id in connection.execute(
                select(violations.c.evaluation_id, violations.c.trace_id)):
            found.setdefault(evaluation_id, []).append(trace_id)
        for row in connection.execute(select(evaluations).order_by(evaluations.c.id)):
            yield dict(row._mapping), found.get(row.id, [])  # noqa: SLF001
