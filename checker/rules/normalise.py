"""Give every condition its when/always/never reading, legacy bare conditions included.

The legacy table (rules.md) follows BeTrace's own converter: the first conjunct is the
trigger, positive conjuncts must always hold, negated ones must never hold.
"""

from __future__ import annotations

from checker.rules import model as m
from checker.rules.errors import ConditionError

LEGACY_HINT = "write when { ... } always { ... } and/or never { ... }"


def normalise(parsed: m.ParsedCondition) -> m.Invariant:
    """The invariant a parsed condition means.

    :raises ConditionError: for shapes that have no reading.
    """
    if isinstance(parsed, m.ClausedRule):
        return _from_clauses(parsed.clauses)
    return _from_bare(parsed.cond)


def _from_clauses(clauses: tuple[m.Clause, ...]) -> m.Invariant:
    seen: dict[m.ClauseKind, m.Condition] = {}
    for clause in clauses:
        if clause.kind in seen:
            raise ConditionError(
                f"a second '{clause.kind.value}' block", clause.pos,
                f"combine both into one {clause.kind.value} {{ ... }} with and / or",
            )
        seen[clause.kind] = clause.cond
    if m.ClauseKind.ALWAYS not in seen and m.ClauseKind.NEVER not in seen:
        raise ConditionError(
            "'when' needs an 'always' or a 'never' block", clauses[0].pos,
            "say what must hold: when { A } always { B }, or what must not: when { A } never { B }",
        )
    return m.Invariant(
        when=seen.get(m.ClauseKind.WHEN),
        always=seen.get(m.ClauseKind.ALWAYS),
        never=seen.get(m.ClauseKind.NEVER),
    )


def _from_bare(cond: m.Condition) -> m.Invariant:
    if isinstance(cond, m.SpanCheck | m.CountCheck | m.RelationCheck):
        return m.Invariant(when=None, always=None, never=cond)
    if not isinstance(cond, m.And):
        raise _no_reading(cond)
    trigger, *rest = cond.items
    if not isinstance(trigger, m.SpanCheck):
        raise _no_reading(trigger)
    required: list[m.Condition] = []
    forbidden: list[m.Condition] = []
    for item in rest:
        if isinstance(item, m.SpanCheck | m.CountCheck | m.RelationCheck):
            required.append(item)
        elif isinstance(item, m.Not) and isinstance(item.item, m.SpanCheck | m.CountCheck | m.RelationCheck):
            forbidden.append(item.item)
        else:
            raise _no_reading(item)
    return m.Invariant(
        when=trigger,
        always=_join(m.And, required),
        never=_join(m.Or, forbidden),
    )


def _join(kind: type[m.And[m.Condition] | m.Or[m.Condition]],
          items: list[m.Condition]) -> m.Condition | None:
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    return kind(tuple(items), items[0].pos)


def _no_reading(node: m.Condition) -> ConditionError:
    return ConditionError(
        "a condition without when must be one check, or checks joined by and starting "
        "with a span check",
        node.pos,
        LEGACY_HINT,
    )
