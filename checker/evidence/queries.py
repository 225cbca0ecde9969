"""The evidence report's questions to the store, answered by the database in aggregate.

Why SQL: a quarter is millions of evaluation records, and reading each into Python took
minutes and gigabytes. Each statement here covers every selected rule at once and returns a
handful of rows per rule (counts per outcome, covered stretches, counted windows per day), or
rows that the report lists anyway (violations, failed and skipped attempts).

Counted windows (``figures`` says which: live before backfill, final before provisional, none
covered by one counted before) are decided in SQL when a rule's windows have the usual shape:
no backfill, no final windows overlapping each other, no provisional ones overlapping each
other, and each provisional window either inside a final one or overlapping none. Then a
window counts unless it is provisional and inside a final one. Any other shape is flagged
``unusual`` by ``counted_days``, and ``figures`` decides those rules' windows one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, and_, case, cast, func, literal, literal_column, or_, select

from checker.store.schema import evaluations, violations

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator
    from datetime import datetime

    from sqlalchemy import ColumnElement, Connection, Subquery

EVALUATED = ("ok", "violations", "incomplete")
ATTEMPTED = ("skipped", "failed")  # written out, as ``ix_evaluations_attempts`` says, for SQLite to use it
STREAM = {"stream_results": True, "yield_per": 10_000}  # a server-side cursor on PostgreSQL

e = evaluations.c


@dataclass(frozen=True)
class Period:
    """The rules and the time a report asks about, and the dialect the questions are written in."""

    rules: Collection[str]
    start: datetime
    end: datetime
    dialect: str

    def overlapping(self) -> ColumnElement[bool]:
        """The records a rule's figures read: its windows that overlap the period."""
        return and_(e.rule_id.in_(list(self.rules)), e.window_end > self.start, e.window_start < self.end)

    def settles(self) -> ColumnElement[bool]:
        """A final pass over provisional windows: a record with amendments (a JSON null is none)."""
        kind = func.json_typeof if self.dialect == "postgresql" else func.json_type
        return and_(e.amendments.is_not(None), kind(e.amendments) != "null")

    def day(self) -> ColumnElement[str]:
        """The UTC day a window starts, as ``YYYY-MM-DD``."""
        if self.dialect == "postgresql":
            return func.to_char(func.timezone("UTC", e.window_start), "YYYY-MM-DD")
        return func.substr(e.window_start, 1, 10)  # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'


def settlements(period: Period) -> Subquery:
    """Who settled what: (rule, provisional record, the period's last final pass listing it)."""
    if period.dialect == "postgresql":
        listed = func.json_array_elements_text(e.amendments["provisional"]).table_valued("value")
    else:
        listed = func.json_each(e.amendments, "$.provisional").table_valued("value")
    provisional = cast(listed.c.value, BigInteger)
    settler = cast(func.max(e.id), BigInteger)  # typed: SQLite indexes the join on it only then
    return (select(e.rule_id, provisional.label("provisional"), settler.label("settler"))
            .select_from(evaluations).join(listed, literal(value=True))
            .where(period.overlapping(), period.settles())
            .group_by(e.rule_id, provisional).subquery("settled"))


def counts(connection: Connection, period: Period) -> Iterator[Any]:
    """Records per rule, version, outcome, verdict, backfill, settling, and settled (by what outcome)."""
    settled = settlements(period)
    settler = evaluations.alias("settler")
    flag = case((period.settles(), 1), else_=0).label("settles")
    keys = (e.rule_id, e.rule_version, e.outcome, e.verdict, e.backfill, flag,
            settled.c.settler.is_not(None).label("settled"), settler.c.outcome.label("settler_outcome"))
    query = (select(*keys, func.count().label("records"))
             .select_from(evaluations.outerjoin(settled, and_(settled.c.rule_id == e.rule_id,
                                                               settled.c.provisional == e.id))
                          .outerjoin(settler, settler.c.id == settled.c.settler))
             .where(period.overlapping()).group_by(*keys))
    return iter(connection.execute(query))


def covered(connection: Connection, period: Period) -> Iterator[Any]:
    """Per rule, the stretches its evaluated windows cover (merged where they overlap or touch), in order.

    Not clipped to the period: clipping the merged stretches is the same as merging clipped windows.
    """
    order = (e.window_start, e.window_end)
    reach = func.max(e.window_end).over(partition_by=e.rule_id, order_by=order, rows=(None, -1))
    windows = (select(e.rule_id, e.window_start, e.window_end, reach.label("reach"))
               .where(period.overlapping(), e.outcome.in_(EVALUATED), e.window_start < e.window_end)
               .subquery("windows"))
    w = windows.c
    starts = case((or_(w.reach.is_(None), w.window_start > w.reach), 1), else_=0)
    numbered = select(w.rule_id, w.window_start, w.window_end, func.sum(starts).over(
        partition_by=w.rule_id, order_by=(w.window_start, w.window_end), rows=(None, 0)).label("stretch")
    ).subquery("numbered")
    n = numbered.c
    query = (select(n.rule_id, func.min(n.window_start).label("start"), func.max(n.window_end).label("end"))
             .group_by(n.rule_id, n.stretch).order_by(n.rule_id, func.min(n.window_start)))
    return iter(connection.execute(query.execution_options(**STREAM)))


def attempts(connection: Connection, period: Period) -> Iterator[Any]:
    """The skipped and failed records, per rule in the order they were written: why a gap is one."""
    query = (select(e.rule_id, e.id, e.window_start, e.window_end, e.outcome, e.error)
             .where(period.overlapping(), e.outcome.in_([literal_column(f"'{o}'") for o in ATTEMPTED]))
             .order_by(e.rule_id, e.id))
    return iter(connection.execute(query.execution_options(**STREAM)))


def _kept_windows(period: Period) -> Subquery:
    """The windows whose figures may count: evaluated, starting in the period.

    Each with what it adds to its day, whether it counts in the usual shape, and whether its
    rule's shape is unusual. A window adds the provisional windows it settles (at least itself),
    their violations and its own that were not retracted, and those of its windows (settled ones
    or itself) without a violation.
    """
    provisional = case((e.verdict == "provisional", 1), else_=0)
    order = (e.window_start, provisional, e.window_end, e.id)
    final_reach = func.max(case((provisional == 0, e.window_end))).over(
        partition_by=e.rule_id, order_by=order, rows=(None, -1))
    provisional_reach = func.max(case((provisional == 1, e.window_end))).over(
        partition_by=e.rule_id, order_by=order, rows=(None, -1))
    unusual = or_(e.backfill.is_(True), e.window_start >= e.window_end,
                  provisional_reach > e.window_start, and_(provisional == 0, final_reach > e.window_start),
                  and_(provisional == 1, final_reach > e.window_start, final_reach < e.window_end))
    inside_final = and_(provisional == 1, final_reach >= e.window_end)
    found = (select(violations.c.evaluation_id, func.count().label("found"))
             .where(violations.c.status != "retracted").group_by(violations.c.evaluation_id)
             .subquery("found"))
    settled = settlements(period)
    own = evaluations.alias("own")
    settled_found = (select(settled.c.settler, func.count().label("windows"),
                            func.coalesce(func.sum(found.c.found), 0).label("found"),
                            func.count(found.c.found).label("with_found"))
                     .select_from(settled.outerjoin(own, and_(own.c.id == settled.c.provisional,
                                                              own.c.rule_id == settled.c.rule_id,
                                                              own.c.window_end > period.start,
                                                              own.c.window_start < period.end))
                                  .outerjoin(found, found.c.evaluation_id == own.c.id))
                     .group_by(settled.c.settler).subquery("settled_found"))
    windows = func.coalesce(settled_found.c.windows, 1)
    with_found = (case((found.c.found.is_not(None), 1), else_=0)
                  + func.coalesce(settled_found.c.with_found, 0))
    return (select(e.rule_id, e.id, e.backfill, provisional.label("provisional"), e.window_start,
                   e.window_end, period.day().label("day"), e.scope_size, windows.label("windows"),
                   (func.coalesce(found.c.found, 0) + func.coalesce(settled_found.c.found, 0)).label("found"),
                   case((windows > with_found, windows - with_found), else_=0).label("clean"),
                   case((inside_final, 0), else_=1).label("kept"),
                   case((unusual, 1), else_=0).label("unusual"))
            .select_from(evaluations.outerjoin(found, found.c.evaluation_id == e.id)
                         .outerjoin(settled_found, settled_found.c.settler == e.id))
            .where(period.overlapping(), e.outcome.in_(EVALUATED), e.window_start >= period.start)
            .subquery("kept_windows"))


def counted_days(connection: Connection, period: Period) -> Iterator[Any]:
    """Per rule, day and kept (1) or not: windows, violations, clean windows, scope and records.

    Scope is summed and counted where known; ``unusual`` when the rule's windows are not of the
    usual shape.
    """
    k = _kept_windows(period).c
    query = (select(k.rule_id, k.day, k.kept, func.max(k.unusual).label("unusual"),
                    func.sum(k.windows).label("windows"), func.sum(k.found).label("found"),
                    func.sum(k.clean).label("clean"), func.sum(k.scope_size).label("scope"),
                    func.count(k.scope_size).label("scoped"), func.count().label("records"))
             .group_by(k.rule_id, k.day, k.kept))
    return iter(connection.execute(query))


def candidate_windows(connection: Connection, period: Period) -> Iterator[Any]:
    """One rule's windows that may count, in the order ``figures`` decides them one by one."""
    k = _kept_windows(period).c
    query = select(k.id, k.window_start, k.window_end, k.day, k.scope_size, k.windows, k.found, k.clean
                   ).order_by(k.backfill, k.provisional, k.id)
    return iter(connection.execute(query.execution_options(**STREAM)))


def found(connection: Connection, period: Period) -> Iterator[Any]:
    """The violations the rules' records of the period recorded, oldest first.

    Each with whether its recorder is a final pass (a late violation) and which pass settled it.
    """
    settled = settlements(period)
    flag = case((period.settles(), 1), else_=0)
    query = (select(e.rule_id, violations.c.trace_id, violations.c.found_at, violations.c.severity,
                    func.coalesce(violations.c.detail["reason"].as_string(), "").label("reason"),
                    violations.c.evaluation_id, violations.c.status, violations.c.retraction_reason,
                    violations.c.amended_at, flag.label("recorder_settles"), settled.c.settler)
             .select_from(violations.join(evaluations, e.id == violations.c.evaluation_id)
                          .outerjoin(settled, and_(settled.c.rule_id == e.rule_id,
                                                   settled.c.provisional == violations.c.evaluation_id)))
             .where(period.overlapping()).order_by(violations.c.id))
    return iter(connection.execute(query.execution_options(**STREAM)))

