"""The evaluation ledger: every evaluation record chained to the one before it.

Each row stores ``prev_hash`` and ``hash = sha256(prev_hash + canonical record)``, where the
canonical record is the row's evidence (rule, version, window, counts, outcome, plan,
checker version, the traces it found) as sorted, compact JSON. Altering, deleting or
reordering a record breaks the chain at that record; ``verify`` names it.

A violation's status is not itself hashed (a final pass changes it after the provisional
record was chained), but every change is: a final pass's ``amendments`` name the violations
it confirmed and retracted (with the reason), and ``verify`` checks every violation's status
against the chained records — ``provisional`` until a final pass settles its window, then as
that pass's amendments say, ``confirmed`` when a final record found it. A rewritten status or
reason is named by the record whose verdict it contradicts. A final pass amends only earlier
provisional records of its rule, each once. Appends are
serialised: PostgreSQL through a transaction-scoped advisory lock, SQLite by its write lock,
which the commit already holds when it appends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func, select, update

from checker.store.ledger_checkpoints import Start, stored_start
from checker.store.schema import evaluations, violations

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping

    from sqlalchemy import Connection, Engine

GENESIS = "0" * 64
STREAM_BATCH = 10_000  # rows a server-side cursor fetches at a time
LEDGER_LOCK = 0x6C6564676572  # "ledger"
FIELDS = ("id", "rule_id", "rule_version", "window_start", "window_end", "started_at", "outcome",
          "scope_size", "candidates", "violations", "new_violations", "plan", "error", "checker_version",
          "backfill")


def canonical(row: Mapping[str, Any], traces: list[str]) -> bytes:
    """The bytes that are hashed: one form whatever the database returned.

    The settled-verdict fields enter only when they differ from what every record before them
    meant (a single, final pass without amendments), so older records keep their hashes while
    a changed verdict or amendment still breaks the chain. The bytes are exactly
    ``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` of the
    record's fields (a datetime as its ``isoformat()``), written key by key because verify does
    this for every record of the store and the generic encoder was most of its time.
    """
    verdict, amendments = row.get("verdict", "final"), row.get("amendments")
    parts = []
    for name in _KEYS:
        if name == "traces":
            value = "[" + ",".join(map(_STRING, sorted(traces))) + "]"
        elif name == "verdict":
            if verdict == "final":
                continue
            value = _json(verdict)
        elif name == "amendments":
            if amendments is None:
                continue
            value = _json(amendments)
        else:
            value = _json(row[name])
        parts.append(f'"{name}":{value}')
    return ("{" + ",".join(parts) + "}").encode()


_KEYS = tuple(sorted((*FIELDS, "traces", "verdict", "amendments")))  # sort_keys' order
_STRING = json.encoder.encode_basestring  # json.dumps' own string encoder with ensure_ascii=False
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_LITERALS: dict[Any, str] = {None: "null", True: "true", False: "false"}


def _json(value: Any) -> str:
    """One value as ``json.dumps`` writes it inside the record; the common types without the encoder."""
    kind = type(value)
    if kind is str:
        return _STRING(value)
    if kind is int:
        return int.__repr__(value)
    if value is None or kind is bool:
        return _LITERALS[value]
    if hasattr(value, "isoformat"):
        return _STRING(value.isoformat())
    return _ENCODE(value)


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
    marked: Mapping[int, str] = field(default_factory=dict)  # record -> its recomputed hash, as asked
    pruned_through: int | None = None  # the chain starts after a retention checkpoint at this record
    start_checked: bool = True  # False: that start was read from the store, its signature unchecked
    marked_records: Mapping[int, int] = field(default_factory=dict)  # record -> the chain's count there

    @property
    def ok(self) -> bool:
        """Whether every record is intact and in place."""
        return self.broken_at is None


STORED = "stored"  # verify's default start: the stored retention checkpoint's, unchecked


def verify(engine: Engine, marks: Collection[int] = (), start: Start | str | None = STORED) -> Verdict:
    """Recompute the whole chain, oldest first; then check each violation's status against it.

    ``marks`` names records whose recomputed hash (and count) the verdict keeps: a signed
    checkpoint is checked against the chain as it is now, not as the table says. ``start`` is
    where the chain begins: None at genesis, a retention checkpoint's start whose signature the
    caller checked (``attest``), or by default the newest stored one, unchecked
    (``Verdict.start_checked`` False). A prune that commits between reading the stored start and
    the records makes the first record seem not to follow it: then both are read again.
    """
    if start != STORED:
        return _verify_from(engine, marks, start if isinstance(start, Start) else None)
    verdict = Verdict(0, GENESIS)
    for _attempt in range(3):
        with engine.connect() as connection:
            stored = stored_start(connection)
        verdict = replace(_verify_from(engine, marks, stored), start_checked=stored is None)
        with engine.connect() as connection:
            if stored_start(connection) == stored:
                return verdict
    return verdict


def _verify_from(engine: Engine, marks: Collection[int], start: Start | None) -> Verdict:
    prev, count = (start.head, start.records) if start is not None else (GENESIS, 0)
    pruned = start.last_record if start is not None else None
    marked: dict[int, str] = {}
    counts: dict[int, int] = {}
    settled: dict[int, tuple[int, Mapping[str, Any]]] = {}  # provisional id -> (final pass, amendments)
    recorded: list[tuple[int, str, list[_Found]]] = []  # (record, verdict, its violations)
    unsettled: dict[int, str] = {}  # provisional record -> its rule, until a final pass settles it
    for row, found in _records(engine):
        count += 1
        if row["prev_hash"] != prev:
            return Verdict(count, prev, row["id"],
                           f"record {row['id']} does not follow the record before it: a record was "
                           "deleted, inserted or reordered just before it", marked, pruned,
                           marked_records=counts)
        digest = link(prev, canonical(row, [f.trace_id for f in found]))
        if row["hash"] != digest:
            return Verdict(count, prev, row["id"],
                           f"record {row['id']} was altered (its content no longer matches its hash)", marked,
                           pruned, marked_records=counts)
        prev = digest
        if row["id"] in marks:
            marked[row["id"]], counts[row["id"]] = digest, count
        if row.get("verdict") == "provisional":
            unsettled[row["id"]] = row["rule_id"]
        problem = _settle(row, unsettled, settled, pruned or 0)
        if problem is not None:
            return Verdict(count, prev, row["id"], problem, marked, pruned, marked_records=counts)
        if found:
            recorded.append((row["id"], row.get("verdict", "final"), found))
    problems = [found_problem for record_id, verdict, found in recorded for v in found
                if (found_problem := _status_problem(record_id, verdict, v, settled.get(record_id)))]
    if problems:
        broken_at, problem = min(problems)
        return Verdict(count, prev, broken_at, problem, marked, pruned, marked_records=counts)
    return Verdict(count, prev, marked=marked, pruned_through=pruned, marked_records=counts)


def _settle(row: Mapping[str, Any], unsettled: dict[int, str],
            settled: dict[int, tuple[int, Mapping[str, Any]]], pruned: int) -> str | None:
    """Note which provisional records a final pass's amendments settle; what is wrong, or None.

    A provisional record at or before ``pruned`` was removed by retention with its violations.
    """
    amendments = row.get("amendments")
    if not isinstance(amendments, dict):
        return None
    for provisional in amendments.get("provisional", []):
        if provisional <= pruned:
            continue
        if unsettled.pop(provisional, None) != row["rule_id"]:
            return (f"record {row['id']} amends record {provisional}, which is not an earlier "
                    "provisional record of its rule still unsettled")
        settled[provisional] = (row["id"], amendments)
    return None


@dataclass(frozen=True)
class _Found:
    """A violation as stored: what the chain hashes (its trace) and what it checks (its status)."""

    trace_id: str
    status: str
    reason: str | None


def _status_problem(record_id: int, verdict: str, found: _Found,
                    settler: tuple[int, Mapping[str, Any]] | None) -> tuple[int, str] | None:
    """The record a violation's stored status contradicts, and how; None when it agrees."""
    named, expected, reason = record_id, "confirmed", None
    if verdict == "provisional" and settler is None:
        expected = "provisional"
    elif verdict == "provisional" and settler is not None:
        named, amendments = settler
        retracted = amendments.get("retracted") or {}
        if found.trace_id in retracted:
            expected, reason = "retracted", retracted[found.trace_id]
        elif found.trace_id in (amendments.get("unjudged") or []):
            expected = "provisional"
        elif found.trace_id not in (amendments.get("confirmed") or []):
            return named, (f"record {named} was altered or a violation added: its amendment settles "
                           f"record {record_id} but does not name trace {found.trace_id}")
    if (found.status, found.reason) == (expected, reason):
        return None
    said = expected + (f" ({reason})" if reason is not None else "")
    return named, (f"record {named} is contradicted: the violation of trace {found.trace_id} (recorded by "
                   f"record {record_id}) is stored as {found.status}"
                   + (f" ({found.reason})" if found.reason is not None else "")
                   + f", but the ledger says {said}")


def _records(engine: Engine) -> Iterator[tuple[Mapping[str, Any], list[_Found]]]:
    """Each record with its violations, from one statement: one snapshot of both tables.

    Streamed (a server-side cursor on PostgreSQL), only the columns the chain and the status
    check read: memory stays flat however long the ledger is.
    """
    chained = [evaluations.c[name] for name in (*FIELDS, "verdict", "amendments", "prev_hash", "hash")]
    query = (select(*chained, violations.c.trace_id.label("found_trace"),
                    violations.c.status.label("found_status"),
                    violations.c.retraction_reason.label("found_reason"))
             .outerjoin(violations, violations.c.evaluation_id == evaluations.c.id)
             .order_by(evaluations.c.id, violations.c.id)
             .execution_options(stream_results=True, yield_per=STREAM_BATCH))
    current: Mapping[str, Any] | None = None
    found: list[_Found] = []
    with engine.connect() as connection:
        for joined in connection.execute(query):
            row = cast("Mapping[str, Any]", joined._mapping)  # noqa: SLF001  (read by name, not copied)
            if current is None or current["id"] != row["id"]:
                if current is not None:
                    yield current, found
                current, found = row, []
            if row["found_trace"] is not None:
                found.append(_Found(row["found_trace"], row["found_status"], row["found_reason"]))
    if current is not None:
        yield current, found
