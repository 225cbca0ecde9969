"""TraceQL for the Tempo test double: Tempo's lexer, a lark LALR parser, checks and an evaluator.

The double must answer like the real Tempo (shared/tempo.md §4), quirks included, because
the checker's soundness depends on them: comparisons are typed (an int never equals a float,
a string never equals a number, a missing attribute fails every comparison, ``!=`` too),
regexes are fully anchored RE2, arrays match when any element does, structure comes from
nested-set numbers computed per trace *fragment*, and a pipeline stage that yields nothing
drops the spanset. Queries the double cannot evaluate are refused (400), never answered empty.

Known, deliberate difference: ``!(...)`` inside a filter is evaluated correctly here, while
the real Tempo pushes the inner condition down and can return nothing (tempo.md §4.3).

Span events (``event:name``, ``event.x``) are read as one event of the span: a filter naming
them keeps a span when ONE of its events satisfies it whole, every other term read on the span
(a span without events is judged with its event terms missing). Whether a real Tempo (vParquet4)
reads ``{ event:name = "a" && event.x = 1 }`` as one event or as any events is not pinned down
by its docs or by the recordings; the checker never clears traces with event terms, so its
searches are supersets under either reading.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeAlias

import re2
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedToken, VisitError
from lark.lexer import Lexer
from lark.parsers.lalr_analysis import Shift

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

# ====================================================================== errors


class TraceQLError(ValueError):
    """A query Tempo refuses: ``str()`` is the text after ``invalid TraceQL query: ``."""


class TraceQLParseError(TraceQLError):
    """A lexer or parser error, positioned the way Tempo reports it (1-based line and column)."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(f"parse error at line {line}, col {column}: {message}")
        self.line = line
        self.column = column


class TraceQLRuntimeError(RuntimeError):
    """Evaluation failed the way Tempo's engine fails at run time (the request answers 500)."""


# ====================================================================== values

# A typed value: (type, payload). Types mirror Tempo's static types; "array" holds a tuple of
# element values. None stands for "missing", which fails every comparison.
Val: TypeAlias = tuple[str, Any]

STRING: Final = "string"
INT: Final = "int"
FLOAT: Final = "float"
BOOL: Final = "bool"
DURATION: Final = "duration"
STATUS: Final = "status"
KIND: Final = "kind"
ARRAY: Final = "array"
ATTRIBUTE: Final = "attribute"  # validation only: the type is known at run time
NUMERIC: Final = frozenset({INT, FLOAT, DURATION})

STATUS_NAMES: Final = {0: "unset", 1: "ok", 2: "error"}
KIND_NAMES: Final = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

_ORDERING: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


@functools.lru_cache(maxsize=512)
def compile_regex(pattern: str) -> re2._Regexp[str]:
    """RE2 like Prometheus' FastRegexMatcher: ``^(?s:pattern)$`` (dot matches newline)."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(f"(?s:{pattern})", options)


def compare(op: str, lhs: Val | None, rhs: Val | None) -> bool:
    """``lhs op rhs`` with Tempo's storage-layer typing (tempo.md §4.3).

    Ints only meet ints (and durations, which are nanosecond ints), floats only floats,
    strings only strings; any other pairing is false, and so is a missing operand, for
    every operator including ``!=``. Arrays match when any element does, ``!=`` included.
    """
    if lhs is None or rhs is None:
        return False
    if lhs[0] == ARRAY:
        return any(compare(op, item, rhs) for item in lhs[1])
    if rhs[0] == ARRAY:
        return any(compare(op, lhs, item) for item in rhs[1])
    if op in {"=~", "!~"}:
        if lhs[0] != STRING or rhs[0] != STRING:
            return False
        return (compile_regex(rhs[1]).fullmatch(lhs[1]) is not None) == (op == "=~")
    if not (lhs[0] == rhs[0] or {lhs[0], rhs[0]} == {INT, DURATION}):
        return False
    if lhs[0] in {BOOL, STATUS, KIND} and op not in {"=", "!="}:
        return False
    return _ORDERING[op](lhs[1], rhs[1])


def truthy(value: Val | None) -> bool:
    """A filter keeps a span only when its expression is the boolean ``true``."""
    return value is not None and value[0] == BOOL and value[1] is True


def go_duration(nanos: int) -> str:
    """Go's ``time.Duration.String()``: ``1.5s``, ``168h0m0s``, ``250ms``."""
    if nanos == 0:
        return "0s"
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return sign + _trim_fraction(nanos, size) + unit
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = _trim_fraction(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _trim_fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


# ================================================================== data model


@dataclass(frozen=True)
class Event:
    """One span event: its name and its queryable attributes."""

    name: str
    attributes: dict[str, Val] = field(default_factory=dict)


@dataclass(eq=False)
class Span:
    """One span as the evaluator sees it; ``origin`` is opaque provenance for the server."""

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_id: str  # "" for a root span, as in Tempo (an all-zero parent is NOT a root)
    name: str
    kind: int
    status_code: int
    status_message: str
    start: int
    end: int
    attributes: dict[str, Val]
    resource_attributes: dict[str, Val]
    scope_name: str | None = None
    scope_version: str | None = None
    origin: Any = None
    events: tuple[Event, ...] = ()

    @property
    def service(self) -> str:
        """``resource.service.name`` as a string ("" when absent)."""
        value = self.resource_attributes.get("service.name")
        return value[1] if value is not None and value[0] == STRING else ""

    @property
    def is_root(self) -> bool:
        """Tempo's ``IsRoot``: no parent span ID at all."""
        return not self.parent_id


@dataclass(eq=False)
class Node:
    """A span inside one fragment, with the nested-set numbers Tempo stores for it.

    Unnumbered spans (orphans, or every span of a fragment without a root) keep 0 and take
    part in no structural relation (tempo.md §4.4).
    """

    span: Span
    fragment: Fragment
    left: int = 0
    right: int = 0
    parent: int = 0
    child_count: int = 0


class Fragment:
    """One trace fragment (a row in a Tempo block): the unit every query is evaluated on."""

    def __init__(self, trace_id: str, spans: Sequence[Span]) -> None:
        if not spans:
            raise ValueError("a fragment needs at least one span")
        self.trace_id = trace_id
        self.spans = tuple(spans)
        self.nodes = tuple(Node(span, self) for span in self.spans)
        _number_nested_sets(self.nodes)
        self.start = min(span.start for span in self.spans)
        self.end = max(span.end for span in self.spans)
        root = next((span for span in self.spans if span.is_root), None)
        self.root_name = root.name if root is not None else None
        self.root_service = root.service if root is not None else None
        self.service_stats = _service_stats(self.spans)

    @property
    def duration(self) -> int:
        """Trace duration of this fragment in nanoseconds (Tempo's per-row trace columns)."""
        return self.end - self.start


def _service_stats(spans: Sequence[Span]) -> dict[str, tuple[int, int]]:
    stats: dict[str, tuple[int, int]] = {}
    for span in spans:
        count, errors = stats.get(span.service, (0, 0))
        stats[span.service] = (count + 1, errors + (span.status_code == 2))
    return dict(sorted(stats.items()))


def _number_nested_sets(nodes: Sequence[Node]) -> None:
    """Tempo's ``assignNestedSetModelBoundsAndServiceStats`` (vparquet5/nested_set_model.go)."""
    roots = [node for node in nodes if node.span.is_root]
    by_id: dict[str, list[Node]] = {}
    for node in nodes:
        by_id.setdefault(node.span.span_id, []).append(node)
    if not roots or any(len(group) > 2 for group in by_id.values()):
        return
    parent_of: dict[Node, Node] = {}
    children: dict[Node, list[Node]] = {node: [] for node in nodes}
    for node in nodes:
        parent = _find_parent(by_id, node)
        if parent is not None:
            parent_of[node] = parent
            children[parent].append(node)
    for node in nodes:
        node.child_count = len(children[node])
    bound = 1
    for root in roots:
        root.left, root.parent = bound, -1
        bound += 1
        next_child: dict[Node, int] = {}
        current: Node | None = root
        while current is not None:
            index = next_child.get(current, 0)
            if index < len(children[current]):
                child = children[current][index]
                next_child[current] = index + 1
                child.left, child.parent = bound, current.left
                bound += 1
                current = child
            else:
                current.right = bound
                bound += 1
                current = parent_of.get(current) if current is not root else None


def _find_parent(by_id: dict[str, list[Node]], node: Node) -> Node | None:
    """The parent node; zipkin-style shared IDs are told apart by client/server kind."""
    if node.span.is_root:
        return None
    candidates = by_id.get(node.span.parent_id, [])
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) == 2:
        want = 3 if node.span.kind == 2 else 2
        return next((c for c in candidates if c.span.kind == want), None)
    return None


# ========================================================================= AST

Pos: TypeAlias = tuple[int, int]


@dataclass(frozen=True)
class Static:
    """A literal; ``type`` is one of the value types."""

    type: str
    value: Any
    pos: Pos = (0, 0)

    @property
    def val(self) -> Val:
        """The literal as a typed value."""
        return (self.type, self.value)


@dataclass(frozen=True)
class Intrinsic:
    """``name``, ``span:status``, ``trace:rootService`` ...; ``name`` is canonical, ``text`` as written."""

    name: str
    text: str
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Attribute:
    """``span.x``, ``resource.x`` or unscoped ``.x`` (scope "")."""

    scope: str
    name: str
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Binary:
    """``lhs op rhs``; ``op`` is Tempo's operator text (``&&``, ``=~``, ``+`` ...)."""

    op: str
    lhs: FieldExpr
    rhs: FieldExpr
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Unary:
    """``!expr`` or ``-expr`` (a negative literal is folded into a Static instead)."""

    op: str
    operand: FieldExpr
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Exists:
    """``expr != nil`` (exists) or ``expr = nil`` (not exists)."""

    operand: FieldExpr
    exists: bool
    pos: Pos = (0, 0)


FieldExpr: TypeAlias = Static | Intrinsic | Attribute | Binary | Unary | Exists


@dataclass(frozen=True)
class SpansetFilter:
    """``{ expr }``; ``{ }`` keeps every span."""

    expr: FieldExpr | None
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class SpansetOp:
    """``lhs op rhs`` between spansets: ``&&``, ``||`` or a structural operator."""

    op: str
    lhs: SpansetExpr
    rhs: SpansetExpr
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Wrapped:
    """``( pipeline )`` used as a spanset expression."""

    pipeline: Pipeline
    pos: Pos = (0, 0)


SpansetExpr: TypeAlias = SpansetFilter | SpansetOp | Wrapped


@dataclass(frozen=True)
class Aggregate:
    """``count()``, ``avg(expr)``, ``min``, ``max``, ``sum``."""

    fn: str
    expr: FieldExpr | None
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class ScalarFilter:
    """``count() > 3``: keeps the spansets for which the comparison holds."""

    op: str
    lhs: Aggregate | Static
    rhs: Aggregate | Static
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class GroupBy:
    """``by(expr)``: one spanset per distinct value."""

    expr: FieldExpr
    text: str
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Coalesce:
    """``coalesce()``: merges the spansets of a trace into one."""

    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Select:
    """``select(a, b)``: adds attributes to the output, changes no match."""

    fields: tuple[Intrinsic | Attribute, ...]
    pos: Pos = (0, 0)


Stage: TypeAlias = SpansetExpr | ScalarFilter | GroupBy | Coalesce | Select


@dataclass(frozen=True)
class Pipeline:
    """Stages joined by ``|``; ``pipes`` are the positions of the ``|`` tokens."""

    stages: tuple[Stage, ...]
    pipes: tuple[Pos, ...] = ()


@dataclass(frozen=True)
class ScalarPipelineFilter:
    """``({ ... } | count()) > 3``."""

    pipeline: Pipeline
    aggregate: Aggregate
    op: str
    rhs: Static | None  # None: a second wrapped pipeline, which Tempo does not support either
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Query:
    """A parsed and validated query, ready to evaluate on fragments."""

    text: str
    root: Pipeline | ScalarPipelineFilter
    hints: tuple[tuple[str, Val], ...] = ()
    output: tuple[Intrinsic | Attribute, ...] = field(default=())

    @property
    def most_recent(self) -> bool:
        """``with (most_recent=true)``: keep the newest traces when the limit cuts."""
        return (BOOL, True) in (value for key, value in self.hints if key == "most_recent")


# ======================================================================= lexer

# Tempo's lexer.go `tokens`: text → token type.
TOKENS: Final[dict[str, str]] = {
    ",": "COMMA", ".": "DOT", "{": "OPEN_BRACE", "}": "CLOSE_BRACE", "(": "OPEN_PARENS", ")": "CLOSE_PARENS",
    "=": "EQ", "!=": "NEQ", "=~": "RE", "!~": "NRE", ">": "GT", ">=": "GTE", "<": "LT", "<=": "LTE",
    "+": "ADD", "-": "SUB", "/": "DIV", "%": "MOD", "*": "MUL", "^": "POW",
    "true": "TRUE", "false": "FALSE", "nil": "NIL", "ok": "STATUS_OK", "error": "STATUS_ERROR",
    "unset": "STATUS_UNSET", "unspecified": "KIND_UNSPECIFIED", "internal": "KIND_INTERNAL",
    "server": "KIND_SERVER", "client": "KIND_CLIENT", "producer": "KIND_PRODUCER",
    "consumer": "KIND_CONSUMER",
    "&&": "AND", "||": "OR", "!": "NOT", "|": "PIPE", ">>": "DESC", "<<": "ANCE", "~": "SIBL",
    "!>": "NOT_CHILD", "!<": "NOT_PARENT", "!>>": "NOT_DESC", "!<<": "NOT_ANCE",
    "&~": "UNION_SIBL", "&>": "UNION_CHILD", "&<": "UNION_PARENT", "&>>": "UNION_DESC", "&<<": "UNION_ANCE",
    "duration": "IDURATION", "childCount": "CHILDCOUNT", "name": "NAME", "status": "STATUS",
    "statusMessage": "STATUS_MESSAGE", "kind": "KIND", "rootName": "ROOTNAME",
    "rootServiceName": "ROOTSERVICENAME", "rootService": "ROOTSERVICE", "traceDuration": "TRACEDURATION",
    "nestedSetLeft": "NESTEDSETLEFT", "nestedSetRight": "NESTEDSETRIGHT",
    "nestedSetParent": "NESTEDSETPARENT",
    "id": "ID", "traceID": "TRACE_ID", "spanID": "SPAN_ID", "parentID": "PARENT_ID",
    "timeSinceStart": "TIMESINCESTART", "version": "VERSION", "parent": "PARENT",
    "parent.": "PARENT_DOT", "resource.": "RESOURCE_DOT", "span.": "SPAN_DOT", "trace:": "TRACE_COLON",
    "span:": "SPAN_COLON", "event:": "EVENT_COLON", "link:": "LINK_COLON",
    "instrumentation:": "INSTRUMENTATION_COLON", "event.": "EVENT_DOT", "link.": "LINK_DOT",
    "instrumentation.": "INSTRUMENTATION_DOT", "count": "COUNT", "avg": "AVG", "max": "MAX", "min": "MIN",
    "sum": "SUM", "by": "BY", "coalesce": "COALESCE", "select": "SELECT", "rate": "RATE",
    "count_over_time": "COUNT_OVER_TIME", "min_over_time": "MIN_OVER_TIME", "max_over_time": "MAX_OVER_TIME",
    "avg_over_time": "AVG_OVER_TIME", "sum_over_time": "SUM_OVER_TIME",
    "quantile_over_time": "QUANTILE_OVER_TIME", "histogram_over_time": "HISTOGRAM_OVER_TIME",
    "compare": "COMPARE", "topk": "TOPK", "bottomk": "BOTTOMK", "with": "WITH",
}
# goyacc names tokens in error messages by their text (parse.go init), others by their name.
_DISPLAY: Final = {kind: text for text, kind in TOKENS.items()}
# The order of Tempo's %token declarations: goyacc lists expected tokens in this order.
TOKEN_ORDER: Final = (
    "IDENTIFIER", "STRING", "INTEGER", "FLOAT", "DURATION", "DOT", "OPEN_BRACE", "CLOSE_BRACE",
    "OPEN_PARENS", "CLOSE_PARENS", "COMMA", "NIL", "TRUE", "FALSE", "STATUS_ERROR", "STATUS_OK",
    "STATUS_UNSET", "KIND_UNSPECIFIED", "KIND_INTERNAL", "KIND_SERVER", "KIND_CLIENT", "KIND_PRODUCER",
    "KIND_CONSUMER", "IDURATION", "CHILDCOUNT", "NAME", "STATUS", "STATUS_MESSAGE", "PARENT", "KIND",
    "ROOTNAME", "ROOTSERVICENAME", "ROOTSERVICE", "TRACEDURATION", "NESTEDSETLEFT", "NESTEDSETRIGHT",
    "NESTEDSETPARENT", "ID", "TRACE_ID", "SPAN_ID", "PARENT_ID", "TIMESINCESTART", "VERSION", "PARENT_DOT",
    "RESOURCE_DOT", "SPAN_DOT", "TRACE_COLON", "SPAN_COLON", "EVENT_COLON", "EVENT_DOT", "LINK_COLON",
    "LINK_DOT", "INSTRUMENTATION_COLON", "INSTRUMENTATION_DOT", "COUNT", "AVG", "MAX", "MIN", "SUM", "BY",
    "COALESCE", "SELECT", "END_ATTRIBUTE", "RATE", "COUNT_OVER_TIME", "MIN_OVER_TIME", "MAX_OVER_TIME",
    "AVG_OVER_TIME", "SUM_OVER_TIME", "QUANTILE_OVER_TIME", "HISTOGRAM_OVER_TIME", "COMPARE", "TOPK",
    "BOTTOMK", "WITH", "PIPE", "AND", "OR", "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "NRE", "RE", "DESC",
    "ANCE", "SIBL", "NOT_CHILD", "NOT_PARENT", "NOT_DESC", "NOT_ANCE", "UNION_CHILD", "UNION_PARENT",
    "UNION_DESC", "UNION_ANCE", "UNION_SIBL", "ADD", "SUB", "NOT", "MUL", "DIV", "MOD", "POW",
)
_ATTRIBUTE_STARTERS: Final = frozenset(
    {"DOT", "RESOURCE_DOT", "SPAN_DOT", "PARENT_DOT", "EVENT_DOT", "LINK_DOT", "INSTRUMENTATION_DOT"})
_NOT_ATTRIBUTE_RUNES: Final = frozenset("{}()=~!<>&|^,")
_GO_WHITESPACE: Final = frozenset("\t\n\r ")
_DURATION_RUNES: Final = frozenset("nsumhµdwy")
_INT64_MAX: Final = 2**63 - 1
_NS: Final = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
              "m": 60_000_000_000, "h": 3_600_000_000_000}
_PROM_UNITS: Final = {"y": (1, 365 * 86_400_000_000_000), "w": (2, 7 * 86_400_000_000_000),
                      "d": (3, 86_400_000_000_000), "h": (4, 3_600_000_000_000), "m": (5, 60_000_000_000),
                      "s": (6, 1_000_000_000), "ms": (7, 1_000_000)}
_SIMPLE_ESCAPES: Final = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                          "\\": "\\", '"': '"', "'": "'"}


def display(token_type: str) -> str:
    """A token type as goyacc names it in ``unexpected X`` messages."""
    return "$end" if token_type == "$END" else _DISPLAY.get(token_type, token_type)


def _is_attribute_rune(ch: str) -> bool:
    return bool(ch) and not ch.isspace() and ch not in _NOT_ATTRIBUTE_RUNES


def _is_ident_rune(ch: str, index: int) -> bool:
    if not ch:
        return False
    category = unicodedata.category(ch)
    return ch == "_" or category.startswith("L") or (category == "Nd" and index > 0)


class _TempoLexer:
    """Tempo's lexer (pkg/traceql/lexer.go) on top of a subset of Go's text/scanner.

    Error positions are Go's: the start of the most recently *scanned* token. Attribute
    names are read without scanning, so their errors point at the ``span.`` before them.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line, self.col = 1, 1  # position of the next rune
        self.tok_line, self.tok_col = 1, 1  # Go's l.Line / l.Column
        self.in_attribute = False

    # ------------------------------------------------------------- runes

    def peek(self, ahead: int = 0) -> str:
        """The rune ``ahead`` positions on, "" at the end."""
        index = self.pos + ahead
        return self.text[index] if index < len(self.text) else ""

    def next(self) -> str:
        """Consume one rune, tracking line and column like Go's scanner."""
        ch = self.peek()
        if ch:
            self.pos += 1
            self.line, self.col = (self.line + 1, 1) if ch == "\n" else (self.line, self.col + 1)
        return ch

    def error(self, message: str) -> NoReturn:
        """Tempo reports lexer errors at the last scanned token."""
        raise TraceQLParseError(self.tok_line, self.tok_col, message)

    def token(self, kind: str, value: Any) -> Token:
        """A lark token at Go's current token position."""
        return Token(kind, value, line=self.tok_line, column=self.tok_col)

    # ------------------------------------------------------------ tokens

    def tokens(self) -> Iterator[Token]:
        """Tokens up to and including ``$END``; lexer errors raise when they are reached."""
        while True:
            tok = self.lex()
            yield tok
            if tok.type == "$END":
                return

    def lex(self) -> Token:
        """One token, exactly as Tempo's ``lexer.Lex``."""
        if self.in_attribute:
            if not _is_attribute_rune(self.peek()):
                self.in_attribute = False
                return self.token("END_ATTRIBUTE", "")
            return self.token("IDENTIFIER", self.attribute_name())
        kind, text = self.scan()
        if kind == "EOF":
            return self.token("$END", "")
        if kind in {"String", "RawString"}:
            return self.token("STRING", self.unquote(text))
        if kind in {"Int", "Float"}:
            return self.number(kind, text)
        return self.operator_or_word(text)

    def operator_or_word(self, text: str) -> Token:
        """Longest combination token (``!>>``, ``span.``), a keyword, or an IDENTIFIER."""
        combined: str | None = None
        while self.peek() and (text + self.peek()) in TOKENS:
            text += self.next()
            combined = TOKENS[text]
        kind = combined or TOKENS.get(text, "IDENTIFIER")
        self.in_attribute = kind in _ATTRIBUTE_STARTERS
        return self.token(kind, text)

    def number(self, kind: str, text: str) -> Token:
        """DURATION when a unit follows without a space, else INTEGER or FLOAT."""
        suffix = ""
        ahead = 0
        while (ch := self.peek(ahead)) and not ch.isspace() and (
                unicodedata.category(ch) in {"Nd", "Nl", "No"} or ch in _DURATION_RUNES or ch == "."):
            suffix += ch
            ahead += 1
        if suffix and (nanos := parse_duration(text + suffix)) is not None:
            for _ in range(ahead):
                self.next()
            return self.token("DURATION", nanos)
        if kind == "Int":
            if not text.isdigit() or not text.isascii():
                self.error(f'strconv.Atoi: parsing "{text}": invalid syntax')
            if int(text) > _INT64_MAX:
                self.error(f'strconv.Atoi: parsing "{text}": value out of range')
            return self.token("INTEGER", int(text))
        value = float(text) if "_" not in text and not text.lower().startswith("0x") else None
        if value is None:
            self.error(f'strconv.ParseFloat: parsing "{text}": invalid syntax')
        if math.isinf(value):
            self.error(f'strconv.ParseFloat: parsing "{text}": value out of range')
        return self.token("FLOAT", value)

    # ------------------------------------------------------ Go's scanner

    def scan(self) -> tuple[str, str]:
        """Go's ``Scanner.Scan`` in GoTokens mode: (token class, token text); comments skipped."""
        while True:
            while self.peek() in _GO_WHITESPACE and self.peek():
                self.next()
            self.tok_line, self.tok_col = self.line, self.col
            if not (ch := self.peek()):
                return "EOF", ""
            if ch == "/" and self.peek(1) in {"/", "*"}:
                self.skip_comment()
                continue
            start = self.pos
            return self.scan_token(ch), self.text[start:self.pos]

    def scan_token(self, ch: str) -> str:
        """Consume one token starting with ``ch``; returns Go's token class."""
        if _is_ident_rune(ch, 0):
            index = 0
            while _is_ident_rune(self.peek(), index):
                self.next()
                index += 1
            return "Ident"
        if _is_decimal(ch) or (ch == "." and _is_decimal(self.peek(1))):
            return self.scan_number()
        if ch in {'"', "'"}:
            self.scan_quoted(ch)
            return "String" if ch == '"' else "Char"
        self.next()
        if ch == "`":
            while (c := self.next()) != "`":
                if not c:
                    self.error("literal not terminated")
            return "RawString"
        return "Char1"

    def skip_comment(self) -> None:
        """``// ...`` to the end of the line, ``/* ... */`` across lines."""
        self.next()
        if self.next() == "/":
            while self.peek() and self.peek() != "\n":
                self.next()
            return
        while True:
            ch = self.next()
            if not ch:
                self.error("comment not terminated")
            if ch == "*" and self.peek() == "/":
                self.next()
                return

    def scan_number(self) -> str:
        """Go's scanNumber for decimal literals (prefixed literals are read and later refused)."""
        kind = "Int"
        if self.peek() == "0" and self.peek(1).lower() in {"x", "o", "b"}:
            self.next()
            self.next()
            while self.peek().isalnum() or self.peek() == "_":
                self.next()
            return kind
        while self.peek().isascii() and (self.peek().isdigit() or self.peek() == "_"):
            self.next()
        if self.peek() == ".":
            kind = "Float"
            self.next()
            while self.peek().isascii() and (self.peek().isdigit() or self.peek() == "_"):
                self.next()
        if self.peek().lower() == "e":
            kind = "Float"
            self.next()
            if self.peek() in {"+", "-"}:
                self.next()
            if not (self.peek().isascii() and self.peek().isdigit()):
                self.error("exponent has no digits")
            while self.peek().isascii() and self.peek().isdigit():
                self.next()
        return kind

    def scan_quoted(self, quote: str) -> None:
        """Go's scanString / scanChar: validates escapes, stops at the closing quote."""
        self.next()
        count = 0
        while (ch := self.peek()) != quote:
            if ch in {"", "\n"}:
                self.error("literal not terminated")
            self.next()
            if ch == "\\":
                self.scan_escape(quote)
            count += 1
        self.next()
        if quote == "'" and count != 1:
            self.error("invalid char literal")

    def scan_escape(self, quote: str) -> None:
        """Go's scanEscape: the rune after a backslash must start a valid escape."""
        ch = self.next()
        digits = {"x": (16, 2), "u": (16, 4), "U": (16, 8)}
        if (ch and ch in "abfnrtv\\") or ch == quote:
            return
        if ch and ch in "01234567":
            base, count = 8, 2
        elif ch in digits and ch:
            base, count = digits[ch]
        else:
            self.error("invalid char escape")
        for _ in range(count):
            if not _is_digit_in(self.peek(), base):
                self.error("invalid char escape")
            self.next()

    # ----------------------------------------------------- Tempo helpers

    def unquote(self, text: str) -> str:
        """Go's ``strconv.Unquote`` of a scanned string literal."""
        if text.startswith("`"):
            return text[1:-1].replace("\r", "")
        try:
            return _go_unquote(text[1:-1])
        except ValueError:
            self.error("invalid syntax")

    def attribute_name(self) -> str:
        """Tempo's ``parseAttribute``: unquoted runes and ``"quoted"`` parts, concatenated."""
        parts: list[str] = []
        while True:
            ch = self.peek()
            if ch == '"':
                parts.append(self.quoted_attribute_part())
            elif _is_attribute_rune(ch):
                parts.append(self.next())
            else:
                return "".join(parts)

    def quoted_attribute_part(self) -> str:
        """Inside quoted attribute names only ``\\"`` and ``\\\\`` are escapes."""
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                self.error('unexpected EOF, expecting "')
            self.next()
            if ch == '"':
                return "".join(out)
            if ch == "\\":
                escaped = self.peek()
                if not escaped or escaped not in '\\"':
                    self.error("invalid escape sequence")
                out.append(self.next())
            else:
                out.append(ch)


def _is_decimal(ch: str) -> bool:
    return bool(ch) and ch in "0123456789"


def _is_digit_in(ch: str, base: int) -> bool:
    return bool(ch) and ch.isascii() and ch.isalnum() and int(ch, 36) < base


def _go_unquote(body: str) -> str:
    """The body of a Go double-quoted literal; \\x and octal escapes are raw bytes, as in Go."""
    out = bytearray()
    index = 0
    while index < len(body):
        ch = body[index]
        index += 1
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            continue
        esc = body[index]
        index += 1
        if esc in _SIMPLE_ESCAPES and esc != "'":
            out += _SIMPLE_ESCAPES[esc].encode()
        elif esc in "01234567":
            value = int(body[index - 1:index + 2], 8)
            index += 2
            if value > 255:
                raise ValueError(body)
            out.append(value)
        elif esc == "x":
            out.append(int(body[index:index + 2], 16))
            index += 2
        else:
            size = 4 if esc == "u" else 8
            value = int(body[index:index + size], 16)
            index += size
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise ValueError(body)
            out += chr(value).encode()
    return out.decode("utf-8", "surrogateescape")


def parse_duration(text: str) -> int | None:
    """Nanoseconds of a TraceQL duration: Prometheus syntax first, then Go's, else None."""
    prom = _prometheus_duration(text)
    return prom if prom is not None else _go_duration_value(text)


def _prometheus_duration(text: str) -> int | None:
    if text == "0":
        return 0
    if re.fullmatch(r"([0-9]+[^0-9]+)+", text) is None:
        return None
    total, last = 0, 0
    for number, unit in re.findall(r"([0-9]+)([^0-9]+)", text):
        if unit not in _PROM_UNITS or _PROM_UNITS[unit][0] <= last:
            return None
        last = _PROM_UNITS[unit][0]
        total += int(number) * _PROM_UNITS[unit][1]
    return total if last and total <= _INT64_MAX else None


def _go_duration_value(text: str) -> int | None:
    parts = re.fullmatch(r"((?:[0-9]*(?:\.[0-9]*)?[^0-9.]+)+)", text)
    if parts is None:
        return None
    total = Fraction(0)
    for number, unit in re.findall(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)", text):
        if number in {"", "."} or unit not in _NS:
            return None
        total += Fraction(number) * _NS[unit]
    nanos = math.floor(total)
    return nanos if nanos <= _INT64_MAX else None


# ====================================================================== parser


class _NoLexer(Lexer):
    """Lark wants a lexer class; tokens are fed one by one from ``_TempoLexer`` instead."""

    def __init__(self, conf: Any) -> None:
        del conf

    def lex(self, lexer_state: Any, parser_state: Any) -> Iterator[Token]:
        raise NotImplementedError


@functools.cache
def _lark() -> Lark:
    grammar = Path(__file__).with_name("traceql.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer=_NoLexer, maybe_placeholders=False)


def parse_tree(text: str) -> Any:
    """The lark tree of ``text``; errors are positioned and worded like Tempo's parser.

    Tokens are fed as they are lexed, so a syntax error before a lexer error wins, as in
    goyacc, which pulls one token at a time.
    """
    parser = _lark().parse_interactive("")
    for tok in _TempoLexer(text).tokens():
        try:
            result = parser.feed_token(tok)
        except UnexpectedToken as err:
            raise _syntax_error(err, tok) from None
        if tok.type == "$END":
            return result
    raise AssertionError("unreachable: the lexer always ends with $END")  # pragma: no cover


def _syntax_error(err: UnexpectedToken, tok: Token) -> TraceQLParseError:
    """goyacc's message: ``unexpected X``, plus the tokens it could shift when at most four.

    goyacc applies default reductions before it notices the error. Its grammar is flat
    with precedence declarations, so the state it stops in can shift every operator that
    the precedence levels of this grammar spread over the states of the reduction chain:
    the union over that chain stands in for it.
    """
    states = err.state.parse_conf.parse_table.states
    stack = list(err.state.state_stack)
    shiftable: set[str] = set()
    for _ in range(100):
        actions = states[stack[-1]]
        shiftable |= {name for name, (action, _) in actions.items() if action is Shift}
        reductions = [arg for action, arg in actions.values() if action is not Shift]
        if not reductions:
            break
        rule = Counter(reductions).most_common(1)[0][0]
        if rule.expansion:
            del stack[-len(rule.expansion):]
        goto = states[stack[-1]].get(rule.origin.name)
        if goto is None:
            break
        stack.append(goto[1])
    expected = [name for name in TOKEN_ORDER if name in shiftable]
    message = f"syntax error: unexpected {display(tok.type)}"
    if 0 < len(expected) <= 4:
        message += ", expecting " + " or ".join(display(name) for name in expected)
    return TraceQLParseError(tok.line or 0, tok.column or 0, message)


def _pos(tok: Token) -> Pos:
    return (tok.line or 0, tok.column or 0)


_INTRINSICS: Final = {
    "IDURATION": "duration", "CHILDCOUNT": "childCount", "NAME": "name", "STATUS": "status",
    "STATUS_MESSAGE": "statusMessage", "KIND": "kind", "PARENT": "parent", "ROOTNAME": "rootName",
    "ROOTSERVICENAME": "rootServiceName", "TRACEDURATION": "traceDuration",
    "NESTEDSETLEFT": "nestedSetLeft", "NESTEDSETRIGHT": "nestedSetRight",
    "NESTEDSETPARENT": "nestedSetParent",
}
_SCOPED_INTRINSICS: Final = {
    ("TRACE_COLON", "IDURATION"): "traceDuration", ("TRACE_COLON", "ROOTNAME"): "rootName",
    ("TRACE_COLON", "ROOTSERVICE"): "rootServiceName", ("TRACE_COLON", "ID"): "trace:id",
    ("SPAN_COLON", "IDURATION"): "duration", ("SPAN_COLON", "NAME"): "name", ("SPAN_COLON", "KIND"): "kind",
    ("SPAN_COLON", "STATUS"): "status", ("SPAN_COLON", "STATUS_MESSAGE"): "statusMessage",
    ("SPAN_COLON", "ID"): "span:id", ("SPAN_COLON", "PARENT_ID"): "span:parentID",
    ("SPAN_COLON", "CHILDCOUNT"): "childCount",
    ("EVENT_COLON", "NAME"): "event:name", ("EVENT_COLON", "TIMESINCESTART"): "event:timeSinceStart",
    ("LINK_COLON", "TRACE_ID"): "link:traceID", ("LINK_COLON", "SPAN_ID"): "link:spanID",
    ("INSTRUMENTATION_COLON", "NAME"): "instrumentation:name",
    ("INSTRUMENTATION_COLON", "VERSION"): "instrumentation:version",
}
_SCOPES: Final = {"DOT": "", "SPAN_DOT": "span", "RESOURCE_DOT": "resource", "PARENT_DOT": "parent",
                  "EVENT_DOT": "event", "LINK_DOT": "link", "INSTRUMENTATION_DOT": "instrumentation"}
_STATICS: Final = {
    "TRUE": (BOOL, True), "FALSE": (BOOL, False), "STATUS_OK": (STATUS, 1), "STATUS_ERROR": (STATUS, 2),
    "STATUS_UNSET": (STATUS, 0), "KIND_UNSPECIFIED": (KIND, 0), "KIND_INTERNAL": (KIND, 1),
    "KIND_SERVER": (KIND, 2), "KIND_CLIENT": (KIND, 3), "KIND_PRODUCER": (KIND, 4),
    "KIND_CONSUMER": (KIND, 5),
}
_LITERALS: Final = {"STRING": STRING, "INTEGER": INT, "FLOAT": FLOAT, "DURATION": DURATION}


class _ToAst(Transformer[Token, Any]):
    """Lark tree → AST. Method names are grammar rule names; children keep their tokens."""

    def start(self, children: list[Any]) -> tuple[Any, tuple[tuple[str, Val], ...]]:
        return children[0], (children[1] if len(children) > 1 else ())

    def hints(self, children: list[Any]) -> tuple[tuple[str, Val], ...]:
        return tuple(child for child in children if isinstance(child, tuple))

    def hint(self, children: list[Any]) -> tuple[str, Val]:
        return str(children[0]), children[2].val

    def pipeline(self, children: list[Any]) -> Pipeline:
        if len(children) == 1:
            return Pipeline((children[0],))
        head, pipe, stage = children
        return Pipeline((*head.stages, stage), (*head.pipes, _pos(pipe)))

    def group(self, children: list[Any]) -> GroupBy:
        return GroupBy(children[2], render(children[2]), _pos(children[0]))

    def coalesce(self, children: list[Any]) -> Coalesce:
        return Coalesce(_pos(children[0]))

    def select(self, children: list[Any]) -> Select:
        fields = tuple(child for child in children if not isinstance(child, Token))
        return Select(fields, _pos(children[0]))

    def scalar_pipeline_filter(self, children: list[Any]) -> ScalarPipelineFilter:
        (pipeline, aggregate, pos), op, rhs = children
        return ScalarPipelineFilter(pipeline, aggregate, op, rhs if isinstance(rhs, Static) else None, pos)

    def wrapped_scalar_pipeline(self, children: list[Any]) -> tuple[Pipeline, Aggregate, Pos]:
        pipeline, pipe, aggregate = children[1], children[2], children[3]
        return Pipeline(pipeline.stages, (*pipeline.pipes, _pos(pipe))), aggregate, _pos(children[0])

    def spanset_op(self, children: list[Any]) -> SpansetOp:
        lhs, op, rhs = children
        return SpansetOp(op.type, lhs, rhs, _pos(op))

    def wrapped(self, children: list[Any]) -> Wrapped:
        return Wrapped(children[1], _pos(children[0]))

    def spanset_filter(self, children: list[Any]) -> SpansetFilter:
        return SpansetFilter(children[1] if len(children) == 3 else None, _pos(children[0]))

    def scalar_filter(self, children: list[Any]) -> ScalarFilter:
        lhs, op, rhs = children
        return ScalarFilter(op, lhs, rhs, lhs.pos)

    def scalar_static(self, children: list[Token]) -> Static:
        tok = children[-1]
        sign = -1 if len(children) == 2 else 1
        return Static(_LITERALS[tok.type], sign * tok.value, _pos(children[0]))

    def scalar_op(self, children: list[Token]) -> str:
        return str(children[0])

    def aggregate(self, children: list[Any]) -> Aggregate:
        expr = children[2] if len(children) == 4 else None
        return Aggregate(str(children[0]), expr, _pos(children[0]))

    def binary(self, children: list[Any]) -> Binary:
        lhs, op, rhs = children
        return Binary(str(op), lhs, rhs, _pos(op))

    def nil_test(self, children: list[Any]) -> Exists:
        return Exists(children[0], children[1].type == "NEQ", _pos(children[1]))

    def nil_test_flipped(self, children: list[Any]) -> Exists:
        return Exists(children[2], children[1].type == "NEQ", _pos(children[1]))

    def nil_nil(self, children: list[Any]) -> Static:
        return Static(BOOL, False, _pos(children[0]))

    def unary(self, children: list[Any]) -> FieldExpr:
        op, operand = children
        if op.type == "SUB" and isinstance(operand, Static) and operand.type in NUMERIC:
            return Static(operand.type, -operand.value, _pos(op))
        return Unary(str(op), operand, _pos(op))

    def parens(self, children: list[Any]) -> FieldExpr:
        inner: FieldExpr = children[1]
        return inner

    def static(self, children: list[Token]) -> Static:
        tok = children[0]
        kind, value = _STATICS.get(tok.type) or (_LITERALS[tok.type], tok.value)
        return Static(kind, value, _pos(tok))

    def intrinsic(self, children: list[Token]) -> Intrinsic:
        tok = children[0]
        return Intrinsic(_INTRINSICS[tok.type], str(tok), _pos(tok))

    def scoped_intrinsic(self, children: list[Token]) -> Intrinsic:
        scope, name = children
        return Intrinsic(_SCOPED_INTRINSICS[scope.type, name.type], f"{scope}{name}", _pos(scope))

    def attribute(self, children: list[Token]) -> Attribute:
        scope, name = children[0], children[1]
        return Attribute(_SCOPES[scope.type], str(name.value), _pos(scope))


# ==================================================================== rendering


def render(node: Any) -> str:
    """Tempo-like text of an AST node, for error messages and ``by(...)`` labels."""
    match node:
        case Static(type=t, value=v):
            return _render_static(t, v)
        case Intrinsic(text=text):
            return text
        case Attribute(scope=scope, name=name):
            shown = name if re.fullmatch(r"[^\s{}()=~!<>&|^,\"]+", name) else '"' + name.replace(
                "\\", "\\\\").replace('"', '\\"') + '"'
            return f"{scope}.{shown}"
        case Binary(op=op, lhs=lhs, rhs=rhs):
            return f"({render(lhs)} {op} {render(rhs)})"
        case Unary(op=op, operand=operand):
            return f"{op}{render(operand)}"
        case Exists(operand=operand, exists=exists):
            return f"{render(operand)} {'!=' if exists else '='} nil"
        case SpansetFilter(expr=expr):
            return "{ " + (render(expr) if expr is not None else "true") + " }"
        case Aggregate(fn=fn, expr=expr):
            return f"{fn}({render(expr) if expr is not None else ''})"
        case ScalarFilter(op=op, lhs=lhs, rhs=rhs):
            return f"{render(lhs)} {op} {render(rhs)}"
    return str(node)


def _render_static(kind: str, value: Any) -> str:
    if kind == STRING:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == BOOL:
        return "true" if value else "false"
    if kind == DURATION:
        return go_duration(value)
    if kind == STATUS:
        return STATUS_NAMES[value]
    if kind == KIND:
        return KIND_NAMES[value]
    return str(value)


# ===================================================================== checking

_INTRINSIC_TYPES: Final = {
    "name": STRING, "statusMessage": STRING, "rootName": STRING, "rootServiceName": STRING,
    "trace:id": STRING, "span:id": STRING, "span:parentID": STRING, "instrumentation:name": STRING,
    "instrumentation:version": STRING, "status": STATUS, "kind": KIND, "duration": DURATION,
    "traceDuration": DURATION, "nestedSetLeft": INT, "nestedSetRight": INT, "nestedSetParent": INT,
    "childCount": INT, "event:name": STRING,
}
_UNSUPPORTED_INTRINSICS: Final = frozenset(
    {"parent", "event:timeSinceStart", "link:traceID", "link:spanID"})
_LOGIC: Final = frozenset({"&&", "||"})
_REGEX: Final = frozenset({"=~", "!~"})
_ORDER: Final = frozenset({"<", "<=", ">", ">="})
_ARITHMETIC: Final = frozenset({"+", "-", "*", "/", "%", "^"})


def _unsupported(pos: Pos, what: str) -> TraceQLParseError:
    return TraceQLParseError(pos[0], pos[1], f"{what} is not supported by the Tempo test double")


def _type_error(kind: str, node: Any) -> TraceQLError:
    return TraceQLError(f"{kind}: {render(node)}")


class _Checker:
    """Tempo's validation (ast_validate.go) plus the double's own limits; collects the
    attributes and intrinsics a search response shows on its spans."""

    def __init__(self) -> None:
        self.output: dict[Intrinsic | Attribute, None] = {}

    def query(self, root: Pipeline | ScalarPipelineFilter) -> None:
        if isinstance(root, ScalarPipelineFilter):
            if root.rhs is None:
                raise _unsupported(root.pos, "comparing two scalar pipelines")
            self.pipeline(root.pipeline)
            self.scalar(ScalarFilter(root.op, root.aggregate, root.rhs, root.pos))
        else:
            self.pipeline(root)

    def pipeline(self, pipeline: Pipeline) -> None:
        for stage in pipeline.stages:
            self.stage(stage)

    def stage(self, stage: Stage) -> None:
        match stage:
            case ScalarFilter():
                self.scalar(stage)
            case GroupBy(expr=expr):
                self.field(expr)
            case Coalesce():
                pass
            case Select(fields=fields):
                for ref in fields:
                    self.field(ref)
            case _:
                self.spanset(stage)

    def spanset(self, node: SpansetExpr) -> None:
        match node:
            case SpansetFilter(expr=expr):
                if expr is not None and self.field(expr) not in {BOOL, ATTRIBUTE}:
                    raise _type_error("span filter field expressions must resolve to a boolean", node)
            case SpansetOp(lhs=lhs, rhs=rhs):
                self.spanset(lhs)
                self.spanset(rhs)
            case Wrapped(pipeline=pipeline):
                self.pipeline(pipeline)

    def scalar(self, node: ScalarFilter) -> None:
        types = []
        for side in (node.lhs, node.rhs):
            if isinstance(side, Aggregate):
                types.append(self.aggregate(side))
            else:
                types.append(side.type)
        if [isinstance(side, Aggregate) for side in (node.lhs, node.rhs)].count(True) != 1:
            raise _unsupported(node.pos, "a scalar filter without exactly one aggregate")
        if not all(t in NUMERIC or t == ATTRIBUTE for t in types):
            raise _type_error("binary operations must operate on the same type", node)

    def aggregate(self, node: Aggregate) -> str:
        if node.expr is None:
            return INT
        kind = self.field(node.expr)
        if kind != ATTRIBUTE and kind not in NUMERIC:
            raise _type_error("aggregate field expressions must resolve to a number type", node)
        return FLOAT

    def field(self, node: FieldExpr) -> str:
        """Checks ``node`` and returns its static type (``attribute`` when known only at run time)."""
        match node:
            case Static(type=kind):
                return kind
            case Intrinsic() | Attribute():
                return self.reference(node)
            case Exists(operand=operand):
                dedicated = isinstance(operand, Attribute) and (operand.scope, operand.name) == (
                    "resource", "service.name")
                if self.field(operand) != ATTRIBUTE or dedicated:
                    raise _type_error("intrinsics and dedicated columns cannot be compared to nil", node)
                return BOOL
            case Unary(op=op, operand=operand, pos=pos):
                if op == "-":
                    raise _unsupported(pos, "arithmetic")
                if self.field(operand) not in {BOOL, ATTRIBUTE}:
                    raise _type_error("illegal operation for the given type", node)
                return BOOL
            case Binary():
                return self.binary(node)
        raise AssertionError(node)  # pragma: no cover

    def reference(self, node: Intrinsic | Attribute) -> str:
        """An intrinsic or attribute the double can read; it is shown on result spans."""
        if isinstance(node, Intrinsic):
            if node.name in _UNSUPPORTED_INTRINSICS:
                raise _unsupported(node.pos, f"intrinsic {node.text}")
            self.output[node] = None
            return _INTRINSIC_TYPES[node.name]
        if node.scope not in {"", "span", "resource", "event"}:
            raise _unsupported(node.pos, f"{node.scope}. attributes")
        self.output[node] = None
        return ATTRIBUTE

    def binary(self, node: Binary) -> str:
        """Comparisons and ``&&``/``||``: Tempo's operand type rules."""
        if node.op in _ARITHMETIC:
            raise _unsupported(node.pos, "arithmetic")
        left, right = self.field(node.lhs), self.field(node.rhs)
        if not (left == right or ATTRIBUTE in {left, right} or {left, right} <= NUMERIC):
            raise _type_error("binary operations must operate on the same type", node)
        known = {left, right} - {ATTRIBUTE}
        if node.op in _LOGIC and not known <= {BOOL}:
            raise _type_error("illegal operation for the given types", node)
        if node.op in _REGEX:
            self.regex(node)
        if node.op in _ORDER and known & {BOOL, STATUS, KIND}:
            raise _type_error("illegal operation for the given types", node)
        return BOOL

    def regex(self, node: Binary) -> None:
        if not isinstance(node.rhs, Static) or node.rhs.type != STRING:
            if isinstance(node.rhs, Static):
                raise _type_error("illegal operation for the given types", node)
            raise _unsupported(node.pos, "a regex that is not a string literal")
        try:
            compile_regex(node.rhs.value)
        except re2.error:
            raise TraceQLError(f"invalid regex: `{node.rhs.value}`") from None


def _check_shape(root: Pipeline | ScalarPipelineFilter) -> None:
    """Refuse what Tempo's grammar refuses although the double's grammar parses it.

    Tempo keeps spanset expressions (filters and parenthesised spanset expressions) apart
    from pipeline expressions (parenthesised pipelines): ``{A} && ({B} | count() > 1)``
    and ``({A} | count() > 1) | by(x)`` are syntax errors there. Errors are reported at the
    token where Tempo's parser fails.
    """
    if isinstance(root, ScalarPipelineFilter):
        _check_pipeline(root.pipeline, followed=True, at_root=False)
    else:
        _check_pipeline(root, followed=False, at_root=True)


def _is_spanset(stage: Stage) -> bool:
    return isinstance(stage, SpansetFilter | SpansetOp | Wrapped)


def _check_pipeline(pipeline: Pipeline, *, followed: bool, at_root: bool) -> None:
    head, *rest = pipeline.stages
    if _is_spanset(head):
        _check_operands(head)
        if (rest or followed) and _level(head) == "P":
            line, col = pipeline.pipes[0]
            raise TraceQLParseError(line, col, "syntax error: unexpected |" + (", expecting with" * at_root))
    for stage in rest:
        if _is_spanset(stage):
            if _level(stage) == "P":
                _raise_first_pipeline_token(stage)
            _check_operands(stage)


def _check_operands(node: Stage) -> None:
    match node:
        case SpansetOp(lhs=lhs, rhs=rhs):
            _check_operands(lhs)
            _check_operands(rhs)
            left, right = _level(lhs), _level(rhs)
            if left == "S" and right == "P":
                _raise_first_pipeline_token(rhs)
            if left == "P" and right == "S":
                line, col = _first_filter(rhs)
                raise TraceQLParseError(line, col, "syntax error: unexpected {, expecting (")
        case Wrapped(pipeline=pipeline):
            _check_pipeline(pipeline, followed=False, at_root=False)


def _level(node: Stage) -> str:
    """S: a spanset expression; P: a pipeline expression; E: either (parenthesised, no pipes)."""
    match node:
        case SpansetFilter():
            return "S"
        case SpansetOp(lhs=lhs, rhs=rhs):
            levels = {_level(lhs), _level(rhs)}
            return "P" if "P" in levels else "S" if "S" in levels else "E"
        case Wrapped(pipeline=Pipeline(stages=(only,))) if _is_spanset(only):
            return "P" if _level(only) == "P" else "E"
    return "P"


def _raise_first_pipeline_token(node: Stage) -> NoReturn:
    """Tempo fails at the first token that only a pipeline can contain."""
    match node:
        case SpansetOp(lhs=lhs, rhs=rhs):
            _raise_first_pipeline_token(lhs if _level(lhs) == "P" else rhs)
        case Wrapped(pipeline=pipeline):
            head = pipeline.stages[0]
            if not _is_spanset(head):
                line, col = _stage_pos(head)
                message = f"syntax error: unexpected {_head_word(head)}, expecting {{ or ("
                raise TraceQLParseError(line, col, message)
            if _level(head) == "P":
                _raise_first_pipeline_token(head)
            line, col = pipeline.pipes[0]
            raise TraceQLParseError(line, col, "syntax error: unexpected |")
    raise AssertionError(node)  # pragma: no cover


def _stage_pos(stage: Stage) -> Pos:
    return stage.lhs.pos if isinstance(stage, ScalarFilter) else stage.pos


def _head_word(stage: Stage) -> str:
    """How goyacc names the first token of a pipeline stage."""
    match stage:
        case GroupBy():
            return "by"
        case Select():
            return "select"
        case Coalesce():
            return "coalesce"
        case ScalarFilter(lhs=Aggregate(fn=fn)):
            return fn
        case ScalarFilter(lhs=Static(type=kind, value=value)):
            return "-" if value < 0 else {INT: "INTEGER", FLOAT: "FLOAT"}.get(kind, "DURATION")
    return "("


def _first_filter(node: SpansetExpr) -> Pos:
    match node:
        case SpansetFilter(pos=pos):
            return pos
        case SpansetOp(lhs=lhs):
            return _first_filter(lhs)
    return node.pos


@functools.lru_cache(maxsize=1024)
def parse_query(text: str) -> Query:
    """Parse and validate a search query (empty text means ``{ }``).

    Raises TraceQLError with Tempo's wording for everything Tempo refuses, and for what
    the double cannot evaluate.
    """
    tree = parse_tree(text or "{ }")
    try:
        root, hints = _ToAst().transform(tree)
    except VisitError as err:  # pragma: no cover - a transformer bug, not a user error
        raise err.orig_exc from None
    _check_shape(root)
    checker = _Checker()
    checker.query(root)
    return Query(text, root, hints, tuple(checker.output))


# =================================================================== evaluation


@dataclass(frozen=True)
class Spanset:
    """Spans of one fragment that a query kept, plus ``by()`` labels."""

    nodes: tuple[Node, ...]
    attributes: tuple[tuple[str, Val], ...] = ()


def evaluate(query: Query, fragment: Fragment) -> list[Spanset]:
    """The spansets ``query`` yields on one fragment; an empty list means no match."""
    start = [Spanset(fragment.nodes)]
    root = query.root
    if isinstance(root, ScalarPipelineFilter):
        assert root.rhs is not None  # the checker refuses the other form
        out = _run_pipeline(root.pipeline, start)
        scalar = ScalarFilter(root.op, root.aggregate, root.rhs, root.pos)
        return [ss for ss in out if _scalar_holds(scalar, ss)]
    return _run_pipeline(root, start)


def _run_pipeline(pipeline: Pipeline, spansets: list[Spanset]) -> list[Spanset]:
    for stage in pipeline.stages:
        spansets = _run_stage(stage, spansets)
        if not spansets:
            return []
    return spansets


def _run_stage(stage: Stage, spansets: list[Spanset]) -> list[Spanset]:
    match stage:
        case ScalarFilter():
            return [ss for ss in spansets if _scalar_holds(stage, ss)]
        case GroupBy(expr=expr, text=text):
            return [group for ss in spansets for group in _group(ss, expr, text)]
        case Coalesce():
            return [Spanset(_unique(node for ss in spansets for node in ss.nodes))]
        case Select():
            return spansets
    return [out for ss in spansets for out in _spanset(stage, ss)]


def _group(ss: Spanset, expr: FieldExpr, text: str) -> list[Spanset]:
    groups: dict[Any, list[Node]] = {}
    for node in ss.nodes:
        groups.setdefault(field_value(expr, node), []).append(node)
    label = f"by({text})"
    return [Spanset(tuple(nodes), (*ss.attributes, (label, key if key is not None else (STRING, "nil"))))
            for key, nodes in groups.items()]


def _spanset(node: SpansetExpr, ss: Spanset) -> list[Spanset]:
    match node:
        case SpansetFilter(expr=expr):
            if expr is None:
                return [ss]
            kept = tuple(n for n in ss.nodes if keeps(expr, n))
            return [Spanset(kept, ss.attributes)] if kept else []
        case Wrapped(pipeline=pipeline):
            return _run_pipeline(pipeline, [ss])
        case SpansetOp():
            return _spanset_op(node, ss)
    raise AssertionError(node)  # pragma: no cover


def _spanset_op(node: SpansetOp, ss: Spanset) -> list[Spanset]:
    lhs, rhs = _spanset(node.lhs, ss), _spanset(node.rhs, ss)
    if len(lhs) > 1 or len(rhs) > 1:
        raise TraceQLRuntimeError("spanset operators are not supported for multiple spansets per trace. "
                                  "consider using coalesce()")
    left = lhs[0].nodes if lhs else ()
    right = rhs[0].nodes if rhs else ()
    if node.op == "AND":
        kept = _unique((*left, *right)) if left and right else ()
    elif node.op == "OR":
        kept = _unique((*left, *right))
    else:
        kept = _structural(node.op, left, right)
    return [Spanset(kept, ss.attributes)] if kept else []


def _unique(nodes: Iterator[Node] | Sequence[Node]) -> tuple[Node, ...]:
    return tuple(dict.fromkeys(nodes))


# Structural operators: (relation, negated, union). The relation tells whether `r` (a span of
# the right-hand side) stands in that relation to `l` (a span of the left-hand side).
_STRUCTURAL: Final = {
    "DESC": ("desc", False, False), "ANCE": ("ance", False, False), "GT": ("child", False, False),
    "LT": ("parent", False, False), "SIBL": ("sibl", False, False),
    "NOT_DESC": ("desc", True, False), "NOT_ANCE": ("ance", True, False), "NOT_CHILD": ("child", True, False),
    "NOT_PARENT": ("parent", True, False), "NRE": ("sibl", True, False),
    "UNION_DESC": ("desc", False, True), "UNION_ANCE": ("ance", False, True),
    "UNION_CHILD": ("child", False, True), "UNION_PARENT": ("parent", False, True),
    "UNION_SIBL": ("sibl", False, True),
}


def _related(relation: str, left: Node, right: Node) -> bool:
    """Nested-set tests of vparquet's DescendantOf / ChildOf / SiblingOf; 0 never relates."""
    if relation == "desc":
        return 0 not in {left.left, left.right, right.left, right.right} and (
            left.left < right.left and right.right < left.right)
    if relation == "ance":
        return _related("desc", right, left)
    if relation == "child":
        return left.left != 0 and right.parent != 0 and right.parent == left.left
    if relation == "parent":
        return _related("child", right, left)
    return left.parent == right.parent and left.parent != 0 and left is not right


def _structural(op: str, left: Sequence[Node], right: Sequence[Node]) -> tuple[Node, ...]:
    """RHS spans with (or, negated, without) a related LHS span; union forms return both sides.

    A negated operator with an empty LHS returns every RHS span, as recorded from Tempo.
    """
    relation, negated, union = _STRUCTURAL[op]
    if union:
        lhs_hits = [lspan for lspan in left if any(_related(relation, lspan, r) for r in right)]
        rhs_hits = [r for r in right if any(_related(relation, lspan, r) for lspan in left)]
        return _unique((*lhs_hits, *rhs_hits))
    return tuple(r for r in right if any(_related(relation, lspan, r) for lspan in left) != negated)


def _scalar_holds(node: ScalarFilter, ss: Spanset) -> bool:
    values = [_scalar_value(side, ss) for side in (node.lhs, node.rhs)]
    if values[0] is None or values[1] is None:
        return False
    return _ORDERING[node.op](values[0], values[1])


def _scalar_value(side: Aggregate | Static, ss: Spanset) -> float | int | None:
    if isinstance(side, Static):
        return side.value if side.type in NUMERIC else None
    if side.fn == "count":
        return len(ss.nodes)
    assert side.expr is not None
    numbers = [value[1] for node in ss.nodes
               if (value := field_value(side.expr, node)) is not None and value[0] in NUMERIC]
    if not numbers:
        return None
    reducers: dict[str, Callable[[list[Any]], float | int]] = {
        "avg": lambda xs: sum(xs) / len(xs), "sum": sum, "min": min, "max": max}
    return reducers[side.fn](numbers)


def keeps(expr: FieldExpr, node: Node) -> bool:
    """A spanset filter keeps the span: with event terms, through one event that meets it whole."""
    if not reads_events(expr):
        return truthy(field_value(expr, node))
    return any(truthy(field_value(expr, node, event)) for event in node.span.events or (None,))


@functools.lru_cache(maxsize=1024)
def reads_events(expr: FieldExpr) -> bool:
    """Whether ``expr`` names ``event:name`` or an ``event.`` attribute."""
    match expr:
        case Intrinsic(name=name):
            return name.startswith("event:")
        case Attribute(scope=scope):
            return scope == "event"
        case Binary(lhs=lhs, rhs=rhs):
            return reads_events(lhs) or reads_events(rhs)
        case Unary(operand=operand) | Exists(operand=operand):
            return reads_events(operand)
    return False


def field_value(node: FieldExpr, span: Node, event: Event | None = None) -> Val | None:
    """The value of a field expression on one span (event terms on ``event``); None means missing."""
    match node:
        case Static():
            return node.val
        case Intrinsic() | Attribute() if reads_events(node):
            return _event_value(node, event)
        case Intrinsic(name=name):
            return intrinsic_value(name, span)
        case Attribute(scope=scope, name=name):
            return attribute_value(scope, name, span.span)
        case Exists(operand=operand, exists=exists):
            return (BOOL, (field_value(operand, span, event) is not None) == exists)
        case Unary(operand=operand):
            return (BOOL, not truthy(field_value(operand, span, event)))
        case Binary(op="&&", lhs=lhs, rhs=rhs):
            return (BOOL, truthy(field_value(lhs, span, event)) and truthy(field_value(rhs, span, event)))
        case Binary(op="||", lhs=lhs, rhs=rhs):
            return (BOOL, truthy(field_value(lhs, span, event)) or truthy(field_value(rhs, span, event)))
        case Binary(op=op, lhs=lhs, rhs=rhs):
            return (BOOL, compare(op, field_value(lhs, span, event), field_value(rhs, span, event)))
    raise AssertionError(node)  # pragma: no cover


def _event_value(node: Intrinsic | Attribute, event: Event | None) -> Val | None:
    """``event:name`` or ``event.x`` of the event at hand; missing on a span without events."""
    if event is None:
        return None
    return (STRING, event.name) if isinstance(node, Intrinsic) else event.attributes.get(node.name)


def attribute_value(scope: str, name: str, span: Span) -> Val | None:
    """``span.x``, ``resource.x``, or unscoped ``.x`` (the span's own attribute wins)."""
    if scope == "span":
        return span.attributes.get(name)
    if scope == "resource":
        return span.resource_attributes.get(name)
    found = span.attributes.get(name)
    return found if found is not None else span.resource_attributes.get(name)


def intrinsic_value(name: str, node: Node) -> Val | None:
    """Span intrinsics, and trace-level ones taken from the span's fragment."""
    span, fragment = node.span, node.fragment
    values: dict[str, Callable[[], Val | None]] = {
        "name": lambda: (STRING, span.name),
        "status": lambda: (STATUS, span.status_code),
        "statusMessage": lambda: (STRING, span.status_message),
        "kind": lambda: (KIND, span.kind),
        "duration": lambda: (DURATION, span.end - span.start),
        "rootName": lambda: None if fragment.root_name is None else (STRING, fragment.root_name),
        "rootServiceName": lambda: None if fragment.root_service is None else (STRING, fragment.root_service),
        "traceDuration": lambda: (DURATION, fragment.duration),
        "nestedSetLeft": lambda: (INT, node.left),
        "nestedSetRight": lambda: (INT, node.right),
        "nestedSetParent": lambda: (INT, node.parent),
        "childCount": lambda: (INT, node.child_count),
        "trace:id": lambda: (STRING, span.trace_id),
        "span:id": lambda: (STRING, span.span_id),
        "span:parentID": lambda: (STRING, span.parent_id) if span.parent_id else None,
        "instrumentation:name": lambda: _optional(span.scope_name),
        "instrumentation:version": lambda: _optional(span.scope_version),
    }
    return values[name]()


def _optional(text: str | None) -> Val | None:
    return None if text is None else (STRING, text)


_HIDDEN_INTRINSICS: Final = frozenset({"name", "duration", "traceDuration", "rootName", "rootServiceName"})


def shown_attributes(query: Query, node: Node) -> list[tuple[str, Val]]:
    """Attributes a search response shows on a span: the ones the query fetched.

    Keys are bare names (``service.name``, not ``resource.service.name``); intrinsics such
    as ``status`` or ``kind`` appear as strings (tempo.md §1.5). ``name`` and the duration
    have their own fields.
    """
    shown: dict[str, Val] = {}
    for ref in query.output:
        if reads_events(ref):  # not the span's own: the double does not show them
            continue
        if isinstance(ref, Attribute):
            value = attribute_value(ref.scope, ref.name, node.span)
            key = ref.name
        elif ref.name in _HIDDEN_INTRINSICS:
            continue
        else:
            value = intrinsic_value(ref.name, node)
            key = ref.name.split(":")[-1]
            if value is not None and value[0] in {STATUS, KIND}:
                value = (STRING, (STATUS_NAMES if value[0] == STATUS else KIND_NAMES)[value[1]])
        if value is not None and key not in shown:
            shown[key] = value
    return list(shown.items())


def shows_name(query: Query) -> bool:
    """Whether the query fetched the span name (only then do search spans carry ``name``)."""
    return any(isinstance(ref, Intrinsic) and ref.name == "name" for ref in query.output)
