"""All TraceQL spelling in one place: quoting, escaping, literals and operators.

Nothing else in the checker writes TraceQL text, so no rule text can break out of a query
except through these functions; the one exception is how Tempo spells each intrinsic, which
``Intrinsic.traceql`` (``rules/vocabulary.py``) holds next to everything else about it.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from checker.rules import model as m

if TYPE_CHECKING:
    from collections.abc import Mapping

EVERYTHING = "{ }"
SPANSET = "{{ {} }}"
AND = " && "
OR = " || "
SCOPES = ("span", "resource")
COUNT_PIPELINE = "{} | count() {} {}"
OPS = {"==": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
MATCH = "=~"
# Tempo's structural operators: the right-hand spans so related to a left-hand one. Order
# (``followed by``) has none.
STRUCTURE = {m.Relation.CHILD: ">", m.Relation.DESCENDANT: ">>", m.Relation.SIBLING: "~"}
INT64 = 2**63
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")


def string(value: str) -> str:
    """A Go double-quoted string literal (Tempo unquotes values with strconv.Unquote)."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def attribute(scope: str, name: str) -> str:
    r"""``span."name"``: always quoted; inside quoted names only \\" and \\\\ are escapes."""
    return f'{scope}."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tag_identifier(scope: str, name: str) -> str:
    """An attribute as the tag values API takes it (``span.http.method``).

    Bare when it can be, as every Tempo version reads that; else quoted as ``attribute`` writes it.
    """
    return f"{scope}.{name}" if _BARE_NAME.fullmatch(name) else attribute(scope, name)


def regex_literal(text: str) -> str:
    """``text`` as an RE2 pattern matching itself literally."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def contains_pattern(needle: str) -> str:
    """Substring as a fully anchored regex; (?s) so that values with newlines match too."""
    return f"(?s).*{regex_literal(needle)}.*"


def int_literal(value: int) -> str | None:
    """An int literal Tempo can parse, or None outside int64."""
    return str(value) if -INT64 < value < INT64 else None


def float_literal(value: float) -> str | None:
    """A float literal without exponent, or None when Python would need one."""
    text = repr(float(value))
    return None if any(c in text for c in "einf") else text


def number_forms(op: str, value: float) -> list[tuple[str, str]] | None:
    """(operator, literal) pairs that together match int and double attributes exactly.

    Tempo compares ints only with int literals and doubles only with float literals, so a
    number becomes one int and one float comparison. None when that cannot be exact.
    """
    as_float = float_literal(float(value))
    if as_float is None or float(value) != value:  # an int a double cannot hold exactly
        return None
    forms = [(OPS[op], as_float)]
    int_form = _int_form(op, value)
    if int_form is None:
        return None
    forms.extend(int_form)
    return forms


def _int_form(op: str, value: float) -> list[tuple[str, str]] | None:
    if isinstance(value, int) or float(value).is_integer():
        literal = int_literal(int(value))
        return None if literal is None else [(OPS[op], literal)]
    bound = {">": math.floor, "<=": math.floor, ">=": math.ceil, "<": math.ceil}.get(op)
    if bound is not None:
        literal = int_literal(bound(value))
        return None if literal is None else [(OPS[op], literal)]
    if op == "==":
        return []  # no int equals a non-integral number
    return [(">", "0"), ("<=", "0")]  # "!=": every int differs


def literal(value: m.Scalar) -> str:
    """A string, boolean or duration literal (numbers go through ``number_forms``)."""
    match value:
        case bool():
            return "true" if value else "false"
        case m.DurationLiteral():
            return f"{value.nanos}ns"
        case str():
            return string(value)
        case _:
            raise TypeError(value)  # pragma: no cover - numbers use number_forms


def compare(ref: str, operator: str, literal_text: str) -> str:
    """``ref op literal``; ``operator`` is TraceQL's (``=``, ``=~``, ...)."""
    return f"{ref} {operator} {literal_text}"


def exists(ref: str) -> str:
    """The attribute is set, whatever its type or value."""
    return compare(ref, OPS["!="], "nil")


def any_of(parts: list[str]) -> str:
    """Disjunction, parenthesised so that it nests inside a conjunction."""
    return parts[0] if len(parts) == 1 else "(" + OR.join(parts) + ")"


def all_of(parts: list[str]) -> str:
    """Conjunction, parenthesised."""
    return parts[0] if len(parts) == 1 else "(" + AND.join(parts) + ")"


def spanset(conditions: list[str]) -> str:
    """One spanset filter: every condition holds on one span."""
    return SPANSET.format(AND.join(conditions)) if conditions else EVERYTHING


def count_query(spans: str, op: str, value: int) -> str:
    """The spans of one spanset filter, counted per trace fragment."""
    return COUNT_PIPELINE.format(spans, OPS[op], value)


def related(left: str, relation: m.Relation, right: str) -> str | None:
    """``{ L } > { R }``: a right-hand span in that relation to a left-hand one, per fragment."""
    op = STRUCTURE.get(relation)
    return None if op is None else f"{left} {op} {right}"


def both(left: str, right: str) -> str:
    """Two spanset filters that must both match in one trace (evaluated per fragment)."""
    return f"{left}{AND}{right}"


def name_equals(name: str) -> str:
    """``name = "X"``."""
    return compare("name", OPS["=="], string(name))


def _id_forms(hex_id: str) -> list[str]:
    """The ID as written and without leading zeros: Tempo prints trace and span IDs trimmed."""
    trimmed = hex_id.lstrip("0") or "0"
    return [hex_id] if trimmed == hex_id else [hex_id, trimmed]


def unseen_spans(seen: Mapping[frozenset[str], Mapping[str, frozenset[str]]]) -> str:
    """Spans of these traces other than the ``seen`` ones, among the span names each is keyed by.

    Every part of a trace that reaches Tempo later brings spans not seen before, in a fragment
    of its own or merged into an old one, so a trace this query does not return has no new span
    of those names. Several rules ask at once, each with the names it reads. Written without
    spaces: it lists many IDs, and every byte counts against the length of a request.
    """
    def either(parts: list[str]) -> str:
        return parts[0] if len(parts) == 1 else "(" + "||".join(parts) + ")"

    asked = []
    for names, traces in sorted(seen.items(), key=lambda item: sorted(item[0])):
        named = [either([f"name={string(name)}" for name in sorted(names)])] if names else []
        each = []
        for trace_id, spans in sorted(traces.items()):
            trace = either([f"trace:id={string(form)}" for form in _id_forms(trace_id)])
            others = [f"span:id!={string(form)}" for span in sorted(spans) for form in _id_forms(span)]
            each.append("(" + "&&".join([trace, *others]) + ")" if others else trace)
        asked.append("&&".join([*named, either(each)]))
    return "{" + (asked[0] if len(asked) == 1 else "||".join(f"({part})" for part in asked)) + "}"
