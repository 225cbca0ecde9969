"""Errors users see, each carrying where the problem is.

Hierarchy::

    CheckerError
     ├── RuleError                 a rule file or rule is wrong (exit code 2)
     │    ├── RuleSyntaxError      the condition does not parse
     │    │    └── RuleFileRefusedError  the file is refused before its rules are read
     │    └── RuleSemanticError    it parses but means nothing sensible
     ├── UsageError                a command-line or config value that cannot be used (exit code 2)
     │    └── ConfigError          the settings (config file, BETRACE_* environment)
     ├── TraceSourceError          traces could not be read or reached (exit code 3)
     │    └── TempoError           Tempo failed or answered something unusable
     └── StoreError                the store could not be opened or written (exit code 3)
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

# Exit codes, for every command.
EXIT_OK, EXIT_FOUND, EXIT_INVALID, EXIT_SOURCE = 0, 1, 2, 3

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class SourceLocation:
    """A place in a file, 1-based, printed the way editors and compilers do."""

    path: Path | str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        text = str(self.path)
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text


class CheckerError(Exception):
    """Root of every error the checker reports to a user.

    The message says what is wrong; ``location`` says where, ``hint`` what to do,
    and ``context`` shows the offending source line with a caret under it.
    """

    def __init__(
        self,
        message: str,
        *,
        location: SourceLocation | None = None,
        rule_id: str | None = None,
        hint: str | None = None,
        context: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.rule_id = rule_id
        self.hint = hint
        self.context = context

    def __str__(self) -> str:
        head = f"{self.location}: " if self.location else ""
        rule = f"rule {self.rule_id}: " if self.rule_id else ""
        text = f"{head}{rule}{self.message}"
        if self.context:
            text += "\n" + self.context.rstrip("\n")
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return visible(text)


def visible(text: str) -> str:
    """``text`` with control, format (zero-width, bidi) and surrogate characters escaped.

    Rule names, ids, messages and Tempo's answers can carry them; printed raw they hide or
    reorder what the reader sees (Trojan Source) or drive the terminal.
    """
    return "".join(_escape(c) if c not in "\n\t" and unicodedata.category(c) in _INVISIBLE else c
                   for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class RuleError(CheckerError):
    """A rule file or one of its rules is invalid."""


class RuleSyntaxError(RuleError):
    """A condition that the grammar does not accept."""


class RuleFileRefusedError(RuleSyntaxError):
    """A rule file refused before its rules are read.

    Unreadable, too large, not UTF-8 text, control characters, or beyond the loader's
    nesting and alias limits. ``validate`` exits 2 for these (input it will not read) and
    1 for rules it read and found invalid, so a hostile file is never taken for a typo.
    """


class RuleSemanticError(RuleError):
    """A condition that parses but cannot mean what its author intended."""


class UsageError(CheckerError):
    """An option's value cannot be used: a time, a duration, a header."""


class TraceSourceError(CheckerError):
    """Traces could not be read (bad file, bad JSON) or reached."""


class ConfigError(UsageError):
    """The config file or environment is invalid; ``problems`` lists every one."""

    def __init__(self, message: str, problems: list[str], *, location: SourceLocation | None = None) -> None:
        super().__init__(message + "".join(f"\n  {p}" for p in problems), location=location,
                         hint="every key, its environment variable and default are in the "
                         "configuration reference, docs/daemon.md")
        self.problems = problems
