"""The evidence figures of one rule as they were computed before SQL aggregation: every record read.

Kept as the reference ``test_evidence_equivalence`` holds the aggregated figures to: the former
``checker/evidence/figures.py`` functions, unchanged but for sharing its dataclasses and the
helpers that did not change (a rule's description, gaps from covered stretches, the days).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from checker.evidence.figures import (
    EVALUATED,
    Day,
    Filters,
    RuleFigures,
    _clip,
    _merge,
    coverage,
    described,
    empty_days,
)
from checker.notify.message import trace_url
from checker.store.schema import evaluations, violations

if TYPE_CHECKING:
    from datetime import datetime

    from checker.store import Store


def rule_figures(store: Store, rule_id: str, versions: list[dict[str, Any]], filters: Filters,
                  template: str | None) -> RuleFigures:
    with store.engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(
            select(evaluations).where(evaluations.c.rule_id == rule_id,
                                      evaluations.c.window_end > filters.start,
                                      evaluations.c.window_start < filters.end)
            .order_by(evaluations.c.id))]
        ids = [r["id"] for r in rows]
        query = select(violations).where(violations.c.evaluation_id.in_(ids)).order_by(violations.c.id)
        found = [dict(r._mapping) for r in connection.execute(query)] if ids else []
    figures = described(rule_id, versions, {r["rule_version"] for r in rows}, filters)
    settled_by = _settled_by(rows)
    kept = counted(rows, filters)
    _coverage(figures, rows, kept, filters, settled_by)
    by_id = {r["id"]: r for r in rows}
    for v in found:
        entry = {"trace_id": v["trace_id"], "found_at": v["found_at"], "severity": v["severity"],
                 "reason": v["detail"].get("reason", ""), "evaluation_id": v["evaluation_id"],
                 "trace_url": trace_url(template, v["trace_id"]), "status": v["status"]}
        recorder = by_id[v["evaluation_id"]]
        settler = settled_by.get(v["evaluation_id"])
        if v["status"] == "retracted":
            figures.retracted.append({**entry, "retraction_reason": v["retraction_reason"] or "",
                                      "amended_at": v["amended_at"],
                                      "settled_by": None if settler is None else settler["id"]})
            continue
        figures.violations.append(entry)
        if recorder["amendments"] is not None:
            figures.late.append({**entry, "settled_by": recorder["id"]})
        elif settler is not None:
            figures.confirmed_by_final += 1
    figures.days = _days(kept, filters, found, settled_by)
    return figures


def _settled_by(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Provisional evaluation id → the final pass that settled it."""
    settled: dict[int, dict[str, Any]] = {}
    for row in rows:
        for provisional in (row["amendments"] or {}).get("provisional", []):
            settled[provisional] = row
    return settled


def _settles(row: dict[str, Any]) -> bool:
    """A final pass over provisional windows: it covers them again, it is not a window of its own."""
    return row["amendments"] is not None


def counted(rows: list[dict[str, Any]], filters: Filters) -> list[dict[str, Any]]:
    """The evaluated windows whose figures (scope, daily rates) count.

    Those starting in the period, live before backfill, final before provisional, each not
    already covered by one counted before (a backfill over time the daemon evaluated, or a
    provisional window a final pass judged again, is not counted twice).
    """
    kept: list[dict[str, Any]] = []
    spans: list[tuple[datetime, datetime]] = []
    order = sorted((r for r in rows if r["outcome"] in EVALUATED),
                   key=lambda r: (r["backfill"], r["verdict"] == "provisional", r["id"]))
    for row in order:
        if not filters.start <= row["window_start"] < filters.end:
            continue
        if any(s <= row["window_start"] and row["window_end"] <= e for s, e in spans):
            continue
        kept.append(row)
        spans = _merge([*spans, (row["window_start"], row["window_end"])])
    return kept


def _coverage(figures: RuleFigures, rows: list[dict[str, Any]], kept: list[dict[str, Any]],
              filters: Filters, settled_by: dict[int, dict[str, Any]]) -> None:
    covered: list[tuple[datetime, datetime]] = []
    for row in kept:
        if figures.traces_in_scope is not None:
            figures.traces_in_scope = None if row["scope_size"] is None else (
                figures.traces_in_scope + row["scope_size"])
    for row in rows:
        outcome = row["outcome"]
        if outcome in EVALUATED:
            covered.append(_clip(row["window_start"], row["window_end"], filters))
            if _settles(row):
                continue
            settler = settled_by.get(row["id"])
            final = row if settler is None else settler
            figures.windows_evaluated += 1
            figures.windows_incomplete += final["outcome"] == "incomplete"
            figures.backfilled_windows += bool(row["backfill"])
            figures.windows_provisional += row["verdict"] == "provisional" and settler is None
        elif outcome == "skipped":
            figures.windows_skipped += 1
        elif outcome == "failed":
            figures.failed_attempts += 1
    coverage(figures, _merge(covered), rows, filters)


def _days(kept: list[dict[str, Any]], filters: Filters, found: list[dict[str, Any]],
          settled_by: dict[int, dict[str, Any]]) -> list[Day]:
    """Each counted record on the day its window starts; a final pass counts the windows it settles.

    Violations are those not retracted, recorded by the record or by a window it settles; a
    settled window is clean unless one of them was recorded by it; late violations (recorded by
    the final pass itself) make one of its windows not clean.
    """
    days = empty_days(filters)
    by_record: dict[int, int] = {}
    for v in found:
        if v["status"] != "retracted":
            by_record[v["evaluation_id"]] = by_record.get(v["evaluation_id"], 0) + 1
    settles: dict[int, list[int]] = {}
    for provisional, settler in settled_by.items():
        settles.setdefault(settler["id"], []).append(provisional)
    for row in kept:
        settled = settles.get(row["id"], [])
        windows = len(settled) or 1
        records = [*settled, row["id"]]
        day = days[row["window_start"].date().isoformat()]
        day.windows += windows
        day.violations += sum(by_record.get(e, 0) for e in records)
        day.clean_windows += max(0, windows - sum(1 for e in records if by_record.get(e)))
        if day.in_scope is not None:
            day.in_scope = None if row["scope_size"] is None else day.in_scope + row["scope_size"]
    return list(days.values())
