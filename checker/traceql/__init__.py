"""Rules compiled to TraceQL: plans of searches whose trace-ID sets are combined client-side."""

from checker.traceql.compiler import compile_rule
from checker.traceql.plan import QueryPlan

__all__ = ["QueryPlan", "compile_rule"]
