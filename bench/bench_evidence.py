"""A quarter of evidence: ``evidence report`` and ``evidence verify`` over millions of records.

Why it exists: an auditor asks for 90 days of 100 rules evaluated every minute, about 13
million evaluation records, and the report and the chain check must stay seconds and
bounded memory at that size. This script writes such a store fast (bulk inserts, COPY on
PostgreSQL, the ledger's hashes computed here with ``ledger.canonical``/``ledger.link`` so the
chain is valid), then measures the report (``build`` + the JSON writer, for the whole
period) and ``ledger.verify``: wall time, records/s and peak RSS (VmHWM, reset per phase).

The mix: mostly ``ok``, a share of ``violations`` windows with their violation rows, failed
attempts each followed by a successful retry, a few skipped windows (gaps), and rules run with
settled verdicts (every window provisional, a final pass over each ten with amendments:
confirmed, retracted and late violations). Deterministic from ``--seed``.

Run on demand (not part of the test suite)::

    .venv/bin/python bench/bench_evidence.py --records 1000000            # both stores
    .venv/bin/python bench/bench_evidence.py --store postgres --days 90    # the quarter
    .venv/bin/python bench/bench_evidence.py --store postgres --keep bench13m --days 90  # keep it
    .venv/bin/python bench/bench_evidence.py --store postgres --keep bench13m            # measure again
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from benchkit import Meter, Usage
from sqlalchemy import func, insert, select

from checker import __version__
from checker.engine import Violation
from checker.evidence import FORMATS, Filters, build, writer
from checker.store import Store, ledger
from checker.store.schema import evaluations, rules, violations

if TYPE_CHECKING:
    from collections.abc import Iterator

POSTGRES = os.environ.get("BETRACE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
START = datetime(2026, 7, 1, tzinfo=UTC)
EVALUATION_COLUMNS = ("id", "rule_id", "rule_version", "window_start", "window_end", "started_at",
                      "duration_seconds", "outcome", "scope_size", "candidates", "violations",
                      "new_violations", "plan", "error", "checker_version", "backfill", "verdict",
                      "amendments", "judged", "prev_hash", "hash")
VIOLATION_COLUMNS = ("id", "rule_id", "trace_id", "rule_version", "evaluation_id", "severity", "found_at",
                     "trace_start", "detail", "status", "retraction_reason", "amended_at")
BATCH = 20_000


class Generator:
    """Evaluation records in commit order, with their violations and chained hashes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.args = args
        self.prev = ledger.GENESIS
        self.next_evaluation = 1
        self.next_violation = 1
        self.rule_ids = [f"rule-{n:03d}" for n in range(args.rules)]
        self.settled = {rule for n, rule in enumerate(self.rule_ids) if n % 10 == 0}  # 10 % settled
        self.pending: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}

    def rule_rows(self) -> list[dict[str, Any]]:
        """The ``rules`` table: one version per rule, a control each."""
        return [{"rule_id": rule, "version": f"{n:064x}", "name": f"Rule {n}", "source": "rules.d/bench.yaml",
                 "condition": "when { pii.access } always { audit.log }", "severity": "high",
                 "frameworks": ["SOC2"], "controls": [f"SOC2:CC{n % 9 + 1}.{n % 4 + 1}"],
                 "first_seen_at": START - timedelta(days=1)} for n, rule in enumerate(self.rule_ids)]

    def records(self) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """(evaluation row, its violation rows) in id order, every minute of every rule."""
        every = timedelta(seconds=self.args.every)
        windows = int(self.args.days * 86_400 // self.args.every)
        for n in range(windows):
            start = START + n * every
            for rule in self.rule_ids:
                yield from self._window(rule, start, start + every)

    def _window(self, rule: str, start: datetime, end: datetime) -> Iterator[
            tuple[dict[str, Any], list[dict[str, Any]]]]:
        draw = self.rng.random()
        if draw < 0.0002:
            yield self._record(rule, start, end, "skipped", error="not evaluated: the backlog exceeded "
                               "max_catchup (0:10:00)")
            return
        if draw < 0.0022:
            yield self._record(rule, start, end, "failed",
                               error="http://tempo:3200/api/search answered 503: unavailable")
        found = 1 + self.rng.randrange(3) if self.rng.random() < 0.01 else 0
        if rule not in self.settled:
            yield self._record(rule, start, end, "violations" if found else "ok", found=found)
            return
        provisional = self._record(rule, start, end, "violations" if found else "ok", found=found,
                                   verdict="provisional")
        yield provisional
        batch = self.pending.setdefault(rule, [])
        batch.append(provisional)
        if len(batch) == 10:
            yield self._final_pass(rule, batch)
            batch.clear()

    def _final_pass(self, rule: str, batch: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> tuple[
            dict[str, Any], list[dict[str, Any]]]:
        """Settle ten provisional windows: a third of their violations retracted, one late now and then."""
        confirmed, retracted = [], {}
        for _, found in batch:
            for v in found:
                if self.rng.random() < 0.33:
                    retracted[v["trace_id"]] = "audit.log arrived late"
                    v.update(status="retracted", retraction_reason="audit.log arrived late")
                else:
                    confirmed.append(v["trace_id"])
                    v["status"] = "confirmed"
        late = 1 if self.rng.random() < 0.02 else 0
        amendments = {"provisional": [row["id"] for row, _ in batch], "confirmed": sorted(confirmed),
                      "retracted": dict(sorted(retracted.items())), "late": []}
        start, end = batch[0][0]["window_start"], batch[-1][0]["window_end"]
        return self._record(rule, start, end, "violations" if confirmed or late else "ok", found=late,
                            amendments=amendments, counted=len(confirmed))

    def _record(self, rule: str, start: datetime, end: datetime, outcome: str, *, found: int = 0,
                error: str | None = None, verdict: str = "final", amendments: dict[str, Any] | None = None,
                counted: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rng = self.rng
        started = end + timedelta(seconds=45, microseconds=rng.randrange(1_000_000))
        evaluated = outcome in {"ok", "violations"}
        row = {"id": self.next_evaluation, "rule_id": rule, "rule_version": f"{int(rule[-3:]):064x}",
               "window_start": start, "window_end": end, "started_at": started,
               "duration_seconds": rng.random() / 10, "outcome": outcome,
               "scope_size": rng.randrange(50) if evaluated else None, "candidates": found,
               "violations": found + counted, "new_violations": found, "plan": "S1 scope { pii.access }",
               "error": error, "checker_version": __version__, "backfill": False, "verdict": verdict,
               "amendments": amendments, "judged": None}
        self.next_evaluation += 1
        rows = [self._violation(row, started, verdict) for _ in range(found)]
        if amendments is not None:
            amendments["late"] = sorted(v["trace_id"] for v in rows)
        row["prev_hash"] = self.prev
        row["hash"] = self.prev = ledger.link(self.prev, ledger.canonical(row, [v["trace_id"] for v in rows]))
        return row, rows

    def _violation(self, row: dict[str, Any], found_at: datetime, verdict: str) -> dict[str, Any]:
        trace_id = f"{self.rng.getrandbits(128):032x}"
        detail = Violation(rule_id=row["rule_id"], rule_name="Rule", severity="high", trace_id=trace_id,
                           reason="pii.access without audit.log", frameworks=("SOC2",),
                           controls=("SOC2:CC6.7",), trigger_spans=(), missing=("audit.log",),
                           forbidden=()).to_json()
        self.next_violation += 1
        return {"id": self.next_violation - 1, "rule_id": row["rule_id"], "trace_id": trace_id,
                "rule_version": row["rule_version"], "evaluation_id": row["id"], "severity": "high",
                "found_at": found_at, "trace_start": row["window_start"], "detail": detail,
                "status": "provisional" if verdict == "provisional" else "confirmed",
                "retraction_reason": None, "amended_at": None}


def batches(generator: Generator) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The records in batches, each batch's violations with it.

    A provisional record's violations change status when its final pass comes (ten windows of
    its rule later); a batch is written once no record in it can still change.
    """
    rows: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    for row, its in generator.records():
        rows.append(row)
        found.extend(its)
        if len(rows) >= BATCH:
            cut = min((r["id"] for waiting in generator.pending.values() for r, _ in waiting),
                      default=row["id"] + 1)
            ready = [r for r in rows if r["id"] < cut]
            if ready:
                yield ready, [v for v in found if v["evaluation_id"] < cut]
                rows = [r for r in rows if r["id"] >= cut]
                found = [v for v in found if v["evaluation_id"] >= cut]
    yield rows, found


def fill_postgres(url: str, generator: Generator) -> int:
    """COPY every record; returns how many."""
    count = 0
    with psycopg.connect(url) as connection:
        for rows, found in batches(generator):
            with connection.cursor() as cursor:
                with cursor.copy(f"copy evaluations ({', '.join(EVALUATION_COLUMNS)}) from stdin") as copy:
                    for row in rows:
                        copy.write_row([_pg(row[c]) for c in EVALUATION_COLUMNS])
                with cursor.copy(f"copy violations ({', '.join(VIOLATION_COLUMNS)}) from stdin") as copy:
                    for v in found:
                        copy.write_row([_pg(v[c]) for c in VIOLATION_COLUMNS])
            count += len(rows)
            _progress(count)
        for table in ("evaluations", "violations"):
            connection.execute(f"select setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                               f"(select coalesce(max(id), 1) from {table}))")
        connection.commit()
        connection.autocommit = True
        connection.execute("vacuum analyze evaluations")
        connection.execute("vacuum analyze violations")
    return count


def _pg(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def fill_sqlite(store: Store, generator: Generator) -> int:
    """executemany through SQLAlchemy (its types write SQLite's datetime text); returns how many."""
    count = 0
    with store.engine.begin() as connection:
        for rows, found in batches(generator):
            connection.execute(insert(evaluations), rows)
            if found:
                connection.execute(insert(violations), found)
            count += len(rows)
            _progress(count)
    with store.engine.connect() as connection:
        connection.exec_driver_sql("analyze")
    return count


def _progress(count: int) -> None:
    if sys.stderr.isatty():
        print(f"\r  {count:,} records", end="", file=sys.stderr, flush=True)


@contextmanager
def postgres_store(keep: str | None) -> Iterator[str]:
    """A store URL in a schema of its own: ``keep``'s (created if need be, never dropped) or a fresh one."""
    schema = keep or f"betrace_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f'create schema if not exists "{schema}"')
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        if keep is None:
            with psycopg.connect(POSTGRES, autocommit=True) as connection:
                connection.execute(f'drop schema "{schema}" cascade')


@contextmanager
def sqlite_store(keep: str | None) -> Iterator[str]:
    """A store URL of a SQLite file: ``keep`` (kept) or one in a temporary folder."""
    if keep is not None:
        yield f"sqlite:///{Path(keep).resolve()}"
        return
    with tempfile.TemporaryDirectory(prefix="betrace-bench-") as folder:
        yield f"sqlite:///{folder}/betrace.db"


def measure(kind: str, url: str, args: argparse.Namespace) -> None:
    """Fill the store unless it holds records already, then time the report and verify."""
    with Store.open(url) as store:
        with store.engine.connect() as connection:
            held = connection.scalar(select(func.count()).select_from(evaluations)) or 0
        generator = Generator(args)
        if held:
            print(f"{kind}: reusing {held:,} records")
        else:
            with store.engine.begin() as connection:
                connection.execute(insert(rules), generator.rule_rows())
            began = time.perf_counter()
            held = fill_postgres(url, generator) if kind == "postgres" else fill_sqlite(store, generator)
            took = time.perf_counter() - began
            print(f"\r{kind}: generated {held:,} records in {took:.0f} s ({held / took:,.0f}/s)")
        with store.engine.connect() as connection:
            first, last = connection.execute(select(func.min(evaluations.c.window_start),
                                                    func.max(evaluations.c.window_end))).one()
        filters = Filters(first, last)
        if not args.no_report:
            with Meter() as meter, Path(os.devnull).open("w", encoding="utf-8") as sink:
                report = build(store, filters, "https://grafana.example/explore?trace={trace_id}")
                writer(args.format)(report, sink)
            rules_count = sum(len(c.rules) for c in report.controls)
            _print(f"{kind} report ({args.format}, {rules_count} rules, ledger "
                   f"{'intact' if report.ledger.ok else 'BROKEN'})", meter.usage, held)
        if not args.no_verify:
            with Meter() as meter:
                verdict = ledger.verify(store.engine)
            _print(f"{kind} verify ({'intact' if verdict.ok else 'BROKEN: ' + str(verdict.problem)})",
                   meter.usage, verdict.records)


def _print(what: str, usage: Usage, records: int) -> None:
    print(f"{what}: {usage.wall:.1f} s wall, {usage.cpu:.1f} s CPU, {records / usage.wall:,.0f} records/s, "
          f"peak RSS {usage.peak_rss / 2**20:,.0f} MB ({usage.rss_source})")


def main() -> None:
    """Parse the options, then fill and measure each store asked for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--every", type=int, default=60, help="window length in seconds")
    parser.add_argument("--records", type=int, help="about this many records: sets --days from the others")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--keep", help="keep the store (a PostgreSQL schema of this name, a SQLite file "
                        "NAME.db) and reuse it when it holds records already")
    parser.add_argument("--format", choices=FORMATS, default="json")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    if args.records:
        args.days = args.records / args.rules * args.every / 86_400
    if args.store in {"sqlite", "both"}:
        with sqlite_store(f"{args.keep}.db" if args.keep else None) as url:
            measure("sqlite", url, args)
    if args.store in {"postgres", "both"}:
        with postgres_store(args.keep) as url:
            measure("postgres", url, args)


if __name__ == "__main__":
    main()
