"""Read and check a rule's YAML fields, recording each problem at the node it is about."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

import yaml
from apscheduler.triggers.cron import CronTrigger

from checker.errors import RuleError, RuleSemanticError, SourceLocation
from checker.rules.durations import DURATION_HINT, parse_ns
from checker.rules.errors import DurationTooLongError
from checker.rules.rule import SEVERITIES, Example, ExampleEvent, ExampleSpan
from checker.rules.vocabulary import SPAN_KINDS, SPAN_STATUSES

if TYPE_CHECKING:
    from pathlib import Path

    from checker.rules.source import SourceText

EVERY_OR_CRON = "a rule has 'every' or 'cron', not both"
CRON_HINT = 'five fields, minute hour day month weekday, in UTC, e.g. "*/5 * * * *"'
TOP_LEVEL_KEYS = frozenset({"rules"})
KNOWN_KEYS = frozenset({
    "id", "name", "description", "severity", "compliance_frameworks", "controls", "condition",
    "every", "cron", "evaluation_delay", "settle", "enabled", "labels", "notify", "examples",
    "example_violation", "runbook_url",
})
EXAMPLE_KEYS = frozenset({"name", "description", "expect", "trace"})
LEGACY_EXAMPLE_KEYS = EXAMPLE_KEYS - {"expect"}  # example_violation is a violation whatever it says
SPAN_KEYS = frozenset({"span", "service", "attributes", "status", "kind", "start", "duration", "children",
                       "events"})
EVENT_KEYS = frozenset({"name", "attributes"})


def cron_problem(expression: str) -> str | None:
    """Why APScheduler, which runs the rule, would refuse this crontab expression."""
    if len(expression.split()) != 5:
        return f"needs 5 fields, got {len(expression.split())}"
    try:
        CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as err:
        return str(err)
    return None


class FieldReader:
    """Reads the fields of one file's rules; problems go to ``errors`` and ``warnings``."""

    def __init__(self, path: Path | str, source: SourceText,
                 errors: list[RuleError], warnings: list[RuleError]) -> None:
        self.path = path
        self.source = source
        self.errors = errors
        self.warnings = warnings
        self._loader = yaml.SafeLoader("")

    # ---------------------------------------------------------------- plumbing

    def location(self, node: yaml.Node) -> SourceLocation:
        """Where a node starts."""
        return SourceLocation(self.path, node.start_mark.line + 1, node.start_mark.column + 1)

    def _problem(self, kind: type[RuleError], node: yaml.Node, message: str,
                 rule_id: str | None, hint: str | None) -> RuleError:
        where = self.location(node)
        return kind(message, location=where, rule_id=rule_id, hint=hint,
                    context=self.source.context(where.line or 0, where.column or 0))

    def error(self, node: yaml.Node, message: str, rule_id: str | None = None,
              hint: str | None = None) -> None:
        """Record an error at ``node``."""
        self.errors.append(self._problem(RuleSemanticError, node, message, rule_id, hint))

    def warn(self, node: yaml.Node, message: str, rule_id: str | None = None,
             hint: str | None = None) -> None:
        """Record a warning at ``node``."""
        self.warnings.append(self._problem(RuleError, node, message, rule_id, hint))

    def construct(self, node: yaml.Node) -> Any:
        """The Python value of a node, with YAML's own typing."""
        return self._loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, what: str, rule_id: str | None = None) -> dict[str, yaml.Node]:
        """A mapping node's entries by key; anything else is an error and gives ``{}``."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping", rule_id)
            return {}
        return {str(k.value): v for k, v in node.value}

    def unknown_keys(self, fields: dict[str, yaml.Node], known: frozenset[str], what: str,
                     rule_id: str | None) -> None:
        """Warn of each key not in ``known``: BeTrace's files load with extra keys, but a typo is seen."""
        for key, node in fields.items():
            if key not in known:
                self.warn(node, f"unknown {what}key {key!r} ignored", rule_id)

    # ------------------------------------------------------------------ fields

    def rule_nodes(self, root: yaml.Node) -> list[yaml.MappingNode]:
        """The entries of the top-level ``rules:`` list."""
        top = self.mapping(root, "a rule file")
        self.unknown_keys(top, TOP_LEVEL_KEYS, "top-level ", None)
        rules = top.get("rules")
        if rules is None:
            if top:
                self.error(root, "no 'rules:' list", hint="a rule file is a mapping with a 'rules:' list")
            return []
        if not isinstance(rules, yaml.SequenceNode):
            self.error(rules, "'rules' must be a list of rules")
            return []
        nodes = []
        for item in rules.value:
            if isinstance(item, yaml.MappingNode):
                nodes.append(item)
            else:
                self.error(item, "each rule must be a mapping with id, condition, ...")
        return nodes

    def scalar(self, fields: dict[str, yaml.Node], key: str, kind: type | tuple[type, ...],
               rule_id: str | None, *, required: bool = False,
               owner: yaml.Node | None = None) -> Any:
        """A scalar field of the expected Python type, or None (with an error if wrong)."""
        node = fields.get(key)
        if node is None:
            if required:
                where = self.location(owner) if owner is not None else SourceLocation(self.path)
                self.errors.append(RuleSemanticError(f"missing required key '{key}'",
                                                     location=where, rule_id=rule_id))
            return None
        value = self.construct(node)
        if value is None and not required:
            return None
        if not isinstance(value, kind) or isinstance(node, yaml.CollectionNode):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.error(node, f"'{key}' must be a {names}, not {value!r}", rule_id)
            return None
        return value

    def string(self, fields: dict[str, yaml.Node], key: str, *, required: bool = False,
               rule_id: str | None = None, owner: yaml.Node | None = None) -> str | None:
        """A string field; ids and names written as numbers are accepted as text."""
        value = self.scalar(fields, key, (str, int, float), rule_id, required=required,
                            owner=owner)
        if value is not None and not str(value).strip():
            self.error(fields[key], f"'{key}' is empty", rule_id)
            return None
        return None if value is None else str(value)

    def strings(self, fields: dict[str, yaml.Node], key: str, rule_id: str | None) -> tuple[str, ...]:
        """A list of strings; a single string is a list of one."""
        node = fields.get(key)
        if node is None:
            return ()
        value = self.construct(node)
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            self.error(node, f"'{key}' must be a list of strings", rule_id)
            return ()
        return tuple(str(v) for v in value)

    def duration(self, fields: dict[str, yaml.Node], key: str, rule_id: str | None) -> str | None:
        """A duration such as ``1m``."""
        value = self.string(fields, key, rule_id=rule_id)
        if value is None:
            return None
        try:
            valid = parse_ns(value) is not None
        except DurationTooLongError as err:
            self.error(fields[key], f"'{key}': {err}", rule_id, DURATION_HINT)
            return None
        if not valid:
            self.error(fields[key], f"'{key}' is not a duration: {value!r}", rule_id, DURATION_HINT)
            return None
        return value

    def url(self, fields: dict[str, yaml.Node], key: str, rule_id: str | None) -> str | None:
        """An absolute http(s) URL: it becomes a link in a notification, so it must open."""
        value = self.string(fields, key, rule_id=rule_id)
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            self.error(fields[key], f"'{key}' must be an http:// or https:// URL, not {value!r}", rule_id,
                       "e.g. https://wiki.example.com/runbooks/pii-access")
            return None
        return value.strip()

    def metadata(self, fields: dict[str, yaml.Node], rule_id: str | None) -> dict[str, Any]:
        """Every optional field of a rule, checked, as ``Rule`` keyword arguments."""
        self.unknown_keys(fields, KNOWN_KEYS, "", rule_id)
        severity = (self.string(fields, "severity", rule_id=rule_id) or "medium").lower()
        if severity not in SEVERITIES:
            self.error(fields["severity"], f"unknown severity {severity!r}", rule_id,
                       "severity is one of " + ", ".join(SEVERITIES))
        cron = self.string(fields, "cron", rule_id=rule_id)
        if cron is not None and (problem := cron_problem(cron)):
            self.error(fields["cron"], f"invalid 'cron' {cron!r}: {problem}", rule_id, CRON_HINT)
        if cron is not None and "every" in fields:
            self.error(fields["cron"], EVERY_OR_CRON, rule_id)
        enabled = self.scalar(fields, "enabled", bool, rule_id)
        labels = self.construct(fields["labels"]) if "labels" in fields else {}
        if not isinstance(labels, dict):
            self.error(fields["labels"], "'labels' must be a mapping", rule_id)
            labels = {}
        return {
            "name": self.string(fields, "name", rule_id=rule_id) or rule_id or "",
            "description": (self.string(fields, "description", rule_id=rule_id) or "").strip(),
            "severity": severity if severity in SEVERITIES else "medium",
            "frameworks": self.strings(fields, "compliance_frameworks", rule_id),
            "controls": self.strings(fields, "controls", rule_id),
            "enabled": True if enabled is None else enabled,
            "every": self.duration(fields, "every", rule_id),
            "cron": cron,
            "evaluation_delay": self.duration(fields, "evaluation_delay", rule_id),
            "settle": self.duration(fields, "settle", rule_id),
            "labels": {str(k): str(v) for k, v in labels.items()},
            "notify": self.strings(fields, "notify", rule_id),
            "runbook_url": self.url(fields, "runbook_url", rule_id),
            "examples": self.examples(fields, rule_id),
        }

    # ---------------------------------------------------------------- examples

    def examples(self, fields: dict[str, yaml.Node], rule_id: str | None) -> tuple[Example, ...]:
        """``examples`` and BeTrace's ``example_violation``, in that order."""
        found: list[Example] = []
        node = fields.get("examples")
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value, start=1):
                example = self._example(item, rule_id, f"example {index}", expect=None)
                if example is not None:
                    found.append(example)
        elif node is not None:
            self.error(node, "'examples' must be a list", rule_id)
        legacy = fields.get("example_violation")
        if legacy is not None:
            example = self._example(legacy, rule_id, "example_violation", expect="violation")
            if example is not None:
                found.append(example)
        return tuple(found)

    def _example(self, node: yaml.Node, rule_id: str | None, default_name: str,
                 expect: Literal["violation", "pass"] | None) -> Example | None:
        fields = self.mapping(node, "an example", rule_id)
        known = EXAMPLE_KEYS if expect is None else LEGACY_EXAMPLE_KEYS
        self.unknown_keys(fields, known, "example ", rule_id)
        name = self.string(fields, "name", rule_id=rule_id) or self.string(
            fields, "description", rule_id=rule_id) or default_name
        if expect is None:
            raw = self.string(fields, "expect", rule_id=rule_id, required=True, owner=node)
            if raw not in {"violation", "pass"}:
                if raw is not None:
                    self.error(fields["expect"], f"'expect' must be violation or pass, not {raw!r}",
                               rule_id)
                return None
            expect = cast("Literal['violation', 'pass']", raw)
        trace = fields.get("trace")
        if not isinstance(trace, yaml.SequenceNode):
            self.error(trace or node, f"{name}: 'trace' must be a list of spans", rule_id)
            return None
        spans = tuple(s for s in (self._span(n, rule_id) for n in trace.value) if s is not None)
        if len(spans) != len(trace.value):
            return None
        return Example(name, expect, spans, self.location(node))

    def _span(self, node: yaml.Node, rule_id: str | None) -> ExampleSpan | None:
        fields = self.mapping(node, "an example span", rule_id)
        self.unknown_keys(fields, SPAN_KEYS, "span ", rule_id)
        name = self.string(fields, "span", rule_id=rule_id)
        if name is None:
            self.error(node, "an example span needs 'span: <name>'", rule_id)
            return None
        attributes = self.construct(fields["attributes"]) if "attributes" in fields else {}
        if not isinstance(attributes, dict):
            self.error(fields["attributes"], "'attributes' must be a mapping", rule_id)
            return None
        status = (self.string(fields, "status", rule_id=rule_id) or "unset").lower()
        kind = (self.string(fields, "kind", rule_id=rule_id) or "internal").lower()
        problems = [(k, v, allowed) for k, v, allowed in
                    (("status", status, SPAN_STATUSES), ("kind", kind, SPAN_KINDS)) if v not in allowed]
        for field_name, bad, allowed in problems:
            self.error(fields[field_name], f"unknown {field_name} {bad!r}", rule_id,
                       f"{field_name} is one of " + ", ".join(sorted(allowed)))
        duration = self.duration(fields, "duration", rule_id)
        start = self.duration(fields, "start", rule_id)
        children_node = fields.get("children")
        children: list[ExampleSpan | None] = []
        if isinstance(children_node, yaml.SequenceNode):
            children = [self._span(c, rule_id) for c in children_node.value]
        elif children_node is not None:
            self.error(children_node, "'children' must be a list of spans", rule_id)
            return None
        events = self._events(fields.get("events"), rule_id)
        if problems or None in children or events is None:
            return None
        return ExampleSpan(
            name=name, service=self.string(fields, "service", rule_id=rule_id),
            attributes={str(k): v for k, v in attributes.items()}, status=status, kind=kind,
            duration_ns=parse_ns(duration) or 0 if duration else 0,
            start_ns=parse_ns(start) or 0 if start else None,
            children=tuple(c for c in children if c is not None), events=events,
        )

    def _events(self, node: yaml.Node | None, rule_id: str | None) -> tuple[ExampleEvent, ...] | None:
        """An example span's ``events``; None when one is malformed (already reported)."""
        if node is None:
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "'events' must be a list of {name, attributes}", rule_id)
            return None
        events: list[ExampleEvent] = []
        for item in node.value:
            fields = self.mapping(item, "an example event", rule_id)
            self.unknown_keys(fields, EVENT_KEYS, "event ", rule_id)
            name = self.string(fields, "name", rule_id=rule_id)
            attributes = self.construct(fields["attributes"]) if "attributes" in fields else {}
            if name is None or not isinstance(attributes, dict):
                self.error(item, "an example event needs 'name: <name>' and 'attributes' as a mapping",
                           rule_id)
                return None
            events.append(ExampleEvent(name, {str(k): v for k, v in attributes.items()}))
        return tuple(events)
