"""The rule package's own failures; each becomes a ``RuleError`` with a location where it is caught."""

from __future__ import annotations

from typing import TYPE_CHECKING

from yaml.composer import ComposerError

if TYPE_CHECKING:
    from yaml.error import Mark

    from checker.rules import model as m


class ConditionError(Exception):
    """A condition that does not parse; ``pos`` is inside the condition text."""

    def __init__(self, message: str, pos: m.Pos, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.hint = hint


class DurationTooLongError(ValueError):
    """A duration longer than ``MAX_DURATION_NS``; a ValueError so config validation reports it."""


class BoundedYAMLError(ComposerError):
    """A file the loader refuses though PyYAML would take it; ``hint`` says what to write instead."""

    def __init__(self, problem: str, mark: Mark | None, hint: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.hint = hint
