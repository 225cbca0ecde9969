"""The report's figures, aggregated in SQL, equal those of reading every record (the reference).

Random small stores of every shape the figures distinguish: overlapping and zero-length windows,
backfill over evaluated time, provisional windows settled (or not) by final passes, violations
confirmed, retracted or provisional, unknown scopes, failed and skipped attempts, periods that
cut windows and cross midnight. And the ledger's canonical bytes, now written key by key, equal
the sorted compact JSON every existing record was hashed with.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import evidence_reference
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert
from stores import STORE_KINDS, store_url

from checker.evidence.figures import Filters, _figures, _rules
from checker.store import Store, ledger
from checker.store.schema import evaluations, rules, violations

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

T0 = datetime(2026, 11, 1, 23, 40, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
RULES = ("a", "b")
OUTCOMES = ("ok", "ok", "violations", "incomplete", "skipped", "failed")
STATUSES = ("confirmed", "provisional", "retracted")


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Evaluation records in id order, each with the statuses of the violations it recorded."""
    drawn: list[dict[str, Any]] = []
    daemon_like = draw(st.booleans())  # one-minute windows in turn, final passes over the last few
    for number in range(1, draw(st.integers(1, 25)) + 1):
        rule = draw(st.sampled_from(RULES))
        earlier = [r["id"] for r in drawn if r["rule_id"] == rule and r["verdict"] == "provisional"]
        settles = draw(st.booleans()) and bool(earlier)
        if daemon_like and settles:
            listed = earlier[-draw(st.integers(1, min(3, len(earlier)))):]
            first, last = (next(r for r in drawn if r["id"] == n) for n in (listed[0], listed[-1]))
            start, end = first["window_start"], last["window_end"]
        else:
            listed = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3)) if settles else []
            start = T0 + (number if daemon_like else draw(st.integers(0, 40))) * MINUTE
            end = start + (1 if daemon_like else draw(st.sampled_from((1, 1, 2, 5, 0, -1)))) * MINUTE
        drawn.append({
            "id": number, "rule_id": rule, "window_start": start, "window_end": end,
            "outcome": draw(st.sampled_from(OUTCOMES)),
            "verdict": "final" if settles else draw(st.sampled_from(("final", "provisional"))),
            "backfill": not daemon_like and draw(st.booleans()) and draw(st.booleans()),
            "scope_size": draw(st.one_of(st.none(), st.integers(0, 5))),
            "amendments": {"provisional": listed} if settles else None,
            "found": draw(st.lists(st.sampled_from(STATUSES), max_size=2)),
            "error": "answered 503\nbody",
        })
    return drawn


def fill(store: Store, drawn: list[dict[str, Any]]) -> None:
    rows, found = [], []
    for record in drawn:
        row = {k: v for k, v in record.items() if k != "found"}
        rows.append({**row, "rule_version": "v1", "started_at": record["window_start"],
                     "duration_seconds": 0.1, "candidates": 0, "violations": len(record["found"]),
                     "new_violations": 0, "plan": "", "checker_version": "test"})
        found += [{"rule_id": record["rule_id"], "trace_id": f"{record['id']:016x}{n:016x}",
                   "rule_version": "v1", "evaluation_id": record["id"], "severity": "high",
                   "found_at": record["window_end"],
                   "detail": {"reason": f"reason {n}"}, "status": status,
                   "retraction_reason": "late" if status == "retracted" else None,
                   "amended_at": T0 if status != "provisional" else None}
                  for n, status in enumerate(record["found"])]
    with store.engine.begin() as connection:
        connection.execute(insert(rules), [{
            "rule_id": rule, "version": "v1", "name": rule, "source": "r.yaml", "condition": "c",
            "severity": "high", "frameworks": ["SOC2"], "controls": ["SOC2:CC1"], "first_seen_at": T0}
            for rule in RULES])
        for row in rows:  # one by one: a JSON null is not an SQL NULL, and None must be NULL here
            connection.execute(insert(evaluations).values(
                {k: v for k, v in row.items() if v is not None or k != "amendments"}))
        if found:
            connection.execute(insert(violations), found)


def assert_equal_figures(store: Store, filters: Filters) -> None:
    selected = _rules(store, filters)
    template = "https://tempo/{trace_id}"
    new = _figures(store, selected, filters, template)
    old = [evidence_reference.rule_figures(store, rule_id, versions, filters, template)
           for rule_id, versions in selected.items()]
    assert [dataclasses.asdict(f) for f in old] == [dataclasses.asdict(f) for f in new]


PERIODS = st.tuples(st.integers(-5, 30), st.integers(1, 50))


@pytest.fixture(scope="module")
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as folder, Store.open(f"sqlite:///{folder}/s.db") as store:
        yield store


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(drawn=records(), period=PERIODS)
def test_sqlite_figures_equal_the_reference(sqlite_store: Store, drawn: list[dict[str, Any]],
                                            period: tuple[int, int]) -> None:
    with sqlite_store.engine.begin() as connection:
        for table in (violations, evaluations, rules):
            connection.execute(delete(table))
    fill(sqlite_store, drawn)
    start = T0 + period[0] * MINUTE
    assert_equal_figures(sqlite_store, Filters(start, start + period[1] * MINUTE))


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_figures_equal_the_reference_on_each_store(kind: str, tmp_path: Path) -> None:
    """A fixed draw on both databases (PostgreSQL's JSON and time functions differ from SQLite's)."""
    drawn = _fixed()
    with store_url(kind, tmp_path) as url, Store.open(url) as store:
        fill(store, drawn)
        for first, length in ((0, 50), (-5, 20), (3, 4), (25, 30)):
            start = T0 + first * MINUTE
            assert_equal_figures(store, Filters(start, start + length * MINUTE))


def _fixed() -> list[dict[str, Any]]:
    """Every shape at least once: settled and unsettled provisional windows, backfill over evaluated
    time, overlaps, a zero-length window, failures, skips and each violation status; rule b's windows
    have the usual shape (counted in SQL), rule a's do not (counted one by one)."""
    shapes = [  # rule, start, length, outcome, verdict, backfill, scope, settles, found
        ("a", 0, 1, "ok", "provisional", False, 3, None, ["provisional"]),
        ("a", 1, 1, "violations", "provisional", False, 2, None, ["confirmed", "retracted"]),
        ("a", 0, 2, "violations", "final", False, 4, [1, 2], ["confirmed"]),
        ("a", 2, 1, "ok", "provisional", False, None, None, []),
        ("a", 3, 1, "failed", "final", False, None, None, []),
        ("a", 5, 1, "skipped", "final", False, None, None, []),
        ("a", 0, 3, "ok", "final", True, 1, None, []),
        ("a", 20, 5, "incomplete", "final", False, 2, None, ["confirmed"]),
        ("a", 22, 1, "ok", "final", False, 1, None, []),
        ("b", 0, 1, "ok", "provisional", False, 1, None, []),
        ("b", 1, 1, "ok", "provisional", False, 1, None, ["provisional"]),
        ("b", 0, 2, "incomplete", "final", False, 2, [10, 11], []),
        ("a", 30, 0, "ok", "final", False, 1, None, []),
        ("b", 24, 10, "ok", "final", False, 5, None, []),
    ]
    return [{"id": n, "rule_id": rule, "window_start": T0 + start * MINUTE,
             "window_end": T0 + (start + length) * MINUTE, "outcome": outcome, "verdict": verdict,
             "backfill": backfill, "scope_size": scope,
             "amendments": None if settles is None else {"provisional": settles}, "found": found,
             "error": "answered 503" if outcome == "failed" else None}
            for n, (rule, start, length, outcome, verdict, backfill, scope, settles, found)
            in enumerate(shapes, start=1)]


TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | TEXT,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                       max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(values=st.fixed_dictionaries({name: st.none() | st.booleans() | st.integers() | TEXT | st.datetimes(
           timezones=st.just(UTC)) for name in ledger.FIELDS}),
       traces=st.lists(TEXT, max_size=3), verdict=st.sampled_from(("final", "provisional", "other")),
       amendments=st.none() | JSONISH)
def test_the_ledger_hashes_the_same_bytes_as_sorted_compact_json(
        values: dict[str, Any], traces: list[str], verdict: str, amendments: Any) -> None:
    """``canonical`` writes the JSON key by key for speed: the bytes must stay those every existing
    record was hashed with."""
    row = {**values, "verdict": verdict, "amendments": amendments}
    record = {name: value.isoformat() if hasattr(value, "isoformat") else value
              for name, value in values.items()}
    record["traces"] = sorted(traces)
    if verdict != "final":
        record["verdict"] = verdict
    if amendments is not None:
        record["amendments"] = amendments
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert expected == ledger.canonical(row, traces)
