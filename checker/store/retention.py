"""Retention: the oldest evaluation records pruned, summarised first by a signed checkpoint.

Only a prefix of the chain is pruned (records by id, up to the newest one started before the
cutoff), never the newest record, so the chain goes on from the last pruned record's hash: the
retention checkpoint signs that hash, and ``ledger.verify`` starts from it. What is pruned is
summarised per rule and UTC day (windows, outcomes, violations, the rule's controls) inside the
signed payload, so the counts outlive the records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from checker.store.schema import evaluations, outbox, rules, violations

# Records pruned under one retention checkpoint: each prune's transaction stays short (the ledger's
# append lock is held while it deletes), and a long backlog goes over several checkpoints.
PRUNE_BATCH = 50_000

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection


@dataclass(frozen=True)
class Prune:
    """The records a prune removes: every id up to ``through``, whose chain hash is ``head``."""

    through: int
    head: str
    records: int  # how many it removes


def boundary(connection: Connection, cutoff: datetime, *, batch: int = PRUNE_BATCH) -> Prune | None:
    """The prefix of the chain started before ``cutoff``, at most ``batch`` records; None when none may go.

    The prefix ends before the first record started at or after the cutoff, before the newest
    record whatever its age (the chain must have a record to go on from), and before the first
    provisional record not settled yet: its final pass must still find it and its violations.
    """
    chained = evaluations.c.hash.is_not(None)
    first, newest = connection.execute(select(func.min(evaluations.c.id), func.max(evaluations.c.id))
                                       .where(chained)).one()
    if newest is None:
        return None
    first_kept = connection.scalar(select(func.min(evaluations.c.id))
                                   .where(chained, evaluations.c.started_at >= cutoff))
    last = min(newest, first_kept if first_kept is not None else newest, first + batch) - 1
    provisional = connection.execute(select(evaluations.c.id, evaluations.c.judged)
                                     .where(evaluations.c.verdict == "provisional", evaluations.c.id <= last)
                                     .order_by(evaluations.c.id))
    unsettled = next((row.id for row in provisional if row.judged is not None), None)
    if unsettled is not None:
        last = unsettled - 1
    found = connection.execute(select(evaluations.c.id, evaluations.c.hash)
                               .where(chained, evaluations.c.id <= last)
                               .order_by(evaluations.c.id.desc()).limit(1)).first()
    if found is None:
        return None
    records = connection.scalar(select(func.count()).select_from(evaluations)
                                .where(evaluations.c.id <= found.id)) or 0
    return Prune(found.id, found.hash, records)


def summary(connection: Connection, prune: Prune, origin: str | None) -> dict[str, Any]:
    """Per rule and UTC day: windows by outcome and violations found, with the rule's controls.

    ``origin`` is the hash of the chain's very first record, carried from one retention
    checkpoint to the next: it names the store (OSCAL identifiers derive from it) after the
    record itself is gone.
    """
    days: dict[tuple[str, str], dict[str, Any]] = {}
    rows = connection.execute(select(evaluations.c.rule_id, evaluations.c.rule_version,
                                     evaluations.c.window_start, evaluations.c.outcome,
                                     evaluations.c.violations)
                              .where(evaluations.c.id <= prune.through)
                              .execution_options(stream_results=True, yield_per=10_000))
    versions: set[tuple[str, str]] = set()
    for row in rows:
        versions.add((row.rule_id, row.rule_version))
        day = days.setdefault((row.rule_id, row.window_start.date().isoformat()),
                              {"windows": 0, "violations": 0, "outcomes": {}})
        day["windows"] += 1
        day["violations"] += row.violations
        day["outcomes"][row.outcome] = day["outcomes"].get(row.outcome, 0) + 1
    controls: dict[str, set[str]] = {}
    for rule_id, version in versions:
        found = connection.scalar(select(rules.c.controls).where(rules.c.rule_id == rule_id,
                                                                  rules.c.version == version))
        controls.setdefault(rule_id, set()).update(found or [])
    return {"through_record": prune.through, "records": prune.records, "origin": origin, "days": [
        {"rule": rule_id, "day": day, "controls": sorted(controls.get(rule_id, ())), **figures}
        for (rule_id, day), figures in sorted(days.items())]}


def first_hash(connection: Connection) -> str | None:
    """The hash of the first record kept: the chain's origin while nothing was pruned."""
    return connection.scalar(select(evaluations.c.hash).where(evaluations.c.hash.is_not(None))
                             .order_by(evaluations.c.id).limit(1))


def remove(connection: Connection, prune: Prune) -> int:
    """Delete the pruned records with their violations and notifications; how many undelivered ones went."""
    pending = connection.scalar(select(func.count()).select_from(outbox).where(
        outbox.c.evaluation_id <= prune.through, outbox.c.dead.is_(False))) or 0
    for table in (outbox, violations):
        connection.execute(delete(table).where(table.c.evaluation_id <= prune.through))
    connection.execute(delete(evaluations).where(evaluations.c.id <= prune.through))
    return pending
