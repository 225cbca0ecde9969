"""The rules the daemon runs, reloaded from ``rules_dir`` on change.

A file that fails to load keeps the rules it last loaded without errors (its errors are reported,
not fatal), and until it has loaded cleanly once its valid rules run; a deleted file's rules
stop; a rule whose text changed is a new version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from checker.errors import RuleError, SourceLocation
from checker.files import files_under
from checker.rules.load import SUFFIXES, RuleSet, combine, load_file

if TYPE_CHECKING:
    from pathlib import Path

    from checker.rules.rule import Rule


@dataclass
class Reload:
    """What a reload changed; ``kept`` are files that failed and run their last good rules."""

    added: list[Rule] = field(default_factory=list)
    changed: list[Rule] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    warnings: list[RuleError] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


class LiveRules:
    """The enabled rules of one directory, each file's last good version kept."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rules: dict[str, Rule] = {}
        self.errors: list[RuleError] = []
        self._clean: dict[Path, RuleSet] = {}  # each file's last version loaded without errors

    def reload(self) -> Reload:
        """Read the directory again and say what changed."""
        files, missing = files_under([self.directory], SUFFIXES)
        if missing:
            self.errors = [RuleError("rules directory does not exist (keeping the rules loaded before)",
                                     location=SourceLocation(self.directory),
                                     hint="create it or fix `rules_dir` in the config")]
            return Reload(errors=list(self.errors))
        result = Reload()
        clean: dict[Path, RuleSet] = {}
        running: list[RuleSet] = []
        for path in files:
            loaded = load_file(path)
            result.errors.extend(loaded.errors)
            result.warnings.extend(loaded.warnings)
            if not loaded.errors:
                clean[path] = loaded
            elif path in self._clean:
                clean[path] = self._clean[path]
                result.kept.append(path)
            # A file never loaded without errors runs the rules in it that are valid.
            running.append(clean.get(path) or RuleSet(rules=loaded.rules))
        merged = combine(running)
        result.errors.extend(merged.errors)
        rules = {rule.id: rule for rule in merged.rules if rule.enabled}
        result.added = [rule for rule_id, rule in rules.items() if rule_id not in self.rules]
        result.changed = [rule for rule_id, rule in rules.items()
                          if rule_id in self.rules and self.rules[rule_id].version != rule.version]
        result.removed = sorted(set(self.rules) - set(rules))
        self._clean, self.rules, self.errors = clean, rules, result.errors
        return result
