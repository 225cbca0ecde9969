"""Cut a TraceQL query too long for one request into several whose results' union is the same.

A rule such as ``x in [ ...1000 values... ]`` compiles to one spanset filter holding a
disjunction of thousands of comparisons: longer than a request line may be (proxies refuse
8 KiB, httpx 64 KiB) and than Tempo accepts (128 KiB). A disjunction can be searched in
parts: a span matches ``A && (B || C)`` exactly when it matches ``A && B`` or ``A && C``,
and a trace fragment matches ``{X} && {B || C}`` exactly when it matches ``{X} && {B}`` or
``{X} && {C}``. Only ``&&``, ``||``, parentheses and spanset braces are looked through.
Anything else at a level (a pipeline, a structural operator, a negation) keeps that level
whole, because cutting under it would not preserve the union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from checker.traceql.errors import QueryTooLongError
from checker.traceql.syntax import AND, OR

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_DEPTH = 100  # deeper queries are kept whole (the compiler's are a few levels deep)
_OPERATORS = {AND.strip(): AND, OR.strip(): OR}
_BRACKETS = {"(": ")", "{": "}"}


@dataclass(frozen=True)
class _Leaf:
    """Text kept as it is: a comparison, or a level that cannot be cut."""

    text: str


@dataclass(frozen=True, eq=False)
class _Group:
    """Items joined by one operator, ``&&`` or ``||``."""

    joiner: str
    items: tuple[_Node, ...]


@dataclass(frozen=True, eq=False)
class _Wrap:
    """``( ... )`` or ``{ ... }`` around an expression."""

    opening: str
    inner: _Node


_Node: TypeAlias = _Leaf | _Group | _Wrap


def split_query(query: str, fits: Callable[[str], bool]) -> list[str]:
    """Queries that each ``fit``, whose results' union equals ``query``'s; ``[query]`` when it fits.

    Each step cuts the longest disjunction into runs of its items, each as long as still fits,
    so every query but the last of a run is nearly full and the number of queries stays close to
    the length over the budget. Raises ``QueryTooLongError`` when a part cannot be cut further.
    """
    if fits(query):
        return [query]
    pending: list[_Node] = [_parse(query)]
    done: list[str] = []
    while pending:
        node = pending.pop()
        text = _render(node)
        if fits(text):
            done.append(text)
            continue
        target = _longest_disjunction(node)
        if target is None:
            raise QueryTooLongError(f"a part of the query cannot be cut further: {text[:200]}")
        pending.extend(reversed(_full_runs(node, target, fits)))
    return done


def _full_runs(node: _Node, target: _Group, fits: Callable[[str], bool]) -> list[_Node]:
    """``node`` once per run of ``target``'s items, each run as long as still fits.

    An item that does not fit even alone is a run of its own, cut further at the next step.
    """
    runs: list[_Node] = []
    items: list[_Node] = []
    for item in target.items:
        if items and not fits(_render(_replace(node, target, _Group(OR, (*items, item))))):
            runs.append(_replace(node, target, _Group(OR, tuple(items))))
            items = []
        items.append(item)
    runs.append(_replace(node, target, _Group(OR, tuple(items))))
    return runs


def _tokens(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end): brackets, ``&&``/``||``, and runs of anything else (strings kept whole)."""
    tokens: list[tuple[str, int, int]] = []
    run_start: int | None = None
    i = 0
    while i < len(text):
        ch, pair = text[i], text[i:i + 2]
        kind = ch if ch in "(){}" else pair if pair in _OPERATORS else None
        if kind is None:
            if run_start is None and not ch.isspace():
                run_start = i
            i = _skip_string(text, i) if ch in '"`' else i + 1
            continue
        if run_start is not None:
            tokens.append(("text", run_start, i))
            run_start = None
        tokens.append((kind, i, i + len(kind)))
        i += len(kind)
    if run_start is not None:
        tokens.append(("text", run_start, len(text)))
    return tokens


def _skip_string(text: str, start: int) -> int:
    """The index after the string literal opening at ``start`` (backslash escapes in ``"``)."""
    quote, i = text[start], start + 1
    while i < len(text) and text[i] != quote:
        i += 2 if quote == '"' and text[i] == "\\" else 1
    return i + 1


@dataclass
class _Level:
    """One bracket level while parsing: operands and the operators between them."""

    opening: str
    start: int
    operands: list[_Node]
    joiners: list[str]
    whole: bool = False  # something other than &&/|| between operands: keep the level as text

    def add(self, node: _Node) -> None:
        self.whole = self.whole or len(self.operands) != len(self.joiners)
        self.operands.append(node)

    def join(self, joiner: str) -> None:
        self.whole = self.whole or len(self.operands) != len(self.joiners) + 1
        self.joiners.append(joiner)

    def node(self, text: str) -> _Node:
        """The level as a tree, or as text when it is more than operands and one operator.

        Mixed ``&&`` and ``||`` without brackets are kept whole: the compiler never writes
        them, and the precedence between spansets is not something to guess.
        """
        if self.whole or len(self.operands) != len(self.joiners) + 1 or len(set(self.joiners)) > 1:
            return _Leaf(text.strip())
        if len(self.operands) == 1:
            return self.operands[0]
        return _Group(self.joiners[0], tuple(self.operands))


def _parse(query: str) -> _Node:
    """A tree of the query, iteratively (no recursion limit reachable); unbalanced → one leaf."""
    stack = [_Level("", 0, [], [])]
    for kind, start, end in _tokens(query):
        level = stack[-1]
        if kind == "text":
            level.add(_Leaf(query[start:end].strip()))
        elif kind in _OPERATORS:
            level.join(_OPERATORS[kind])
        elif kind in _BRACKETS:
            if len(stack) > MAX_DEPTH:
                return _Leaf(query)
            stack.append(_Level(kind, end, [], []))
        else:
            if len(stack) == 1 or _BRACKETS[level.opening] != kind:
                return _Leaf(query)
            stack.pop()
            inner = level.node(query[level.start:start]) if level.operands else _Leaf("")
            stack[-1].add(_Wrap(level.opening, inner))
    if len(stack) != 1 or not stack[0].operands:
        return _Leaf(query)
    return stack[0].node(query)


def _render(node: _Node) -> str:
    """The query without spaces around operators and braces.

    A part exists only because the whole was too long, so every byte saved is a request saved.
    """
    match node:
        case _Leaf():
            return node.text
        case _Group():
            return node.joiner.strip().join(_render(item) for item in node.items)
        case _Wrap(opening="("):
            return "(" + _render(node.inner) + ")"
        case _Wrap():
            inner = _render(node.inner)
            return "{" + inner + "}" if inner else "{ }"


def _longest_disjunction(node: _Node) -> _Group | None:
    """The longest ``||`` group of two or more items, through every ``&&``, ``||`` and bracket."""
    best: tuple[int, _Group] | None = None
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, _Wrap):
            stack.append(current.inner)
        elif isinstance(current, _Group):
            if current.joiner == OR and len(current.items) > 1:
                size = len(_render(current))
                if best is None or size > best[0]:
                    best = (size, current)
            stack.extend(current.items)
    return best[1] if best else None


def _replace(node: _Node, target: _Group, part: _Node) -> _Node:
    """``node`` with ``target`` (found by identity) replaced by ``part``."""
    match node:
        case _ if node is target:
            return part
        case _Group():
            return _Group(node.joiner, tuple(_replace(item, target, part) for item in node.items))
        case _Wrap():
            return _Wrap(node.opening, _replace(node.inner, target, part))
    return node
