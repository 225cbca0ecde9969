"""A Grafana Tempo test double: Tempo's HTTP query API and TraceQL, served from pushed OTLP/JSON.

``TempoDouble`` is the server (see its docstring), ``Fault`` a misbehaviour to inject, and
``Request`` an entry of its request log. ``parse_query`` exposes the TraceQL front end; it
raises ``TraceQLError`` with Tempo's wording. Everything is pinned against recordings of a
real Tempo by ``tests/test_tempo_double.py``.
"""

from .server import Fault, Request, TempoDouble
from .traceql import TraceQLError, TraceQLParseError, TraceQLRuntimeError, parse_query

__all__ = [
    "Fault",
    "Request",
    "TempoDouble",
    "TraceQLError",
    "TraceQLParseError",
    "TraceQLRuntimeError",
    "parse_query",
]
