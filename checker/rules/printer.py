"""Print the AST back as rule-language text: the canonical form ``explain`` shows.

The output parses back to an equal AST, which the property tests hold it to.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from checker.rules import model as m
from checker.rules.vocabulary import ATTRIBUTE_SCOPES, CALL_WORDS, KEYWORDS, STRUCTURE_WORDS

if TYPE_CHECKING:
    from collections.abc import Callable

# A bare name must not read back as a keyword or a call.
_RESERVED = frozenset(KEYWORDS + CALL_WORDS + STRUCTURE_WORDS)
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


def quote(text: str) -> str:
    """A double-quoted string with the only two escapes the language has."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def name(text: str) -> str:
    """A span or attribute name, bare when that reads back the same, quoted otherwise."""
    bare = (
        _BARE_NAME.fullmatch(text)
        and text not in _RESERVED
        and ".where" not in text
    )
    return text if bare else quote(text)


def scalar(value: m.Scalar) -> str:
    """A literal as it must be written to keep its type."""
    match value:
        case bool():
            return "true" if value else "false"
        case int() | float():
            return repr(value)
        case m.DurationLiteral():
            return value.text
        case str():
            return quote(value)


def invariant(inv: m.Invariant) -> str:
    """``when { .. } always { .. } never { .. }``, omitting absent blocks."""
    parts = [
        f"{kw} {{ {condition(c)} }}"
        for kw, c in (("when", inv.when), ("always", inv.always), ("never", inv.never))
        if c is not None
    ]
    return " ".join(parts)


def violation_summary(inv: m.Invariant) -> str:
    """The reading as a sentence: which traces violate the invariant."""
    scope = f"a trace with {condition(inv.when)}" if inv.when is not None else "any trace"
    parts = []
    if inv.always is not None:
        parts.append(f"lacking {condition(inv.always)}")
    if inv.never is not None:
        parts.append(f"having {condition(inv.never)}")
    return f"{scope} {' or '.join(parts)}"


def condition(node: m.Condition) -> str:
    """One trace-level formula; parentheses only where precedence needs them."""
    match node:
        case m.Or() | m.And() | m.Not():
            return _boolean(node, condition)
        case m.SpanCheck():
            return _selector(node.name, node.where)
        case m.RelationCheck():
            every = "every " if node.every else ""
            return (f"{every}{_selector(node.left.name, node.left.where)} {node.relation.value} "
                    f"{_selector(node.right.name, node.right.where)}")
        case m.CountCheck():
            right = node.right
            rhs = _count(right) if isinstance(right, m.SpanCount) else scalar(right)
            return f"{_count(node.left)} {node.op} {rhs}"


def predicate(node: m.Predicate) -> str:
    """One span predicate, as written inside ``.where( )``."""
    match node:
        case m.Or() | m.And() | m.Not():
            return _boolean(node, predicate)
        case m.Compare():
            return f"{_attr(node.attr)} {node.op} {scalar(node.value)}"
        case m.InList():
            op = "not in" if node.negated else "in"
            return f"{_attr(node.attr)} {op} [{', '.join(scalar(v) for v in node.values)}]"
        case m.Matches():
            return f"{_attr(node.attr)} matches {quote(node.pattern)}"
        case m.Contains():
            return f"{_attr(node.attr)} contains {quote(node.needle)}"
        case m.Truthy():
            return _attr(node.attr)


def _boolean(node: m.Or[Any] | m.And[Any] | m.Not[Any], render: Callable[[Any], str]) -> str:
    """and/or/not for conditions and predicates alike; and binds tighter than or."""
    match node:
        case m.Or():
            return " or ".join(render(i) for i in node.items)
        case m.And():
            return " and ".join(_grouped(render, i, m.Or) for i in node.items)
        case m.Not():
            return "not " + _grouped(render, node.item, m.Or, m.And)


def _grouped(render: Callable[[Any], str], node: object, *kinds: type) -> str:
    text = render(node)
    return f"({text})" if isinstance(node, kinds) else text


def _count(ref: m.SpanCount) -> str:
    return f"count({_selector(ref.name, ref.where)})"


def _selector(span: str | None, where: tuple[m.Predicate, ...]) -> str:
    """``X``, ``X.where(p)`` or ``span.where(p)`` (any span)."""
    head = "span" if span is None else name(span)
    return head + "".join(f".where({predicate(p)})" for p in where)


def _attr(attr: m.Attr) -> str:
    if attr.intrinsic:
        return attr.name
    if attr.scope is not None:
        return f"{attr.scope}.{attr.name}"
    if attr.name.partition(".")[0] in ATTRIBUTE_SCOPES:  # unscoped: it must not read back scoped
        return quote(attr.name)
    return name(attr.name)
