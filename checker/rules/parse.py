"""Parse a condition string with the LALR grammar and explain failures in plain words."""

from __future__ import annotations

from functools import lru_cache

from lark import Lark, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from checker.rules import model as m
from checker.rules.transform import LiteralError, ToAst

# How each terminal is described in "expected ..." messages.
_TERMINAL_WORDS = {
    "WHEN": "when", "ALWAYS": "always", "NEVER": "never", "AND": "and", "OR": "or",
    "NOT": "not", "IN": "in", "MATCHES": "matches", "CONTAINS": "contains",
    "TRUE": "true", "FALSE": "false", "LBRACE": "{", "RBRACE": "}", "LPAR": "(",
    "RPAR": ")", "LSQB": "[", "RSQB": "]", "COMMA": ",", "WHERE": ".where(",
    "TRACE_HAS": "trace.has(", "TRACE_COUNT": "trace.count(", "COUNT": "count(",
    "DOTTED_NAME": "a name", "STRING": "a quoted string", "NUMBER": "a number",
    "DURATION": "a duration", "INTRINSIC": "an intrinsic like span:duration",
    "CMP_OP": "a comparison (== != > >= < <=)", "$END": "the end of the condition",
}


KEYWORDS = frozenset({"WHEN", "ALWAYS", "NEVER", "AND", "OR", "NOT", "IN", "MATCHES", "CONTAINS"})


class ConditionError(Exception):
    """A condition that does not parse; ``pos`` is inside the condition text."""

    def __init__(self, message: str, pos: m.Pos, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.hint = hint


@lru_cache(maxsize=1)
def parser() -> Lark:
    """Build the LALR parser once per process; nothing is cached on disk."""
    return Lark.open(
        "grammar.lark",
        rel_to=__file__,
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse_condition(text: str) -> m.ParsedCondition:
    """Parse ``text`` into a ClausedRule or a legacy BareRule.

    :raises ConditionError: with the position and what was expected there.
    """
    try:
        tree = parser().parse(text)
        return ToAst().transform(tree)
    except VisitError as err:
        orig = err.orig_exc
        if isinstance(orig, LiteralError):
            raise ConditionError(str(orig), orig.pos, orig.hint) from None
        raise
    except UnexpectedInput as err:
        raise _explain(err, text) from None


def _describe(terminals: set[str]) -> str:
    words = {_TERMINAL_WORDS.get(t, t.lower()) for t in terminals if not t.startswith("__")}
    # Closing brackets first: a missing one is the most common mistake.
    ordered = sorted(words, key=lambda w: (w not in {"}", ")", "]"}, w))
    if len(ordered) > 8:
        ordered = [*ordered[:8], "..."]
    return ", ".join(ordered)


def _end_pos(text: str) -> m.Pos:
    lines = text.rstrip().split("\n")
    return m.Pos(len(lines), len(lines[-1]) + 1)


def _explain(err: UnexpectedInput, text: str) -> ConditionError:
    if isinstance(err, UnexpectedCharacters):
        at = err.pos_in_stream or 0
        char = text[at] if at < len(text) else ""
        pos = m.Pos(err.line, err.column)
        if char == '"':
            return ConditionError("unterminated string", pos, 'close it with " on the same line')
        if char in "=&|!":
            return ConditionError(
                f"unexpected character {char!r}", pos,
                "compare with ==, combine with and / or, negate with not",
            )
        return ConditionError(f"unexpected character {char!r}", pos)
    if isinstance(err, UnexpectedToken):
        token = err.token
        expected = _describe(set(err.expected))
        if token.type == "$END":
            return ConditionError(f"unexpected end of condition, expected {expected}", _end_pos(text))
        pos = m.Pos(token.line or 1, token.column or 1)
        hint = None
        if "RBRACE" in err.expected:
            hint = "a { ... } block is not closed before this point"
        elif token.type in KEYWORDS and {"DOTTED_NAME", "STRING"} & set(err.expected):
            hint = f'{token} is a keyword; quote it to use it as a name or value: "{token}"'
        elif token.type in {"WHEN", "ALWAYS", "NEVER"}:
            hint = "write when { A } always { B } never { C }, each block at most once"
        return ConditionError(f"unexpected {str(token)!r}, expected {expected}", pos, hint)
    return ConditionError(str(err), m.Pos(err.line, err.column))  # pragma: no cover
