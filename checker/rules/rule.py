"""A loaded rule: its metadata, its condition and reading, and its example traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from checker.errors import SourceLocation
    from checker.rules import model as m

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}  # 0 most severe


@dataclass(frozen=True)
class ExampleEvent:
    """An event of an example span (``events: [{name: exception, attributes: {...}}]``)."""

    name: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExampleSpan:
    """One span of a hand-written example trace (rules.md "Example traces")."""

    name: str
    service: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "unset"
    kind: str = "internal"
    duration_ns: int = 0
    children: tuple[ExampleSpan, ...] = ()
    start_ns: int | None = None  # after the example's start; None: 1 ms after the span before it
    events: tuple[ExampleEvent, ...] = ()


@dataclass(frozen=True)
class Example:
    """An example trace with the verdict the rule must give on it."""

    name: str
    expect: Literal["violation", "pass"]
    spans: tuple[ExampleSpan, ...]
    location: SourceLocation


@dataclass(frozen=True)
class Rule:
    """A rule from a rule file, valid and normalised."""

    id: str
    name: str
    condition: str
    invariant: m.Invariant
    location: SourceLocation
    version: str
    description: str = ""
    severity: Severity = "medium"
    frameworks: tuple[str, ...] = ()
    controls: tuple[str, ...] = ()
    enabled: bool = True
    every: str | None = None
    cron: str | None = None
    evaluation_delay: str | None = None
    settle: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    notify: tuple[str, ...] = ()
    runbook_url: str | None = None  # linked from notifications (Alertmanager's runbook_url annotation)
    examples: tuple[Example, ...] = ()
    legacy: bool = False
