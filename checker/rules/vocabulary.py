"""The rule language's words in one place: intrinsics, span kinds and statuses, keywords.

Modelled on Tempo's ``pkg/traceql/enum_attributes.go``: the grammar (its INTRINSIC terminal,
``parse.parser``), the linter (which values an intrinsic takes), the evaluator (which span
field it reads) and the TraceQL compiler (how Tempo spells it) all read this module, so a new
intrinsic is one member of ``Intrinsic`` plus its getter in ``evaluate``, which mypy's
exhaustiveness check asks for. Nothing here imports from the checker: every layer may read it.
"""

from __future__ import annotations

from enum import Enum

# OpenTelemetry's order: an OTLP status or kind code is an index into these tuples.
SPAN_STATUSES = ("unset", "ok", "error")
SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")

# The prefixes the grammar reads as an intrinsic; an unknown one after them is a lint error
# naming the known intrinsics, not a bare syntax error.
INTRINSIC_SCOPES = ("span", "resource", "trace", "event")

# ``resource.service.name``, ``span.http.route``: an attribute looked up in that scope only, as in
# TraceQL. Any other dotted name is looked up on the span, then on its resource. ``event.x`` is an
# attribute of one of the span's events (``Attr.of_event``): see ``engine.compiled.predicate_test``.
ATTRIBUTE_SCOPES = ("span", "resource", "event")

# The grammar's keyword terminals, each spelled as its lowercase name (WHEN: "when", ...).
CLAUSE_KEYWORDS = ("when", "always", "never")
OPERATOR_KEYWORDS = ("and", "or", "not", "in", "matches", "contains")
LITERAL_KEYWORDS = ("true", "false")
KEYWORDS = CLAUSE_KEYWORDS + OPERATOR_KEYWORDS + LITERAL_KEYWORDS
# Words a bare name cannot be either, because the grammar reads them as a call: count(x).
CALL_WORDS = ("where", "count", "trace.has", "trace.count", "span")
# Words of the structure checks (every a has child b, a followed by b): names only where no
# relation can follow, so the printer quotes them.
STRUCTURE_WORDS = ("every", "has", "followed")


class ValueType(Enum):
    """What an intrinsic compares with: the linter refuses any other literal."""

    STRING = "string"
    DURATION = "duration"
    STATUS = "status"
    KIND = "kind"

    @property
    def allowed(self) -> tuple[str, ...] | None:
        """The only words an enum-valued intrinsic takes; None when any value of the type goes."""
        return {ValueType.STATUS: SPAN_STATUSES, ValueType.KIND: SPAN_KINDS}.get(self)


class Intrinsic(Enum):
    """A property of every span, written ``span:name`` in a rule and ``name`` in TraceQL."""

    NAME = ("span:name", "name", ValueType.STRING)
    STATUS_MESSAGE = ("span:statusMessage", "statusMessage", ValueType.STRING)
    SERVICE = ("resource:service", 'resource."service.name"', ValueType.STRING)
    DURATION = ("span:duration", "duration", ValueType.DURATION)
    STATUS = ("span:status", "status", ValueType.STATUS)
    KIND = ("span:kind", "kind", ValueType.KIND)
    # Of the whole trace, read on every span of it: the root span's service and name, and the
    # time from the first span's start to the last one's end.
    ROOT_SERVICE = ("trace:rootService", "trace:rootService", ValueType.STRING)
    ROOT_NAME = ("trace:rootName", "trace:rootName", ValueType.STRING)
    TRACE_DURATION = ("trace:duration", "trace:duration", ValueType.DURATION)
    # Of one event of the span: a .where() mentioning it holds when one event satisfies it all.
    EVENT_NAME = ("event:name", "event:name", ValueType.STRING)

    def __init__(self, written: str, traceql: str, value_type: ValueType) -> None:
        self.written = written
        self.traceql = traceql  # resource:service is a resource attribute in TraceQL
        self.value_type = value_type

    @classmethod
    def named(cls, written: str) -> Intrinsic | None:
        """The intrinsic spelled ``written``, or None for one the language does not know."""
        return _BY_SPELLING.get(written)

    @classmethod
    def of(cls, written: str) -> Intrinsic:
        """The intrinsic spelled ``written``, for the stages after lint, which refuses unknown ones.

        :raises KeyError: for an intrinsic the language does not know.
        """
        return _BY_SPELLING[written]

    @property
    def of_trace(self) -> bool:
        """A property of the whole trace, which Tempo knows only per stored fragment of it."""
        return self.written.startswith("trace:")

    @property
    def of_event(self) -> bool:
        """A property of one of the span's events, not of the span: read per event."""
        return self.written.startswith("event:")

    @property
    def is_enum(self) -> bool:
        """Compared with bare words (``status = error``), never with strings or by order."""
        return self.value_type.allowed is not None


_BY_SPELLING = {intrinsic.written: intrinsic for intrinsic in Intrinsic}
