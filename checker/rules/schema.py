"""The rule-file format as pydantic models, for the editor schema only (``betrace schema rules``).

The loader (``fields.py``) reads YAML nodes by hand to report every problem at its line; these
models never load a rule. They exist so that ``checker.schema`` can generate a JSON Schema whose
hovers, completions and red squiggles match what ``betrace validate`` says, and tests hold the
two together (every key set of ``fields.py`` equals a model's fields here). The schema is
stricter than the loader where the docs are: text fields are strings (the loader also reads
``id: 42`` as text) and enums are lowercase (the loader lowercases ``severity: HIGH``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from checker.rules.durations import DURATION_HINT, DURATION_PATTERN
from checker.rules.fields import CRON_HINT, EVERY_OR_CRON
from checker.rules.load import RULE_ID, RULE_ID_HINT
from checker.rules.rule import Severity  # noqa: TC001  (pydantic reads the annotations at run time)
from checker.rules.vocabulary import SPAN_KINDS, SPAN_STATUSES

# The loader reads ``key: null`` as an absent key; the schema offers the documented types only.
Absent = SkipJsonSchema[None]
# patternErrorMessage: the yaml-language-server says the loader's hint instead of the bare pattern.
DurationText = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30s", "1m", "1h30m"],
                                    json_schema_extra={"patternErrorMessage": DURATION_HINT})]
Strings = str | list[str]


class _Keys(BaseModel):
    """Unknown keys are flagged in the editor, as the loader warns of them."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ExampleEvent(_Keys):
    """An event on an example span, such as an exception."""

    name: str
    """The event's name, e.g. `exception`."""
    attributes: dict[str, Any] = {}
    """The event's attributes, e.g. `{exception.type: ValueError}`."""


class ExampleSpan(_Keys):
    """A span of an example trace; only `span` is required."""

    span: str
    """The span's name, as conditions name it (`pii.access`, `GET /patients/{id}`)."""
    service: str | Absent = None
    """The service that emitted the span (`resource.service.name`)."""
    attributes: dict[str, Any] = {}
    """The span's attributes; YAML's types are theirs: `1500` is an int, `1500.5` a double, `true` a bool,
    `"1500"` a string."""
    status: str = Field("unset", json_schema_extra={"enum": list(SPAN_STATUSES)})
    """The span's status (`span:status`)."""
    kind: str = Field("internal", json_schema_extra={"enum": list(SPAN_KINDS)})
    """The span's kind (`span:kind`)."""
    start: DurationText | Absent = None
    """When the span starts after the example's start, e.g. `6ms` (default: 1 ms after the span listed
    before it, so that `followed by` can be written down)."""
    duration: DurationText | Absent = None
    """How long the span took, e.g. `120ms` (`span:duration`)."""
    children: list[ExampleSpan] = []
    """Spans whose parent is this one."""
    events: list[ExampleEvent] = []
    """The span's events, e.g. `[{name: exception, attributes: {exception.type: ValueError}}]`."""


class LegacyExample(_Keys):
    """BeTrace's `example_violation`: one more example trace, on which the rule must report a violation."""

    name: str | Absent = None
    """What the example shows, printed by `betrace test`."""
    description: str | Absent = None
    """What the example shows, printed by `betrace test` when there is no `name`."""
    trace: list[ExampleSpan]
    """The example trace: its root spans, each with its `children`."""


class Example(LegacyExample):
    """A hand-made trace and the verdict the rule must give on it, checked by `betrace test`."""

    expect: Literal["violation", "pass"]
    """The verdict the rule must give on this trace."""


class Rule(_Keys):
    """One rule: an id, a condition, and what tells people about it."""

    # Not "not: {required: [every, cron]}", which editors report as "Matches a schema that is not
    # allowed": a cron that must be null (absent) next to every gets the loader's message, at cron.
    model_config = ConfigDict(json_schema_extra={
        "if": {"required": ["every"]},
        "then": {"properties": {"cron": {"type": "null", "errorMessage": EVERY_OR_CRON}}},
    })

    id: str = Field(pattern=f"^{RULE_ID.pattern}$", json_schema_extra={"patternErrorMessage": RULE_ID_HINT})
    """Unique across all rule files; letters, digits, `.`, `_` and `-`, starting with a letter or digit."""
    name: str | Absent = None
    """A title for people, in messages and reports (default: the id)."""
    description: str | Absent = None
    """What the rule guards and why."""
    severity: Severity = "medium"
    """How bad a violation is; notification routes filter on it (`min_severity`)."""
    compliance_frameworks: Strings = []
    """Frameworks the rule gives evidence for, e.g. `[SOC2, HIPAA]`."""
    controls: Strings = []
    """Controls the rule gives evidence for, e.g. `["SOC2:CC6.7", "HIPAA:164.312(b)"]`."""
    condition: str
    """What must hold in every trace: `when { ... } always { ... } never { ... }` (or BeTrace's bare
    `trace.has(...)` form); `betrace explain` prints how it is read."""
    every: DurationText | Absent = None
    """How often the daemon runs the rule, e.g. `5m` (default: the config's `schedule.every`); not with
    `cron`."""
    cron: Annotated[str, Field(pattern=r"^\s*\S+(\s+\S+){4}\s*$",
                               json_schema_extra={"patternErrorMessage": CRON_HINT})] | Absent = None
    """When the daemon runs the rule: five fields, minute hour day month weekday, in UTC, e.g.
    `"*/5 * * * *"`; not with `every`."""
    evaluation_delay: DurationText | Absent = None
    """How long before now each window ends, so that late spans have arrived (default: the config's)."""
    settle: DurationText | Absent = None
    """How old a window is when it is judged again, finally (default: the config's; raised to
    `evaluation_delay`)."""
    enabled: bool = True
    """A disabled rule is loaded and checked but not run."""
    labels: dict[str, str | int | float | bool] = {}
    """Free-form labels carried into violations and messages, e.g. `{team: privacy}`."""
    notify: Strings = []
    """Notification routes (the config's `notifiers`) for this rule's violations (default: the
    config's `default_notifiers`)."""
    runbook_url: Annotated[str, Field(pattern=r"^https?://[^/\s]+", json_schema_extra={
        "patternErrorMessage": "write an http:// or https:// URL"})] | Absent = None
    """What to do about a violation: a link in notifications (Alertmanager's `runbook_url` annotation,
    the webhook body's `rule`)."""
    examples: list[Example] = []
    """Hand-made traces with the verdict the rule must give, run by `betrace test`."""
    example_violation: LegacyExample | Absent = None
    """BeTrace's single example: one more trace that must be a violation."""


class RuleFile(_Keys):
    """A BeTrace rule file: every `*.yaml` and `*.yml` file under the rules directory."""

    rules: list[Rule]
    """The file's rules."""
