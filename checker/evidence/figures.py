"""The figures of an evidence report, computed from the store, per control and rule.

Coverage is time: the part of the period covered by evaluated windows (``ok``,
``violations``, ``incomplete``), with every uncovered stretch listed as a gap and why
(skipped beyond ``max_catchup``, failed, or never evaluated). Nothing is rounded away: a
period with any gap is below 100 %.

Settled verdicts: a window judged provisionally is judged again by a final pass, one record
(``amendments`` set) covering the span of the provisional windows it settles. Each span of
time counts once: windows are the provisional windows and those judged final at once (never
the final pass that covers them again); scope and daily figures take the final pass where
there is one. Violations count final verdicts: a retracted one is listed under amendments,
not as a violation; one whose window is not settled yet counts, marked provisional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from checker import __version__
from checker.evidence.vouching import vouching
from checker.notify.message import trace_url
from checker.store.schema import evaluations, rules, violations

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from checker.store import Store, ledger

EVALUATED = frozenset({"ok", "violations", "incomplete"})
NO_CONTROL = "(no control)"


@dataclass(frozen=True)
class Filters:
    """Which rules a report covers, and when."""

    start: datetime
    end: datetime
    framework: str | None = None
    control: str | None = None
    rule: str | None = None


@dataclass
class Gap:
    """A stretch of the period without an evaluated window."""

    start: datetime
    end: datetime
    reason: str


@dataclass
class Day:
    """One UTC day of one rule (or control)."""

    day: str
    windows: int = 0
    in_scope: int | None = 0
    violations: int = 0
    clean_windows: int = 0

    @property
    def rate(self) -> float | None:
        """Share of in-scope traces without a violation; clean windows when scope is unknown."""
        if self.in_scope:
            return max(0.0, 1 - self.violations / self.in_scope)
        if self.windows:
            return self.clean_windows / self.windows
        return None


@dataclass
class RuleFigures:
    """Everything the report says about one rule."""

    rule_id: str
    name: str
    severity: str
    frameworks: list[str]
    controls: list[str]
    versions: list[dict[str, Any]]  # version, condition, source, first_seen_at
    expected_seconds: float = 0.0
    covered_seconds: float = 0.0
    windows_evaluated: int = 0
    windows_incomplete: int = 0
    windows_skipped: int = 0
    failed_attempts: int = 0
    backfilled_windows: int = 0
    traces_in_scope: int | None = 0
    windows_provisional: int = 0  # judged provisionally, no final pass yet
    gaps: list[Gap] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)  # not retracted: confirmed, provisional
    late: list[dict[str, Any]] = field(default_factory=list)  # found only by a final pass
    retracted: list[dict[str, Any]] = field(default_factory=list)  # withdrawn by a final pass, with why
    confirmed_by_final: int = 0  # provisional violations a final pass confirmed
    days: list[Day] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Covered share of the period, 0..1."""
        return self.covered_seconds / self.expected_seconds if self.expected_seconds else 0.0

    @property
    def never_applied(self) -> bool:
        """Evaluated, but no trace was ever in scope: no evidence, though it looks like a pass.

        The scope searches over-approximate, so none matching means none in scope; a rule whose
        scope was not searched (every trace in scope) has no count and is not flagged.
        """
        return self.windows_evaluated > 0 and self.traces_in_scope == 0

    @property
    def provisional_violations(self) -> int:
        """Violations whose window has no final verdict yet."""
        return sum(v.get("status") == "provisional" for v in self.violations)

    @property
    def amendment_totals(self) -> dict[str, int]:
        """What the final passes changed: late violations, retractions, confirmations."""
        return {"late": len(self.late), "retracted": len(self.retracted),
                "confirmed": self.confirmed_by_final}


@dataclass
class ControlFigures:
    """A control and the rules that evidence it."""

    control: str
    rules: list[RuleFigures]

    @property
    def days(self) -> list[Day]:
        """The rules' days added up."""
        merged: dict[str, Day] = {}
        for rule in self.rules:
            for day in rule.days:
                total = merged.setdefault(day.day, Day(day.day))
                total.windows += day.windows
                total.clean_windows += day.clean_windows
                total.violations += day.violations
                total.in_scope = None if total.in_scope is None or day.in_scope is None else (
                    total.in_scope + day.in_scope)
        return [merged[k] for k in sorted(merged)]

    @property
    def coverage(self) -> float:
        """The rules' covered time over their expected time, 0..1."""
        expected = sum(rule.expected_seconds for rule in self.rules)
        return sum(rule.covered_seconds for rule in self.rules) / expected if expected else 0.0

    @property
    def totals(self) -> dict[str, int]:
        """The rules' windows, violations and amendments added up."""
        total = {"windows_evaluated": 0, "windows_provisional": 0, "violations": 0,
                 "provisional_violations": 0, "late": 0, "retracted": 0, "confirmed": 0,
                 "never_applied": 0}
        for rule in self.rules:
            total["windows_evaluated"] += rule.windows_evaluated
            total["windows_provisional"] += rule.windows_provisional
            total["violations"] += len(rule.violations)
            total["provisional_violations"] += rule.provisional_violations
            for kind, count in rule.amendment_totals.items():
                total[kind] += count
            total["never_applied"] += rule.never_applied
        return total


@dataclass
class Report:
    """A whole report."""

    filters: Filters
    controls: list[ControlFigures]
    ledger: ledger.Verdict
    generated_at: datetime
    checker_version: str = __version__
    verify_command: str = "betrace evidence verify"
    origin: str | None = None  # the hash of the ledger's first record: names the store, as it grows
    # The signed checkpoints that vouch for the period's records: signed in it, and the first after.
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_problems: list[str] = field(default_factory=list)  # with a key: those that do not hold
    checkpoints_checked: bool = False  # their signatures were checked with evidence.signing_key's key


def build(store: Store, filters: Filters, template: str | None, *, config: str | None = None,
          keys: Sequence[Ed25519PublicKey] = ()) -> Report:
    """Read the store and compute every figure; with ``keys``, check the signed checkpoints too."""
    selected = _rules(store, filters)
    figures = [_rule_figures(store, rule_id, versions, filters, template)
               for rule_id, versions in selected.items()]
    by_control: dict[str, list[RuleFigures]] = {}
    for rule in figures:
        for control in _matching_controls(rule.controls, filters) or [NO_CONTROL]:
            by_control.setdefault(control, []).append(rule)
    command = "betrace evidence verify" + (f" --config {config}" if config else "")
    vouched = vouching(store, filters.start, filters.end, keys)
    return Report(filters, [ControlFigures(c, by_control[c]) for c in sorted(by_control)],
                  vouched.verdict, datetime.now(UTC), verify_command=command, origin=vouched.origin,
                  checkpoints=vouched.checkpoints, checkpoint_problems=vouched.problems,
                  checkpoints_checked=vouched.checked)


def _matching_controls(controls: list[str], filters: Filters) -> list[str]:
    """The controls a report lists for a rule: the wanted one, or those of the wanted framework."""
    if filters.control is not None:
        wanted = filters.control.lower()
        return [c for c in controls if c.lower() == wanted or c.lower().endswith(":" + wanted)]
    if filters.framework is not None:
        prefix = filters.framework.lower() + ":"
        namespaced = [c for c in controls if c.lower().startswith(prefix)]
        return namespaced or [c for c in controls if ":" not in c]
    return controls


def _rules(store: Store, filters: Filters) -> dict[str, list[dict[str, Any]]]:
    """Rule id → its recorded versions, oldest first, for the rules the filters select."""
    with store.engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(select(rules).order_by(rules.c.first_seen_at))]  # noqa: SLF001
    selected: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if filters.rule and row["rule_id"] != filters.rule:
            continue
        frameworks = [f.lower() for f in row["frameworks"]]
        if filters.framework and filters.framework.lower() not in frameworks and not any(
                c.lower().startswith(filters.framework.lower() + ":") for c in row["controls"]):
            continue
        if filters.control and not _matching_controls(row["controls"], filters):
            continue
        selected.setdefault(row["rule_id"], []).append(row)
    return selected


def _rule_figures(store: Store, rule_id: str, versions: list[dict[str, Any]], filters: Filters,
                  template: str | None) -> RuleFigures:
    latest = versions[-1]
    with store.engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(  # noqa: SLF001
            select(evaluations).where(evaluations.c.rule_id == rule_id,
                                      evaluations.c.window_end > filters.start,
                                      evaluations.c.window_start < filters.end)
            .order_by(evaluations.c.id))]
        ids = [r["id"] for r in rows]
        query = select(violations).where(violations.c.evaluation_id.in_(ids)).order_by(violations.c.id)
        found = [dict(r._mapping) for r in connection.execute(query)] if ids else []  # noqa: SLF001
    used = {r["rule_version"] for r in rows}
    figures = RuleFigures(
        rule_id, latest["name"], latest["severity"], list(latest["frameworks"]), list(latest["controls"]),
        versions=[{"version": v["version"], "condition": v["condition"], "source": v["source"],
                   "first_seen_at": v["first_seen_at"]}
                  for v in versions if v["version"] in used or not used],
        expected_seconds=(filters.end - filters.start).total_seconds())
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


def _clip(start: datetime, end: datetime, filters: Filters) -> tuple[datetime, datetime]:
    return max(start, filters.start), min(end, filters.end)


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
    merged = _merge(covered)
    figures.covered_seconds = sum((e - s).total_seconds() for s, e in merged)
    position = filters.start
    for start, end in [*merged, (filters.end, filters.end)]:
        if start > position:
            figures.gaps.append(Gap(position, start, _why(rows, position, start)))
        position = max(position, end)


def _merge(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _why(rows: list[dict[str, Any]], start: datetime, end: datetime) -> str:
    """What the store says about an uncovered stretch."""
    overlapping = [r for r in rows if r["window_start"] < end and r["window_end"] > start]
    if any(r["outcome"] == "skipped" for r in overlapping):
        return "skipped: the daemon was down longer than max_catchup"
    failed = [r for r in overlapping if r["outcome"] == "failed"]
    if failed:
        return f"evaluation failed ({len(failed)} attempts): {(failed[-1]['error'] or '').splitlines()[0]}"
    return "not evaluated (no record: the rule was not running, or the period is not over yet)"


def _days(kept: list[dict[str, Any]], filters: Filters, found: list[dict[str, Any]],
          settled_by: dict[int, dict[str, Any]]) -> list[Day]:
    """Each counted record on the day its window starts; a final pass counts the windows it settles.

    Violations are those not retracted, recorded by the record or by a window it settles; a
    settled window is clean unless one of them was recorded by it; late violations (recorded by
    the final pass itself) make one of its windows not clean.
    """
    days: dict[str, Day] = {}
    moment = filters.start.replace(hour=0, minute=0, second=0, microsecond=0)
    while moment < filters.end:
        key = moment.date().isoformat()
        days[key] = Day(key)
        moment += timedelta(days=1)
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
