"""Traces: the in-memory model and the OTLP/JSON reader (the bottom layer, with rules)."""

from checker.traces.model import Span, Trace
from checker.traces.otlp import read_traces

__all__ = ["Span", "Trace", "read_traces"]
