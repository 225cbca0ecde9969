"""Shape lark's parse tree into the AST of ``model``; no validation beyond literals."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

from lark import Token, Transformer, v_args

from checker.rules import model as m
from checker.rules.durations import MAX_DURATION_TEXT, parse_ns
from checker.rules.errors import ConditionError, DurationTooLongError
from checker.rules.vocabulary import ATTRIBUTE_SCOPES

_INT64_MAX = 2**63 - 1
TestFactory = Callable[[m.Attr, m.Pos], m.Test]


def pos_of(token: Token) -> m.Pos:
    """The 1-based position of a token in the condition text."""
    return m.Pos(token.line or 1, token.column or 1)


def decode_string(token: Token) -> str:
    r"""Decode a double-quoted string; only ``\\"`` and ``\\\\`` escapes exist."""
    body = str(token)[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt not in '"\\':
                where = pos_of(token)
                raise ConditionError(
                    f"invalid escape sequence \\{nxt} in string",
                    m.Pos(where.line, where.column + 1 + i),
                    hint='inside strings only \\" (a quote) and \\\\ (a backslash) are escapes',
                )
            out.append(nxt)
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def name_of(token: Token) -> str:
    """A span or attribute name, written bare (dotted) or quoted."""
    return decode_string(token) if token.type == "STRING" else str(token)


def _short(token: Token) -> str:
    """A literal as quoted in a message: a 5000-digit number is not worth repeating."""
    text = str(token)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-10:]} ({len(text)} characters)"


def parse_number(token: Token) -> int | float:
    """Numbers may use ``_`` separators; a dot or exponent makes a double.

    Integers must fit in 64 bits and doubles be finite, as OpenTelemetry attributes are:
    ``1e309`` would be infinity, which neither TraceQL nor JSON can carry.
    """
    clean = str(token).replace("_", "")
    if any(c in clean for c in ".eE"):
        value = float(clean)
        if not math.isfinite(value):
            raise ConditionError(f"number {_short(token)} is too large for a double", pos_of(token),
                               "doubles go up to about 1.8e308")
        return value
    digits = clean.lstrip("-").lstrip("0") or "0"  # int() refuses over 4300 digits: count them first
    value = (-1 if clean.startswith("-") else 1) * int(digits[:len(str(_INT64_MAX)) + 1])
    if len(digits) > len(str(_INT64_MAX)) or not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ConditionError(f"number {_short(token)} does not fit in 64 bits", pos_of(token),
                           f"integers go from {-_INT64_MAX - 1} to {_INT64_MAX}")
    return value


def duration_literal(token: Token) -> m.DurationLiteral:
    """``500ms`` or ``-2s`` → nanoseconds, keeping the text; at most ten years, as rule durations."""
    text = str(token)
    try:
        nanos = parse_ns(text.removeprefix("-"))
    except DurationTooLongError:
        raise ConditionError(f"duration {_short(token)} is longer than {MAX_DURATION_TEXT}",
                           pos_of(token)) from None
    if nanos is None:  # pragma: no cover - the lexer only admits one number and a known unit
        raise ValueError(text)
    return m.DurationLiteral(-nanos if text.startswith("-") else nanos, text)


def _flatten(kind: type[Any], parts: tuple[Any, ...]) -> Any:
    """One flat and/or over the operands, ``(a or b) or c`` included: one level, however long."""
    items = tuple(item for part in parts if not isinstance(part, Token)
                  for item in (part.items if isinstance(part, kind) else (part,)))
    return kind(items, _node_pos(items[0]))


def _node_pos(node: Any) -> m.Pos:
    return cast("m.Pos", getattr(node, "pos", m.NO_POS))


@v_args(inline=True)
class ToAst(Transformer[Token, m.ParsedCondition]):
    """Turn each grammar rule into the dataclass of the same meaning."""

    def clauses(self, *clauses: m.Clause) -> m.ClausedRule:
        return m.ClausedRule(clauses)

    def bare(self, cond: m.Condition) -> m.BareRule:
        return m.BareRule(cond)

    def clause(self, keyword: Token, cond: m.Condition) -> m.Clause:
        return m.Clause(m.ClauseKind(str(keyword)), cond, pos_of(keyword))

    def or_(self, *operands: Any) -> Any:
        return _flatten(m.Or, operands)

    def and_(self, *operands: Any) -> Any:
        return _flatten(m.And, operands)

    def not_(self, keyword: Token, item: Any) -> Any:
        return m.Not(item, pos_of(keyword))

    def span_check(self, ref: tuple[str | None, m.Pos], *wheres: m.Predicate) -> m.SpanCheck:
        return m.SpanCheck(ref[0], wheres, ref[1])

    def relation_check(self, every: Token | None, left: m.SpanCheck, relation: Token,
                       right: m.SpanCheck) -> m.RelationCheck:
        pos = pos_of(every) if every is not None else left.pos
        return m.RelationCheck(left, m.Relation(" ".join(relation.split())), right, every is not None, pos)

    def span_name(self, token: Token) -> tuple[str, m.Pos]:
        return name_of(token), pos_of(token)

    def any_span(self, keyword: Token) -> tuple[str | None, m.Pos]:
        return None, pos_of(keyword)

    def span_ref(self, keyword: Token, name: Token) -> tuple[str, m.Pos]:
        return name_of(name), pos_of(keyword)

    def where_clause(self, _keyword: Token, pred: m.Predicate) -> m.Predicate:
        return pred

    def count_ref(self, keyword: Token, name: Token, *wheres: m.Predicate) -> m.SpanCount:
        counted = None if name.type == "ANY_SPAN" else name_of(name)
        return m.SpanCount(counted, pos_of(keyword), wheres)

    def count_check(self, left: m.SpanCount, op: Token, right: m.SpanCount | m.Scalar) -> m.CountCheck:
        return m.CountCheck(left, cast("m.CompareOp", str(op)), right, left.pos)

    def shorthand(self, name: Token, test: TestFactory) -> m.SpanCheck:
        span, dot, attr = str(name).rpartition(".")
        if not dot:
            raise ConditionError(
                f"'{name}' compared to a value is not a span check",
                pos_of(name),
                hint=f"write SPAN.where({name} ...) or SPAN.{name} ... to test an attribute",
            )
        return m.SpanCheck(span, (test(m.Attr(attr), pos_of(name)),), pos_of(name), shorthand=True)

    def comparison(self, attr: tuple[m.Attr, m.Pos], test: TestFactory) -> m.Test:
        return test(*attr)

    def truthy(self, attr: tuple[m.Attr, m.Pos]) -> m.Truthy:
        return m.Truthy(*attr)

    def attr(self, token: Token) -> tuple[m.Attr, m.Pos]:
        if token.type == "INTRINSIC":
            return m.Attr(str(token), intrinsic=True), pos_of(token)
        if token.type == "STRING":
            return m.Attr(name_of(token), quoted=True), pos_of(token)
        scope, dot, rest = str(token).partition(".")
        if dot and scope in ATTRIBUTE_SCOPES:
            return m.Attr(rest, scope=scope), pos_of(token)
        return m.Attr(str(token)), pos_of(token)

    def test_cmp(self, op: Token, value: m.Scalar) -> TestFactory:
        return lambda attr, pos: m.Compare(attr, cast("m.CompareOp", str(op)), value, pos)

    def test_in(self, _in: Token, values: tuple[m.Scalar, ...]) -> TestFactory:
        return lambda attr, pos: m.InList(attr, values, negated=False, pos=pos)

    def test_not_in(self, _not: Token, _in: Token, values: tuple[m.Scalar, ...]) -> TestFactory:
        return lambda attr, pos: m.InList(attr, values, negated=True, pos=pos)

    def test_matches(self, _kw: Token, pattern: Token) -> TestFactory:
        text = decode_string(pattern)
        return lambda attr, pos: m.Matches(attr, text, pos)

    def test_contains(self, _kw: Token, needle: Token) -> TestFactory:
        text = name_of(needle)
        return lambda attr, pos: m.Contains(attr, text, pos)

    def list(self, *values: m.Scalar | None) -> tuple[m.Scalar, ...]:
        return tuple(v for v in values if v is not None)

    def value(self, token: Token) -> m.Scalar:
        match token.type:
            case "NUMBER":
                return parse_number(token)
            case "STRING":
                return decode_string(token)
            case "TRUE":
                return True
            case "FALSE":
                return False
            case "DURATION":
                return duration_literal(token)
            case _:
                return m.BareWord(token)
