"""The TraceQL package's own failures."""

from __future__ import annotations


class QueryTooLongError(ValueError):
    """The query does not fit and has no disjunction left to cut."""
