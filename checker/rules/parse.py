"""Parse a condition string with the LALR grammar and explain failures in plain words."""

from __future__ import annotations

from functools import lru_cache
from typing import cast

from lark import Lark, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternRE, TerminalDef

from checker.rules import model as m
from checker.rules.durations import UNIT_PATTERN
from checker.rules.errors import ConditionError
from checker.rules.transform import ToAst
from checker.rules.vocabulary import CLAUSE_KEYWORDS, INTRINSIC_SCOPES, OPERATOR_KEYWORDS

# How each terminal is described in "expected ..." messages; a keyword terminal (WHEN, ...) is
# named after its word in vocabulary.KEYWORDS, and described by its lowercase name.
_TERMINAL_WORDS = {
    "LBRACE": "{", "RBRACE": "}", "LPAR": "(",
    "RPAR": ")", "LSQB": "[", "RSQB": "]", "COMMA": ",", "WHERE": ".where(",
    "TRACE_HAS": "trace.has(", "TRACE_COUNT": "trace.count(", "COUNT": "count(", "ANY_SPAN": "span.where(",
    "DOTTED_NAME": "a name", "STRING": "a quoted string", "NUMBER": "a number",
    "DURATION": "a duration", "INTRINSIC": "an intrinsic like span:duration",
    "CMP_OP": "a comparison (== != > >= < <=)", "EVERY": "every",
    "RELATION": "has child, has descendant, has sibling or followed by", "$END": "the end of the condition",
}


_CLAUSE_TERMINALS = frozenset(word.upper() for word in CLAUSE_KEYWORDS)
# Terminals to hint "quote it" for when one stands where a name belongs; true/false are values.
_WORD_TERMINALS = _CLAUSE_TERMINALS | {word.upper() for word in OPERATOR_KEYWORDS}
# Far above any real rule: the rules library nests and/or/not 2 levels deep, with at most 7 terms.
MAX_NESTING = 64
MAX_TERMS = 1000
# Parsing costs about 50 µs a token: this bounds one condition to a few seconds.
MAX_CONDITION_CHARS = 65_536
# The terminals whose words the vocabulary owns (grammar.lark holds placeholders for them).
# A bare number followed by a letter is not a duration: `5min` is an error, not 5m and `in`.
_VOCABULARY_PATTERNS = {
    "INTRINSIC": rf"({'|'.join(INTRINSIC_SCOPES)}):[A-Za-z_]+",
    "DURATION": rf"-?\d+(\.\d+)?({UNIT_PATTERN})(?![A-Za-z0-9_])",
}
_TERMS = (m.SpanCheck, m.CountCheck, m.RelationCheck, m.Compare, m.InList, m.Matches, m.Contains, m.Truthy)


@lru_cache(maxsize=1)
def parser() -> Lark:
    """Build the LALR parser once per process; nothing is cached on disk.

    The AST is built while parsing (no parse tree, no positions on tree nodes): three times
    faster than transforming a tree afterwards, and no recursion however deep the input.
    """
    return Lark.open(
        "grammar.lark",
        rel_to=__file__,
        parser="lalr",
        lexer="basic",
        maybe_placeholders=True,
        transformer=ToAst(),
        edit_terminals=_from_vocabulary,
    )


def _from_vocabulary(terminal: TerminalDef) -> None:
    """Give INTRINSIC and DURATION the patterns spelled by ``vocabulary`` and ``durations``."""
    pattern = _VOCABULARY_PATTERNS.get(terminal.name)
    if pattern is not None:
        terminal.pattern = PatternRE(pattern)


def parse_condition(text: str) -> m.ParsedCondition:
    """Parse ``text`` into a ClausedRule or a legacy BareRule.

    :raises ConditionError: with the position and what was expected there.
    """
    if len(text) > MAX_CONDITION_CHARS:
        raise ConditionError(f"condition longer than {MAX_CONDITION_CHARS} characters", m.NO_POS,
                             "split the rule in several rules")
    try:
        parsed = cast("m.ParsedCondition", parser().parse(text))  # built by ToAst while parsing
    except UnexpectedInput as err:
        raise _explain(err, text) from None
    _check_size(parsed)
    return parsed


def _check_size(parsed: m.ParsedCondition) -> None:
    """Bound the condition before anything walks it recursively.

    The linter, printer, compiler and evaluator all recurse over the AST, so nesting
    (``not not ...``, parentheses mixing and/or) must stay far below Python's recursion
    limit; flat and/or chains add no depth, and the term count bounds the work and the Tempo
    searches a rule costs per window. Iterative, so the check itself cannot overflow.

    :raises ConditionError: at the first place beyond a limit.
    """
    terms = 0
    stack: list[tuple[object, int]] = [(parsed, 0)]
    while stack:
        node, depth = stack.pop()
        children, nested = _parts(node)
        depth += nested
        if depth > MAX_NESTING:
            raise ConditionError(f"and/or/not nested more than {MAX_NESTING} levels deep",
                                 getattr(node, "pos", m.NO_POS), "write the condition flatter: "
                                 "a or b or c needs no parentheses, and not not x is x")
        terms += isinstance(node, _TERMS)
        if terms > MAX_TERMS:
            raise ConditionError(f"more than {MAX_TERMS} checks and comparisons in one condition",
                                 getattr(node, "pos", m.NO_POS), "split the rule in several rules, "
                                 "or use attr in [a, b, ...] for many values")
        stack.extend((child, depth) for child in reversed(children))


def _parts(node: object) -> tuple[tuple[object, ...], int]:
    """A node's children, and whether it is a level of and/or/not nesting."""
    match node:
        case m.And() | m.Or():
            return node.items, 1
        case m.Not():
            return (node.item,), 1
        case m.ClausedRule():
            return tuple(clause.cond for clause in node.clauses), 0
        case m.BareRule():
            return (node.cond,), 0
        case m.SpanCheck():
            return node.where, 0
        case m.RelationCheck():
            return (node.left, node.right), 0
    return (), 0


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
        if str(token) in {"has", "followed"} and "RELATION" in err.expected:
            hint = "spans relate by has child, has descendant, has sibling or followed by"
        elif "RBRACE" in err.expected:
            hint = "a { ... } block is not closed before this point"
        elif token.type in _WORD_TERMINALS and {"DOTTED_NAME", "STRING"} & set(err.expected):
            hint = f'{token} is a keyword; quote it to use it as a name or value: "{token}"'
        elif token.type in _CLAUSE_TERMINALS:
            hint = "write when { A } always { B } never { C }, each block at most once"
        return ConditionError(f"unexpected {str(token)!r}, expected {expected}", pos, hint)
    return ConditionError(str(err), m.Pos(err.line, err.column))  # pragma: no cover
