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

from bisect import bisect_left, bisect_right
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from checker import __version__
from checker.evidence import queries
from checker.evidence.vouching import vouching
from checker.notify.message import trace_url
from checker.store.schema import rules

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from sqlalchemy import Connection

    from checker.store import Store, ledger

EVALUATED = frozenset(queries.EVALUATED)
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
    """Read the store and compute every figure; with ``keys``, check the signed checkpoints too.

    The chain is verified in a thread meanwhile: the figures mostly wait on the database, so the
    two overlap instead of adding up.
    """
    selected = _rules(store, filters)
    with ThreadPoolExecutor(max_workers=1) as pool:
        vouching_now = pool.submit(vouching, store, filters.start, filters.end, keys)
        figures = _figures(store, selected, filters, template)
        vouched = vouching_now.result()
    by_control: dict[str, list[RuleFigures]] = {}
    for rule in figures:
        for control in _matching_controls(rule.controls, filters) or [NO_CONTROL]:
            by_control.setdefault(control, []).append(rule)
    command = "betrace evidence verify" + (f" --config {config}" if config else "")
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


def _figures(store: Store, selected: dict[str, list[dict[str, Any]]], filters: Filters,
             template: str | None) -> list[RuleFigures]:
    """Every selected rule's figures, in the order of ``selected``."""
    if not selected:
        return []
    with store.engine.connect() as connection:
        period = queries.Period(list(selected), filters.start, filters.end, connection.dialect.name)
        tallies: dict[str, list[Any]] = {rule_id: [] for rule_id in selected}
        for group in queries.counts(connection, period):
            tallies[group.rule_id].append(group)
        figures = {rule_id: _rule_figures(rule_id, versions, tallies[rule_id], filters)
                   for rule_id, versions in selected.items()}
        stretches: dict[str, list[tuple[datetime, datetime]]] = {rule_id: [] for rule_id in selected}
        for stretch in queries.covered(connection, period):
            stretches[stretch.rule_id].append(_clip(stretch.start, stretch.end, filters))
        attempts: dict[str, list[dict[str, Any]]] = {rule_id: [] for rule_id in selected}
        for attempt in queries.attempts(connection, period):
            attempts[attempt.rule_id].append(dict(attempt._mapping))  # noqa: SLF001
        for rule_id, rule in figures.items():
            coverage(rule, _merge(stretches[rule_id]), attempts[rule_id], filters)
        _count_days(connection, period, figures, filters)
        for found in queries.found(connection, period):
            _violation(figures[found.rule_id], found, template)
    return list(figures.values())


def _rule_figures(rule_id: str, versions: list[dict[str, Any]], tallies: list[Any],
                  filters: Filters) -> RuleFigures:
    """The rule's description and its records' counts; coverage, days and violations come after."""
    figures = described(rule_id, versions, {t.rule_version for t in tallies}, filters)
    for tally in tallies:
        records = tally.records
        if tally.outcome in EVALUATED:
            if tally.settles:  # a final pass covers its provisional windows again: not a window itself
                continue
            final = tally.settler_outcome if tally.settled else tally.outcome
            figures.windows_evaluated += records
            figures.windows_incomplete += records if final == "incomplete" else 0
            figures.backfilled_windows += records if tally.backfill else 0
            unsettled = tally.verdict == "provisional" and not tally.settled
            figures.windows_provisional += records if unsettled else 0
        elif tally.outcome == "skipped":
            figures.windows_skipped += records
        elif tally.outcome == "failed":
            figures.failed_attempts += records
    return figures


def described(rule_id: str, versions: list[dict[str, Any]], used: set[str], filters: Filters) -> RuleFigures:
    """A rule's figures before any is counted.

    Its latest version's description, the versions the period's records used (every one when
    none did), the period's length.
    """
    latest = versions[-1]
    return RuleFigures(
        rule_id, latest["name"], latest["severity"], list(latest["frameworks"]), list(latest["controls"]),
        versions=[{"version": v["version"], "condition": v["condition"], "source": v["source"],
                   "first_seen_at": v["first_seen_at"]}
                  for v in versions if v["version"] in used or not used],
        expected_seconds=(filters.end - filters.start).total_seconds())


def _clip(start: datetime, end: datetime, filters: Filters) -> tuple[datetime, datetime]:
    return max(start, filters.start), min(end, filters.end)


def coverage(figures: RuleFigures, merged: list[tuple[datetime, datetime]], attempts: list[dict[str, Any]],
              filters: Filters) -> None:
    """Covered time and the gaps between the covered stretches, each with what the store says of it."""
    figures.covered_seconds = sum((e - s).total_seconds() for s, e in merged)
    position = filters.start
    for start, end in [*merged, (filters.end, filters.end)]:
        if start > position:
            figures.gaps.append(Gap(position, start, _why(attempts, position, start)))
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
        first_line = next(iter((failed[-1]["error"] or "").splitlines()), "") or "no error recorded"
        return f"evaluation failed ({len(failed)} attempts): {first_line}"
    return "not evaluated (no record: the rule was not running, or the period is not over yet)"


def _count_days(connection: Connection, period: queries.Period, figures: dict[str, RuleFigures],
                filters: Filters) -> None:
    """Scope and daily figures of the counted windows.

    Per day from SQL; window by window for a rule whose windows overlap in an unusual way
    (``queries`` says which).
    """
    days = {rule_id: empty_days(filters) for rule_id in figures}
    counted: dict[str, list[Any]] = {rule_id: [] for rule_id in figures}
    unusual: set[str] = set()
    for group in queries.counted_days(connection, period):
        if group.unusual:
            unusual.add(group.rule_id)
        if group.kept:
            counted[group.rule_id].append(group)
    for rule_id in unusual:
        one = queries.Period([rule_id], period.start, period.end, period.dialect)
        counted[rule_id] = list(_one_by_one(queries.candidate_windows(connection, one)))
    for rule_id, groups in counted.items():
        for group in groups:
            day = days[rule_id][group.day]
            day.windows += int(group.windows)
            day.violations += int(group.found)
            day.clean_windows += int(group.clean)
            known = group.scoped == group.records
            if day.in_scope is not None:
                day.in_scope = day.in_scope + int(group.scope or 0) if known else None
            rule = figures[rule_id]
            if rule.traces_in_scope is not None:
                rule.traces_in_scope = rule.traces_in_scope + int(group.scope or 0) if known else None
        figures[rule_id].days = list(days[rule_id].values())


def empty_days(filters: Filters) -> dict[str, Day]:
    """Every UTC day the period touches."""
    days: dict[str, Day] = {}
    moment = filters.start.replace(hour=0, minute=0, second=0, microsecond=0)
    while moment < filters.end:
        key = moment.date().isoformat()
        days[key] = Day(key)
        moment += timedelta(days=1)
    return days


@dataclass(frozen=True)
class _Counted:
    """One counted window, shaped like a ``queries.counted_days`` group of one record."""

    day: str
    windows: int
    found: int
    clean: int
    scope: int | None
    scoped: int
    records: int = 1


def _one_by_one(candidates: Iterator[Any]) -> Iterator[_Counted]:
    """The windows that count, decided in order.

    Live before backfill, final before provisional, each not inside what the windows counted
    before it cover (a backfill over time the daemon evaluated, or a provisional window a final
    pass judged again, is not counted twice).
    """
    spans = _Spans()
    for window in candidates:
        if spans.cover(window.window_start, window.window_end):
            continue
        spans.add(window.window_start, window.window_end)
        yield _Counted(window.day, window.windows, window.found, window.clean, window.scope_size,
                       int(window.scope_size is not None))


class _Spans:
    """Merged stretches of time, sorted, kept apart by gaps: what the counted windows cover."""

    def __init__(self) -> None:
        self._starts: list[datetime] = []
        self._ends: list[datetime] = []

    def cover(self, start: datetime, end: datetime) -> bool:
        """Whether one stretch holds ``[start, end]``."""
        if end < start:  # not a window: any stretch reaching past its start holds it
            return any(s <= start and end <= e for s, e in zip(self._starts, self._ends, strict=True))
        at = bisect_right(self._starts, start) - 1
        return at >= 0 and end <= self._ends[at]

    def add(self, start: datetime, end: datetime) -> None:
        """Merge ``[start, end]`` in with every stretch it overlaps or touches; an empty one adds nothing."""
        if not start < end:
            return
        first = bisect_left(self._ends, start)  # the first stretch ending at or after the start
        last = bisect_right(self._starts, end)  # past the last stretch starting at or before the end
        if first < last:
            start, end = min(start, self._starts[first]), max(end, self._ends[last - 1])
        self._starts[first:last], self._ends[first:last] = [start], [end]


def _violation(figures: RuleFigures, found: Any, template: str | None) -> None:
    """A violation under the verdict that stands: listed, late (found by a final pass) or retracted."""
    entry = {"trace_id": found.trace_id, "found_at": found.found_at, "severity": found.severity,
             "reason": found.reason, "evaluation_id": found.evaluation_id,
             "trace_url": trace_url(template, found.trace_id), "status": found.status}
    if found.status == "retracted":
        figures.retracted.append({**entry, "retraction_reason": found.retraction_reason or "",
                                  "amended_at": found.amended_at, "settled_by": found.settler})
        return
    figures.violations.append(entry)
    if found.recorder_settles:
        figures.late.append({**entry, "settled_by": found.evaluation_id})
    elif found.settler is not None:
        figures.confirmed_by_final += 1
