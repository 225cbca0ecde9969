"""Load rule files: every ``*.yaml``/``*.yml`` under a directory, every error collected.

One broken rule never hides another: ``load_paths`` returns the valid rules together
with every error and warning, each naming its file, line and column.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import yaml

from checker.errors import RuleError, RuleSemanticError, RuleSyntaxError, SourceLocation
from checker.files import files_under
from checker.rules import model as m
from checker.rules.fields import FieldReader
from checker.rules.lint import Severity, lint
from checker.rules.normalise import normalise
from checker.rules.parse import ConditionError, parse_condition
from checker.rules.rule import Rule
from checker.rules.source import ScalarMap, SourceText

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SUFFIXES = (".yaml", ".yml")


@dataclass
class RuleSet:
    """Valid rules plus everything wrong or suspicious that loading found."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    warnings: list[RuleError] = field(default_factory=list)

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, if it loaded."""
        return next((r for r in self.rules if r.id == rule_id), None)


def load_paths(paths: Iterable[Path]) -> RuleSet:
    """Load every rule file; duplicate ids across files are errors naming both places."""
    files, missing = files_under(paths, SUFFIXES)
    result = combine(load_file(path) for path in files)
    result.errors[:0] = [RuleError("no such file or directory", location=SourceLocation(p)) for p in missing]
    return result


def combine(loaded: Iterable[RuleSet]) -> RuleSet:
    """One rule set from per-file ones, in order; a repeated id is an error naming both places."""
    result = RuleSet()
    seen: dict[str, Rule] = {}
    for part in loaded:
        result.errors.extend(part.errors)
        result.warnings.extend(part.warnings)
        for rule in part.rules:
            if (first := seen.get(rule.id)) is not None:
                result.errors.append(RuleSemanticError(
                    f"duplicate rule id, first defined at {first.location}",
                    location=rule.location, rule_id=rule.id,
                    hint="rule ids must be unique across all rule files",
                ))
                continue
            seen[rule.id] = rule
            result.rules.append(rule)
    return result


def load_file(path: Path) -> RuleSet:
    """Load one file; its problems are returned, never raised."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return RuleSet(errors=[RuleError(f"cannot read: {err}", location=SourceLocation(path))])
    return load_text(text, path)


def load_text(text: str, path: Path | str) -> RuleSet:
    """Load rules from YAML text; ``path`` is used in messages only."""
    source = SourceText(text)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return RuleSet(errors=[RuleSyntaxError(
            f"invalid YAML: {err.problem or err.context}",
            location=SourceLocation(path, line, col),
            context=source.context(line, col) if line and col else None,
        )])
    result = RuleSet()
    if root is None:
        result.warnings.append(RuleError("file holds no rules", location=SourceLocation(path)))
        return result
    reader = FieldReader(path, source, result.errors, result.warnings)
    for node in reader.rule_nodes(root):
        rule = _load_rule(node, reader, text)
        if rule is not None:
            result.rules.append(rule)
    return result


def _load_rule(node: yaml.MappingNode, reader: FieldReader, text: str) -> Rule | None:
    fields = reader.mapping(node, "rule")
    rule_id = reader.string(fields, "id", required=True, owner=node)
    errors_before = len(reader.errors)
    if rule_id is not None and not RULE_ID.fullmatch(rule_id):
        reader.error(fields["id"], f"invalid rule id {rule_id!r}", rule_id,
                     "ids use letters, digits, '.', '_' and '-', starting with a letter or digit")
    condition_node = fields.get("condition")
    invariant, legacy = None, False
    condition = reader.string(fields, "condition", required=True, rule_id=rule_id, owner=node)
    if condition is not None and isinstance(condition_node, yaml.ScalarNode):
        parsed = _condition(condition, condition_node, reader, text, rule_id)
        if parsed is not None:
            invariant, legacy = parsed
    meta = reader.metadata(fields, rule_id)
    if rule_id is None or invariant is None or len(reader.errors) > errors_before:
        return None
    data = reader.construct(node)
    version = hashlib.sha256(
        json.dumps(data, sort_keys=True, default=str).encode()
    ).hexdigest()
    return Rule(
        id=rule_id, condition=condition or "", invariant=invariant, legacy=legacy,
        location=reader.location(node), version=version, **meta,
    )


def _condition(
    text: str, node: yaml.ScalarNode, reader: FieldReader, file_text: str, rule_id: str | None,
) -> tuple[m.Invariant, bool] | None:
    places = ScalarMap(node, file_text)

    def problem(kind: type[RuleError], message: str, pos: m.Pos, hint: str | None) -> RuleError:
        line, col = places.locate(pos)
        return kind(message, location=SourceLocation(reader.path, line, col), rule_id=rule_id,
                    hint=hint, context=reader.source.context(line, col))

    try:
        parsed = parse_condition(text)
    except ConditionError as err:
        reader.errors.append(problem(RuleSyntaxError, err.message, err.pos, err.hint))
        return None
    failed = False
    for issue in lint(parsed):
        error = problem(RuleSemanticError, issue.message, issue.pos, issue.hint)
        if issue.severity is Severity.ERROR:
            reader.errors.append(error)
            failed = True
        else:
            reader.warnings.append(error)
    try:
        invariant = normalise(parsed)
    except ConditionError as err:
        reader.errors.append(problem(RuleSemanticError, err.message, err.pos, err.hint))
        return None
    return (None if failed else (invariant, isinstance(parsed, m.BareRule)))
