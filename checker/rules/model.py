"""The rule AST: frozen dataclasses, one per construct, each knowing where it was written.

Positions (``pos``) are offsets into the condition text; the loader turns them into
file lines and columns, so that the AST stays independent of YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, Literal, TypeAlias, TypeVar


@dataclass(frozen=True)
class Pos:
    """1-based line and column inside the condition text."""

    line: int
    column: int


NO_POS = Pos(1, 1)


@dataclass(frozen=True)
class DurationLiteral:
    """A duration literal such as ``500ms``, kept in nanoseconds."""

    nanos: int
    text: str


Scalar: TypeAlias = str | bool | int | float | DurationLiteral
CompareOp: TypeAlias = Literal["==", "!=", ">", ">=", "<", "<="]

N = TypeVar("N")


@dataclass(frozen=True)
class And(Generic[N]):
    """All items hold."""

    items: tuple[N, ...]
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True)
class Or(Generic[N]):
    """At least one item holds."""

    items: tuple[N, ...]
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True)
class Not(Generic[N]):
    """The item does not hold."""

    item: N
    pos: Pos = field(default=NO_POS, compare=False)


# ------------------------------------------------------------------ predicates


@dataclass(frozen=True)
class Attr:
    """An attribute name, or an intrinsic such as ``span:duration`` when ``intrinsic``."""

    name: str
    intrinsic: bool = False
    quoted: bool = field(default=False, compare=False)  # written "in quotes": never a TraceQL habit
    scope: str | None = None  # "span", "resource" or "event": looked up there only (``ATTRIBUTE_SCOPES``)

    @property
    def of_event(self) -> bool:
        """Read from one event of the span (``event.x``, ``event:name``), not from the span itself."""
        return self.scope == "event" or (self.intrinsic and self.name.startswith("event:"))


class BareWord(str):
    """A string value written without quotes (``currency == USD``), told apart by lint."""

    __slots__ = ()


@dataclass(frozen=True)
class Compare:
    """``attr op value`` on one span."""

    attr: Attr
    op: CompareOp
    value: Scalar
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True)
class InList:
    """``attr in [...]``, or ``attr not in [...]`` when ``negated``."""

    attr: Attr
    values: tuple[Scalar, ...]
    negated: bool = False
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True)
class Matches:
    """``attr matches "re"``: a full-match RE2 regular expression, as in TraceQL."""

    attr: Attr
    pattern: str
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True)
class Contains:
    """``attr contains "s"``: a substring test on string attributes."""

    attr: Attr
    needle: str
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True)
class Truthy:
    """A bare attribute: holds when it is the boolean ``true``."""

    attr: Attr
    pos: Pos = field(default=NO_POS, compare=False)


Test: TypeAlias = Compare | InList | Matches | Contains
Predicate: TypeAlias = (
    "And[Predicate] | Or[Predicate] | Not[Predicate] | Compare | InList | Matches | Contains | Truthy"
)


# ------------------------------------------------------------- trace checks


@dataclass(frozen=True)
class SpanCheck:
    """The trace has a span named ``name`` on which every ``where`` predicate holds.

    ``name`` None is any span, whatever its name (``span.where(...)``).
    """

    name: str | None
    where: tuple[Predicate, ...] = ()
    pos: Pos = field(default=NO_POS, compare=False)
    shorthand: bool = field(default=False, compare=False)  # written ``X.a op v``


@dataclass(frozen=True)
class SpanCount:
    """``count(name)``: the number of spans with that name (on which every ``where`` holds).

    ``name`` None counts spans of any name (``count(span.where(...))``).
    """

    name: str | None
    pos: Pos = field(default=NO_POS, compare=False)
    where: tuple[Predicate, ...] = ()


@dataclass(frozen=True)
class CountCheck:
    """``count(X) op n`` or ``count(X) op count(Y)``."""

    left: SpanCount
    op: CompareOp
    right: SpanCount | Scalar
    pos: Pos = field(default=NO_POS, compare=False)


class Relation(Enum):
    """How a span of the left side stands to one of the right side, as written between them."""

    CHILD = "has child"  # its parent is the left span
    DESCENDANT = "has descendant"  # the left span is its parent, or its parent's parent, ...
    SIBLING = "has sibling"  # another span with the same parent (or, like the left one, a root)
    FOLLOWED_BY = "followed by"  # another span starting at or after the left one's end


@dataclass(frozen=True)
class RelationCheck:
    """``S1 has child S2``: some S1 span has an S2 span so related; with ``every``, each S1 span does.

    Read on the whole trace, whichever fragments its spans arrived in. ``every`` holds when the
    trace has no S1 span at all, as "for each" does.
    """

    left: SpanCheck
    relation: Relation
    right: SpanCheck
    every: bool = False
    pos: Pos = field(default=NO_POS, compare=False)


Check: TypeAlias = SpanCheck | CountCheck | RelationCheck
Condition: TypeAlias = (
    "And[Condition] | Or[Condition] | Not[Condition] | SpanCheck | CountCheck | RelationCheck"
)


class ClauseKind(Enum):
    """The three clauses of an invariant."""

    WHEN = "when"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class Clause:
    """One ``when``/``always``/``never`` block as written."""

    kind: ClauseKind
    cond: Condition
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True)
class ClausedRule:
    """A condition written with explicit clauses."""

    clauses: tuple[Clause, ...]


@dataclass(frozen=True)
class BareRule:
    """A legacy condition without clauses; ``normalise`` gives its reading."""

    cond: Condition


ParsedCondition: TypeAlias = ClausedRule | BareRule


@dataclass(frozen=True)
class Invariant:
    """The normalised reading of a condition.

    A trace violates it when ``when`` holds and (``always`` does not hold, or ``never``
    holds). ``when`` None means every trace is in scope.
    """

    when: Condition | None
    always: Condition | None
    never: Condition | None
