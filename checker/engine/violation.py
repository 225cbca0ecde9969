"""A violation: which rule, which trace, and why, in words and in span IDs.

The JSON form (``to_json``) is the contract that the CLI, the store and the notifiers build on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SpanRef:
    """A span named in an explanation."""

    name: str
    span_id: str


@dataclass(frozen=True)
class Forbidden:
    """A ``never`` check that matched, with the spans that matched it."""

    check: str
    spans: tuple[SpanRef, ...] = ()


@dataclass(frozen=True)
class Violation:
    """One trace breaking one rule; the JSON form is the contract other tools build on."""

    rule_id: str
    rule_name: str
    severity: str
    trace_id: str
    reason: str
    frameworks: tuple[str, ...]
    controls: tuple[str, ...]
    trigger_spans: tuple[SpanRef, ...]
    missing: tuple[str, ...]
    forbidden: tuple[Forbidden, ...]
    root_service: str | None = None
    root_name: str | None = None
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0  # the trace's newest span end: whether late spans may still come
    labels: dict[str, str] = field(default_factory=dict)

    def retraction_reason(self) -> str:
        """Why the violation no longer holds once its trace is whole: what it lacked arrived later.

        Spans only ever join a trace, so a violation withdrawn by a later look lacked something.
        """
        if self.missing:
            return f"{'; '.join(self.missing)} arrived later"
        return "the finished trace no longer violates the rule (spans arrived later)"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; lists, not tuples."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Violation:
        """The violation ``to_json`` gave (as the store keeps it)."""
        return cls(**{
            **data,
            "frameworks": tuple(data["frameworks"]), "controls": tuple(data["controls"]),
            "missing": tuple(data["missing"]),
            "trigger_spans": tuple(SpanRef(**s) for s in data["trigger_spans"]),
            "forbidden": tuple(Forbidden(f["check"], tuple(SpanRef(**s) for s in f["spans"]))
                               for f in data["forbidden"]),
        })
