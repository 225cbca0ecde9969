"""Semantic checks on a parsed condition: it parses, but does it mean anything.

Each concern is one small function from a node to issues; ``lint`` runs them all over
every node, so a rule with three mistakes reports three issues.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import re2

from checker.rules import model as m
from checker.rules import printer
from checker.rules.semconv import PARTNER
from checker.rules.vocabulary import Intrinsic, ValueType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_ORDERING = frozenset({">", ">=", "<", "<="})


class IssueLevel(Enum):
    """Errors stop a rule from loading; warnings are printed and the rule runs.

    Not a rule's ``Severity`` (critical .. info), which says how bad a violation is.
    """

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Issue:
    """One finding, at a position inside the condition text."""

    level: IssueLevel
    message: str
    pos: m.Pos
    hint: str | None = None


def regex_error(pattern: str) -> str | None:
    """Why RE2 (Tempo's regex engine) rejects ``pattern``, or None when it accepts it."""
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as err:
        return err.args[0].decode() if isinstance(err.args[0], bytes) else str(err.args[0])
    return None


def walk(node: object) -> Iterator[object]:
    """Every node below and including ``node``, conditions and predicates alike."""
    yield node
    for child in _children(node):
        yield from walk(child)


def reads_events(pred: m.Predicate) -> bool:
    """Whether a ``.where`` predicate mentions an event term, and so holds only through one event."""
    return any(isinstance(attr := getattr(node, "attr", None), m.Attr) and attr.of_event
               for node in walk(pred))


def _children(node: object) -> tuple[object, ...]:
    match node:
        case m.ClausedRule():
            return tuple(clause.cond for clause in node.clauses)
        case m.BareRule():
            return (node.cond,)
        case m.And() | m.Or():
            return node.items
        case m.Not():
            return (node.item,)
        case m.SpanCheck() | m.CountCheck():
            return wheres(node)
        case m.RelationCheck():
            return (node.left, node.right)
    return ()


def wheres(node: object) -> tuple[m.Predicate, ...]:
    """The ``.where`` predicates of a check: a span check's, or each side's of a count."""
    match node:
        case m.SpanCheck():
            return node.where
        case m.CountCheck():  # count(X.where(p)): the predicates of each side
            return tuple(p for count in (node.left, node.right) if isinstance(count, m.SpanCount)
                         for p in count.where)
    return ()


def _regex(node: object) -> Iterator[Issue]:
    if isinstance(node, m.Matches) and (why := regex_error(node.pattern)):
        yield Issue(IssueLevel.ERROR, f"invalid regular expression {node.pattern!r}: {why}",
                    node.pos, "matches takes an RE2 expression (no lookaround, no backreferences)")


def _empty_list(node: object) -> Iterator[Issue]:
    if isinstance(node, m.InList) and not node.values:
        op = "not in" if node.negated else "in"
        yield Issue(IssueLevel.ERROR, f"'{op} []' with an empty list", node.pos,
                    "list at least one value: x in [a, b]")


def _count_operand(node: object) -> Iterator[Issue]:
    if not isinstance(node, m.CountCheck) or isinstance(node.right, m.SpanCount):
        return
    right = node.right
    if isinstance(right, bool) or not isinstance(right, int | float):
        yield Issue(IssueLevel.ERROR, f"count({node.left.name}) compared with {right!r}",
                    node.pos, "a count compares with a number or another count(...)")
    elif right < 0:
        yield Issue(IssueLevel.WARNING, f"count({node.left.name}) compared with a negative number",
                    node.pos, "a count is never negative")


def _typed_value(node: object) -> Iterator[Issue]:
    if not isinstance(node, m.Compare):
        return
    if isinstance(node.value, bool) and node.op in _ORDERING:
        yield Issue(IssueLevel.ERROR, f"'{node.op}' on a boolean", node.pos,
                    "booleans compare with == or != only")
    intrinsic = Intrinsic.named(node.attr.name)
    if isinstance(node.value, m.DurationLiteral) and (
            intrinsic is None or intrinsic.value_type is not ValueType.DURATION):
        yield Issue(IssueLevel.ERROR, f"duration {node.value.text} compared with {node.attr.name}",
                    node.pos, "durations compare with span:duration")


def _intrinsic(node: object) -> Iterator[Issue]:
    attr = getattr(node, "attr", None)
    if not isinstance(attr, m.Attr) or not attr.intrinsic:
        return
    intrinsic = Intrinsic.named(attr.name)
    pos: m.Pos = getattr(node, "pos", m.NO_POS)
    if intrinsic is None:
        yield Issue(IssueLevel.ERROR, f"unknown intrinsic {attr.name}", pos,
                    "known intrinsics: " + ", ".join(sorted(i.written for i in Intrinsic)))
        return
    values: tuple[m.Scalar, ...] = ()
    if isinstance(node, m.Compare):
        values = (node.value,)
        if intrinsic.is_enum and node.op in _ORDERING:
            yield Issue(IssueLevel.ERROR, f"'{node.op}' on {attr.name}", pos,
                        f"{attr.name} compares with == or !=")
    elif isinstance(node, m.InList):
        values = node.values
    yield from _intrinsic_values(intrinsic, values, pos)


def _intrinsic_values(intrinsic: Intrinsic, values: tuple[m.Scalar, ...],
                      pos: m.Pos) -> Iterator[Issue]:
    name, kind, allowed = intrinsic.written, intrinsic.value_type, intrinsic.value_type.allowed
    for value in values:
        if kind is ValueType.DURATION and not isinstance(value, m.DurationLiteral):
            yield Issue(IssueLevel.ERROR, f"{name} compared with {value!r}", pos,
                        "write a duration such as 500ms or 2s")
        elif allowed is not None and value not in allowed:
            yield Issue(IssueLevel.ERROR, f"{name} compared with {value!r}", pos,
                        f"{name} is one of: {', '.join(sorted(allowed))}")
        elif kind is ValueType.STRING and not isinstance(value, str):
            yield Issue(IssueLevel.ERROR, f"{name} compared with {value!r}", pos,
                        f"{name} is a string")


# TraceQL's bare intrinsics: here a bare name is an attribute, so these never match a span's own.
_TRACEQL_INTRINSICS = {i.traceql: i for i in Intrinsic if i.written.startswith("span:")}
# OpenTelemetry's resource namespaces: on a span's own attributes these are never found.
_RESOURCE_NAMESPACES = ("service.", "host.", "k8s.", "process.", "telemetry.sdk.", "cloud.",
                        "container.", "deployment.", "os.", "faas.")


def _traceql_habit(node: object) -> Iterator[Issue]:
    """``status == error``: TraceQL's bare intrinsics, which here read as attributes."""
    attr = getattr(node, "attr", None)
    if not isinstance(attr, m.Attr) or attr.intrinsic or attr.quoted or attr.scope is not None:
        return
    if intrinsic := _TRACEQL_INTRINSICS.get(attr.name):
        yield Issue(IssueLevel.WARNING, f"'{attr.name}' is an attribute called {attr.name}, not the "
                    f"span's own {attr.name}", getattr(node, "pos", m.NO_POS),
                    f"write {intrinsic.written} for the span's {attr.name} (TraceQL's bare "
                    f'{attr.name}); quote it ("{attr.name}") if an attribute of that name is meant')


def _wrong_scope(node: object) -> Iterator[Issue]:
    """``span.service.name``: a resource attribute looked for among the span's own."""
    attr = getattr(node, "attr", None)
    if isinstance(attr, m.Attr) and attr.scope == "span" and attr.name.startswith(_RESOURCE_NAMESPACES):
        yield Issue(IssueLevel.WARNING, f"'span.{attr.name}' looks at the span's own attributes, but "
                    f"{attr.name} is a resource attribute in OpenTelemetry", getattr(node, "pos", m.NO_POS),
                    f"write resource.{attr.name}, or {attr.name} (the span, then its resource)")


def _bare_word_ordering(node: object) -> Iterator[Issue]:
    """``depth > max_capacity`` compares with the string "max_capacity", not another attribute."""
    if isinstance(node, m.Compare) and node.op in _ORDERING and isinstance(node.value, m.BareWord):
        yield Issue(IssueLevel.WARNING, f"'{node.attr.name} {node.op} {node.value}' compares with the "
                    f'string "{node.value}"', node.pos,
                    "an attribute cannot be compared with another; quote the value if a string "
                    "order is meant, or write a number")


def _dotted_shorthand(node: object) -> Iterator[Issue]:
    """``X.a.b > 1`` reads as span ``X.a``, attribute ``b``, which may not be what was meant."""
    if isinstance(node, m.SpanCheck) and node.shorthand and node.name and "." in node.name:
        attr = getattr(node.where[0], "attr", None)
        name = attr.name if isinstance(attr, m.Attr) else "?"
        head, _, tail = node.name.partition(".")
        yield Issue(IssueLevel.WARNING, f"'{node.name}.{name}' reads as span {node.name}, "
                    f"attribute {name}", node.pos,
                    f"say which: {node.name}.where({name} ...) or {head}.where({tail}.{name} ...)")


def _event_attribute_name(node: object) -> Iterator[Issue]:
    """``event.name``: an event attribute called name, which instrumentations do not set."""
    attr = getattr(node, "attr", None)
    if isinstance(attr, m.Attr) and attr.scope == "event" and attr.name == "name":
        yield Issue(IssueLevel.WARNING, "'event.name' is an event attribute called name, not the "
                    "event's own name", getattr(node, "pos", m.NO_POS),
                    "write event:name for the event's name (as TraceQL does)")


def _negated_event(node: object) -> Iterator[Issue]:
    """``X.where(not event:name == exception)`` reads "some event is not an exception"."""
    for pred in wheres(node):
        for inner in walk(pred):
            if isinstance(inner, m.Not) and reads_events(inner.item):
                yield Issue(IssueLevel.WARNING, "'not' over an event term holds when some event of "
                            "the span fails it, not when the span has no such event", inner.pos,
                            "to say the span has no such event, negate the whole check: "
                            "not X.where(event:name == exception), or put it in never { }")


CHECKS: tuple[Callable[[object], Iterator[Issue]], ...] = (
    _regex, _empty_list, _count_operand, _typed_value, _intrinsic, _traceql_habit, _wrong_scope,
    _bare_word_ordering, _dotted_shorthand, _event_attribute_name, _negated_event,
)


def _renamed_attributes(parsed: m.ParsedCondition) -> Iterator[Issue]:
    """A rule on one name of a renamed semantic-convention pair, never the other."""
    named = [(attr, getattr(node, "pos", m.NO_POS)) for node in walk(parsed)
             if isinstance(attr := getattr(node, "attr", None), m.Attr) and not attr.intrinsic]
    used = {attr.name for attr, _ in named}
    warned: set[str] = set()
    for attr, pos in named:
        partner = PARTNER.get(attr.name)
        if partner is None or partner in used or attr.name in warned:
            continue
        warned.add(attr.name)
        yield Issue(IssueLevel.WARNING, f"'{attr.name}' has a renamed twin, {partner}: instrumentation "
                    f"emits one or the other", pos,
                    f"test both, e.g. ({attr.name} >= 500 or {partner} >= 500)"
                    if "status_code" in attr.name else f"test both: ({attr.name} ... or {partner} ...)")


def _vacuous_every(parsed: m.ParsedCondition) -> Iterator[Issue]:
    """``every X has child Y`` holds on any trace without an X: a trap where it can make a trace violate.

    That is in ``when`` or ``never`` under no (or an even number of) ``not``, and in ``always``
    under one. A conjunct that requires an X span beside it (``X and every X ...``) disarms it.
    """
    if isinstance(parsed, m.BareRule):  # a bare check reads as never { check }
        blocks = [(m.ClauseKind.NEVER, parsed.cond)]
    else:
        blocks = [(c.kind, c.cond) for c in parsed.clauses]
    for kind, cond in blocks:
        for check, positive in _every_checks(cond, positive=True, required=frozenset()):
            if positive == (kind is m.ClauseKind.ALWAYS):
                continue
            effect = {m.ClauseKind.WHEN: "is in scope"}.get(kind, "violates the rule")
            left = printer.condition(check.left)
            written = ("" if positive else "not ") + printer.condition(check)
            yield Issue(IssueLevel.WARNING, f"'every {left} ...' also holds on a trace without any "
                        f"{left}: in {kind.value}, every such trace {effect}", check.pos,
                        f"require the span too: {left} and {written}" if positive else
                        f"say the span is there: {left} and {written}")


def _every_checks(cond: m.Condition, *, positive: bool, required: frozenset[m.SpanCheck]
                  ) -> Iterator[tuple[m.RelationCheck, bool]]:
    """Each ``every`` check not disarmed by a required span beside it, with its polarity."""
    match cond:
        case m.And():
            beside = required | {item for item in cond.items if isinstance(item, m.SpanCheck)} if positive \
                else required
            for item in cond.items:
                yield from _every_checks(item, positive=positive, required=beside)
        case m.Or():
            for item in cond.items:
                yield from _every_checks(item, positive=positive, required=required)
        case m.Not():
            yield from _every_checks(cond.item, positive=not positive, required=frozenset())
        case m.RelationCheck(every=True) if cond.left not in required:
            yield cond, positive


def unnegated_checks(cond: m.Condition | None) -> Iterator[m.Check]:
    """The checks of ``cond`` under no ``not``: the ones that can make it hold."""
    match cond:
        case m.And() | m.Or():
            for item in cond.items:
                yield from unnegated_checks(item)
        case m.SpanCheck() | m.CountCheck() | m.RelationCheck():
            yield cond


def lint(parsed: m.ParsedCondition) -> list[Issue]:
    """Every issue in the condition, in the order written."""
    issues = [issue for node in walk(parsed) for check in CHECKS for issue in check(node)]
    issues.extend(_renamed_attributes(parsed))
    issues.extend(_vacuous_every(parsed))
    return sorted(issues, key=lambda i: (i.pos.line, i.pos.column))
