"""Shape lark's parse tree into the AST of ``model``; no validation beyond literals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from lark import Token, Transformer, v_args

from checker.rules import model as m

_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9,
                   "m": 60 * 10**9, "h": 3600 * 10**9}

TestFactory = Callable[[m.Attr, m.Pos], m.Test]


class LiteralError(Exception):
    """A literal that lexed but is not valid, e.g. a string with an unknown escape."""

    def __init__(self, message: str, pos: m.Pos, hint: str | None = None) -> None:
        super().__init__(message)
        self.pos = pos
        self.hint = hint


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
                raise LiteralError(
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


def parse_number(text: str) -> int | float:
    """Numbers may use ``_`` separators; a dot or exponent makes a double."""
    clean = text.replace("_", "")
    if any(c in clean for c in ".eE"):
        return float(clean)
    return int(clean)


def parse_duration(text: str) -> m.Duration:
    """``500ms`` → nanoseconds, longest unit suffix first."""
    for unit in sorted(_DURATION_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            amount = float(text[: -len(unit)])
            return m.Duration(round(amount * _DURATION_UNITS[unit]), text)
    raise ValueError(text)  # pragma: no cover - the lexer only admits known units


def _flatten(kind: type[Any], left: Any, right: Any, pos: m.Pos) -> Any:
    items = (*left.items, right) if isinstance(left, kind) else (left, right)
    return kind(items, pos)


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

    def or_(self, left: Any, _op: Token, right: Any) -> Any:
        return _flatten(m.Or, left, right, _node_pos(left))

    def and_(self, left: Any, _op: Token, right: Any) -> Any:
        return _flatten(m.And, left, right, _node_pos(left))

    def not_(self, keyword: Token, item: Any) -> Any:
        return m.Not(item, pos_of(keyword))

    def span_check(self, ref: tuple[str, m.Pos], *wheres: m.Predicate) -> m.SpanCheck:
        return m.SpanCheck(ref[0], wheres, ref[1])

    def span_name(self, token: Token) -> tuple[str, m.Pos]:
        return name_of(token), pos_of(token)

    def span_ref(self, keyword: Token, name: Token) -> tuple[str, m.Pos]:
        return name_of(name), pos_of(keyword)

    def where_clause(self, _keyword: Token, pred: m.Predicate) -> m.Predicate:
        return pred

    def count_ref(self, keyword: Token, name: Token) -> m.SpanCount:
        return m.SpanCount(name_of(name), pos_of(keyword))

    def count_check(self, left: m.SpanCount, op: Token, right: m.SpanCount | m.Scalar) -> m.CountCheck:
        return m.CountCheck(left, cast("m.CompareOp", str(op)), right, left.pos)

    def shorthand(self, name: Token, test: TestFactory) -> m.SpanCheck:
        span, dot, attr = str(name).rpartition(".")
        if not dot:
            raise LiteralError(
                f"'{name}' compared to a value is not a span check",
                pos_of(name),
                hint=f"write SPAN.where({name} ...) or SPAN.{name} ... to test an attribute",
            )
        return m.SpanCheck(span, (test(m.Attr(attr), pos_of(name)),), pos_of(name))

    def comparison(self, attr: tuple[m.Attr, m.Pos], test: TestFactory) -> m.Test:
        return test(*attr)

    def truthy(self, attr: tuple[m.Attr, m.Pos]) -> m.Truthy:
        return m.Truthy(*attr)

    def attr(self, token: Token) -> tuple[m.Attr, m.Pos]:
        if token.type == "INTRINSIC":
            return m.Attr(str(token), intrinsic=True), pos_of(token)
        return m.Attr(name_of(token)), pos_of(token)

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
                return parse_number(str(token))
            case "STRING":
                return decode_string(token)
            case "TRUE":
                return True
            case "FALSE":
                return False
            case "DURATION":
                return parse_duration(str(token))
            case _:
                return str(token)
