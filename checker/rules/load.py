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

import structlog
import yaml

from checker.errors import (
    RuleError,
    RuleFileRefusedError,
    RuleSemanticError,
    RuleSyntaxError,
    SourceLocation,
)
from checker.files import files_under
from checker.rules import model as m
from checker.rules.bounded_yaml import compose
from checker.rules.errors import BoundedYAMLError, ConditionError
from checker.rules.fields import FieldReader
from checker.rules.lint import IssueLevel, lint
from checker.rules.normalise import normalise
from checker.rules.parse import parse_condition
from checker.rules.rule import Rule
from checker.rules.source import ScalarMap, SourceText

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

log = structlog.get_logger(__name__)
RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RULE_ID_HINT = "ids use letters, digits, '.', '_' and '-', starting with a letter or digit"
SUFFIXES = (".yaml", ".yml")
# 256 KiB holds a hundred rules with examples, and loads in seconds whatever it holds.
MAX_FILE_BYTES = 2**18


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
    """Load one file; its problems are returned, never raised.

    A loader bug (an exception the limits should have prevented) costs this file only, never
    the daemon or the other files; its traceback is logged for a bug report.
    """
    try:
        return _load_file(path)
    except Exception as err:
        log.exception("rules.load_crashed", file=str(path))
        return RuleSet(errors=[RuleError(f"internal error while loading: {type(err).__name__}: {err}",
                                         location=SourceLocation(path),
                                         hint="please report this, with the file")])


def _load_file(path: Path) -> RuleSet:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        return RuleSet(errors=[RuleFileRefusedError(f"cannot read: {err}", location=SourceLocation(path))])
    if len(data) > MAX_FILE_BYTES:
        return RuleSet(errors=[RuleFileRefusedError(
            f"file larger than {MAX_FILE_BYTES // 2**10} KiB, not loaded", location=SourceLocation(path),
            hint="rule files are a few KB; split the rules into several files")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[:err.start].decode("utf-8")
        line, col = _line_col(before, len(before))
        return RuleSet(errors=[RuleFileRefusedError(
            f"not UTF-8: byte {data[err.start]:#04x}", location=SourceLocation(path, line, col),
            hint="save the file as UTF-8")])
    return load_text(text, path)


def load_text(text: str, path: Path | str) -> RuleSet:
    """Load rules from YAML text; ``path`` is used in messages only."""
    source = SourceText(text)
    try:
        root, duplicates = compose(text)
    except yaml.YAMLError as err:
        return RuleSet(errors=[_yaml_error(err, text, path, source)])
    result = RuleSet()
    if root is None:
        result.warnings.append(RuleError("file holds no rules", location=SourceLocation(path)))
        return result
    reader = FieldReader(path, source, result.errors, result.warnings)
    for duplicate in duplicates:
        reader.error(duplicate.key, f"duplicate key {duplicate.key.value!r}, first at line "
                     f"{duplicate.first.start_mark.line + 1}",
                     hint="YAML would keep only the last one; remove or merge one of them")
    for node in reader.rule_nodes(root):
        rule = _load_rule(node, reader, text)
        if rule is not None and not any(_inside(d.key, node) for d in duplicates):
            result.rules.append(rule)
    return result


def _yaml_error(err: yaml.YAMLError, text: str, path: Path | str, source: SourceText) -> RuleError:
    """PyYAML's error at its place: a mark for syntax errors, a character offset for the reader."""
    line: int | None = None
    col: int | None = None
    if isinstance(err, yaml.MarkedYAMLError):
        problem = err.problem or err.context
        if mark := err.problem_mark or err.context_mark:
            line, col = mark.line + 1, mark.column + 1
    elif isinstance(err, yaml.reader.ReaderError):  # only for str input: character is a code point
        problem = f"control character U+{err.character:04X} is not allowed in YAML"
        line, col = _line_col(text, err.position)
    else:  # pragma: no cover - PyYAML raises only the two kinds above
        problem = str(err)
    refused = isinstance(err, (BoundedYAMLError, yaml.reader.ReaderError))
    return (RuleFileRefusedError if refused else RuleSyntaxError)(
        f"invalid YAML: {problem}" if not isinstance(err, BoundedYAMLError) else str(problem),
        location=SourceLocation(path, line, col),
        context=source.context(line, col) if line and col else None,
        hint=err.hint if isinstance(err, BoundedYAMLError) else None,
    )


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _inside(inner: yaml.Node, outer: yaml.Node) -> bool:
    return outer.start_mark.index <= inner.start_mark.index < outer.end_mark.index


def _load_rule(node: yaml.MappingNode, reader: FieldReader, text: str) -> Rule | None:
    fields = reader.mapping(node, "rule")
    rule_id = reader.string(fields, "id", required=True, owner=node)
    errors_before = len(reader.errors)
    if rule_id is not None and not RULE_ID.fullmatch(rule_id):
        reader.error(fields["id"], f"invalid rule id {rule_id!r}", rule_id, RULE_ID_HINT)
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
    version = hashlib.sha256(
        json.dumps(_json_keys(reader.construct(node)), sort_keys=True, default=str).encode()
    ).hexdigest()
    return Rule(
        id=rule_id, condition=condition or "", invariant=invariant, legacy=legacy,
        location=reader.location(node), version=version, **meta,
    )


def _json_keys(value: object) -> object:
    """Keys as text, so that ``true:`` next to ``id:`` (or a date key) can be sorted and dumped."""
    if isinstance(value, dict):
        return {str(k): _json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_keys(v) for v in value]
    return value


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
        if issue.level is IssueLevel.ERROR:
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
