"""A query plan: searches, what each is for, and how their trace-ID sets combine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, TypeAlias

from checker.traceql.syntax import EVERYTHING

if TYPE_CHECKING:
    from collections.abc import Callable


class Role(Enum):
    """Why a search is run, shown by ``betrace explain``."""

    SCOPE = "scope"  # a superset of the traces where a check may hold
    CLEAR = "clear"  # a subset of the traces where a check surely holds
    ALL = "all"  # every trace in the window


@dataclass(frozen=True)
class Search:
    """One TraceQL search; its result is the set of trace IDs it returns."""

    query: str
    role: Role
    source: str  # the check it stands for, in rule-language text
    exact: bool  # the query matches exactly the traces where the check holds
    single_span: bool = False  # one spanset filter, which can be combined with &&


EVERY_TRACE = Search(EVERYTHING, Role.ALL, "every trace", exact=True)


@dataclass(frozen=True)
class Nothing:
    """The empty set: nothing can be cleared (or scoped) by a query."""


@dataclass(frozen=True)
class Union:
    """Traces in any part."""

    parts: tuple[SetExpr, ...]


@dataclass(frozen=True)
class Intersection:
    """Traces in every part."""

    parts: tuple[SetExpr, ...]


@dataclass(frozen=True)
class Difference:
    """Traces in ``left`` but not in ``right``."""

    left: SetExpr
    right: SetExpr


SetExpr: TypeAlias = Search | Nothing | Union | Intersection | Difference
NOTHING = Nothing()


def union(parts: list[SetExpr]) -> SetExpr:
    """Union, simplified: every trace absorbs, nothing vanishes."""
    kept: list[SetExpr] = []
    for part in parts:
        if part == EVERY_TRACE:
            return EVERY_TRACE
        if part != NOTHING and part not in kept:
            kept.append(part)
    # X | (X - Y) = X and X | (X & Y) = X: drop parts that a plain member already covers.
    kept = [k for k in kept if not _covered(k, kept)]
    if not kept:
        return NOTHING
    return kept[0] if len(kept) == 1 else Union(tuple(kept))


def _covered(part: SetExpr, others: list[SetExpr]) -> bool:
    if isinstance(part, Difference):
        return part.left in others
    if isinstance(part, Intersection):
        return any(p in others for p in part.parts)
    return False


def intersection(parts: list[SetExpr]) -> SetExpr:
    """Intersection, simplified: nothing absorbs, every trace vanishes, nested ones are flattened."""
    kept: list[SetExpr] = []
    flat = (item for part in parts for item in (part.parts if isinstance(part, Intersection) else (part,)))
    for part in flat:
        if part == NOTHING:
            return NOTHING
        if part != EVERY_TRACE and part not in kept:
            kept.append(part)
    if not kept:
        return EVERY_TRACE
    if len(kept) == 1:
        return kept[0]
    # A & (ALL - X) = A - X, and A & ((ALL - X) | Y) = (A - X) | (A & Y): when another part bounds
    # the set, no search of every trace is needed (``not`` and ``every`` produce such parts).
    for index, part in enumerate(kept):
        others = kept[:index] + kept[index + 1:]
        if _all_but(part):
            return difference(intersection(others), part.right)  # type: ignore[union-attr]
        if isinstance(part, Union) and any(map(_all_but, part.parts)):
            return union([intersection([*others, item]) for item in part.parts])
    return Intersection(tuple(kept))


def _all_but(part: SetExpr) -> bool:
    """``ALL - X``: every trace but some."""
    return isinstance(part, Difference) and part.left == EVERY_TRACE


def difference(left: SetExpr, right: SetExpr) -> SetExpr:
    """Difference, simplified."""
    if left == NOTHING or right == EVERY_TRACE:
        return NOTHING
    if right == NOTHING:
        return left
    # A - (ALL - C) = A & C, and A - (B | (ALL - C)) = (A - B) & C: no search of every trace.
    if _all_but(right):
        return intersection([left, right.right])  # type: ignore[union-attr]
    if isinstance(right, Union) and any(map(_all_but, right.parts)):
        rest = [part for part in right.parts if not _all_but(part)]
        kept = [part.right for part in right.parts if isinstance(part, Difference) and _all_but(part)]
        return intersection([difference(left, union(rest)), *kept])
    return Difference(left, right)


def searches(expr: SetExpr) -> list[Search]:
    """Every distinct search in ``expr``, in first-use order."""
    found: list[Search] = []

    def visit(node: SetExpr) -> None:
        match node:
            case Search():
                if node not in found:
                    found.append(node)
            case Union() | Intersection():
                for part in node.parts:
                    visit(part)
            case Difference():
                visit(node.left)
                visit(node.right)
            case Nothing():
                pass

    visit(expr)
    return found


def evaluate(expr: SetExpr, result: Callable[[Search], frozenset[str]]) -> frozenset[str]:
    """The trace-ID set of ``expr`` given each search's ``result``."""
    match expr:
        case Search():
            return result(expr)
        case Nothing():
            return frozenset()
        case Union():
            return frozenset().union(*(evaluate(p, result) for p in expr.parts))
        case Intersection():
            sets = [evaluate(p, result) for p in expr.parts]
            return frozenset.intersection(*sets)
        case Difference():
            return evaluate(expr.left, result) - evaluate(expr.right, result)


def anchors(scope: SetExpr) -> frozenset[Search]:
    """The searches that decide which traces a window owns.

    A trace belongs to the window where its anchor span's fragment lies; every other search
    of the plan looks further around the window, so that a trace whose other spans arrived
    in fragments outside it is still judged whole. In an intersection the first part anchors.
    """
    match scope:
        case Search():
            return frozenset({scope})
        case Intersection():
            return anchors(scope.parts[0])
        case Union():
            return frozenset().union(*(anchors(p) for p in scope.parts))
        case Difference():
            return anchors(scope.left)
        case Nothing():
            return frozenset()


def signs(expr: SetExpr) -> dict[Search, frozenset[bool]]:
    """How each search is used in ``expr``: True where it adds traces, False where it removes them.

    A use on the right of an odd number of differences removes traces. A search used only to
    remove may run over less time than it should, and one used only to add over more: either
    way a trace can only be kept, never dropped, and candidates are confirmed on the whole trace.
    """
    uses: dict[Search, set[bool]] = {}

    def visit(node: SetExpr, adds: bool) -> None:
        match node:
            case Search():
                uses.setdefault(node, set()).add(adds)
            case Union() | Intersection():
                for part in node.parts:
                    visit(part, adds)
            case Difference():
                visit(node.left, adds)
                visit(node.right, not adds)
            case Nothing():
                pass

    visit(expr, adds=True)
    return {search: frozenset(used) for search, used in uses.items()}


def notation(expr: SetExpr, names: dict[Search, str]) -> str:
    """The set algebra over the search names, in Python set notation: ``(S1 - S2) | S3``."""
    match expr:
        case Search():
            return names[expr]
        case Nothing():
            return "{}"
        case Union():
            return "(" + " | ".join(notation(p, names) for p in expr.parts) + ")"
        case Intersection():
            return "(" + " & ".join(notation(p, names) for p in expr.parts) + ")"
        case Difference():
            return f"({notation(expr.left, names)} - {notation(expr.right, names)})"


@dataclass(frozen=True)
class QueryPlan:
    """How one rule runs against Tempo.

    ``candidates`` is a superset of the violating traces in a window; each candidate is
    fetched and the rule evaluated exactly on it. ``scope`` is a superset of the traces in
    scope. ``notes`` say what could not be pushed down exactly.
    """

    candidates: SetExpr
    scope: SetExpr
    notes: tuple[str, ...]

    @property
    def searches(self) -> list[Search]:
        """Distinct searches the candidates need."""
        return searches(self.candidates)

    @property
    def anchors(self) -> frozenset[Search]:
        """Searches run over the window itself; the others run over a wider one.

        A rule without ``when`` has every trace in scope, which is never searched on its
        own: its candidate searches anchor it, so that consecutive windows do not each
        look ``--trace-margin`` around themselves and judge the same traces again.
        """
        if self.scope == EVERY_TRACE:
            return anchors(self.candidates)
        return anchors(self.scope)

    @property
    def wide(self) -> frozenset[Search]:
        """Searches run over ``trace_margin`` more on each side of the window.

        A search that adds candidates must see every fragment of a trace the window owns, so
        it looks around the window. A search that only clears candidates (``signs``) looks at
        the window alone: a trace whose clearing spans lie outside it is merely fetched and
        judged, and it costs Tempo a window instead of twice the margin.
        """
        used = signs(self.candidates)
        return frozenset(s for s in self.searches if s not in self.anchors and True in used[s])

    @property
    def reusable(self) -> frozenset[Search]:
        """Wide searches that only add candidates: an answer over more time than asked will do."""
        used = signs(self.candidates)
        return frozenset(s for s in self.wide if used[s] == {True})

    def describe(self) -> list[str]:
        """The plan in words, one entry per line: each search, its role, the set algebra, the widenings.

        ``betrace explain`` prints these lines and the daemon's ledger stores them joined by
        newlines as the plan an evaluation ran, so both read the same text.
        """
        found = self.searches
        names = {s: f"S{i}" for i, s in enumerate(found, start=1)}
        lines = [f"{names[s]}  {s.role.value:<5}  {s.query}"
                 + ("" if s.exact else "   (approximate)") + f"   <- {s.source}" for s in found]
        lines.append(f"candidates = {notation(self.candidates, names)}"
                     if found else "candidates = none: TraceQL cannot find any")
        lines.append("every candidate is fetched by ID and the rule evaluated exactly on the whole trace")
        lines.extend(f"note: {note}" for note in self.notes)
        return lines
