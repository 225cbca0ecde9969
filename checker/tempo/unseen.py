"""Warnings for what a rule uses and Tempo never saw: the rule would likely never match.

Warnings, never errors: Tempo may simply not have had such traffic in the period, and its
tag API lists values only up to a size (``max_bytes_per_tag_values_query``), so a value of
a busy attribute may be missing from the list. Suggestions are the closest seen spellings
(``difflib.get_close_matches``), so a typo shows its fix.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from checker.errors import RuleSemanticError
from checker.rules.usage import usage
from checker.tempo.client import TempoClient
from checker.tempo.seen import seen

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from checker.rules import Rule
    from checker.rules import model as m
    from checker.rules.usage import Usage
    from checker.tempo.seen import Seen
    from checker.tempo.settings import TempoSettings

SUGGESTIONS = 3
WHERE = {None: "on spans or resources", "span": "on spans", "resource": "on resources",
         "event": "on span events"}


async def against_tempo(rules: Sequence[Rule], settings: TempoSettings, start: int, end: int,
                        period: str) -> list[RuleSemanticError]:
    """Every rule's warnings against what Tempo saw in [start, end]; raises ``TempoError``."""
    used = [usage(rule.invariant) for rule in rules]
    async with TempoClient(settings) as client:
        found = await seen(client, used, start, end)
    return [warning for rule, used_by_rule in zip(rules, used, strict=True)
            for warning in unseen(rule, used_by_rule, found, period)]


def unseen(rule: Rule, used: Usage, seen: Seen, period: str) -> list[RuleSemanticError]:
    """One warning per span name, attribute and value of ``rule`` that Tempo did not see in ``period``."""
    messages = [*_span_names(used, seen, period), *_attributes(used, seen, period)]
    return [RuleSemanticError(message, location=rule.location, rule_id=rule.id) for message in messages]


def _span_names(used: Usage, seen: Seen, period: str) -> Iterator[str]:
    for name in used.span_names:
        if name not in seen.span_names:
            suggestion = _did_you_mean(name, seen.span_names)
            yield f"span name {_quoted(name)} never seen in Tempo {period}{suggestion}"


def _attributes(used: Usage, seen: Seen, period: str) -> Iterator[str]:
    for attr in used.attributes:
        if not seen.scopes_of(attr):
            yield f"attribute {_written(attr)} never seen {WHERE[attr.scope]} {period}{_seen(attr, seen)}"
            continue
        values = seen.values_of(attr)
        for value in used.values.get(attr, []):
            if value not in values:
                hint = _did_you_mean(value, values) if values else " (Tempo listed no string values of it)"
                yield f"value {_quoted(value)} of {_written(attr)} never seen in Tempo {period}{hint}"


def _seen(attr: m.Attr, seen: Seen) -> str:
    """``; seen: a, b``: the closest attribute names seen where ``attr`` is looked up."""
    scopes = (attr.scope,) if attr.scope else tuple(seen.names)
    names = frozenset().union(*(seen.names.get(scope, frozenset()) for scope in scopes))
    close = _close(attr.name, names)
    return f"; seen: {', '.join(close)}" if close else ""


def _did_you_mean(text: str, candidates: Iterable[str]) -> str:
    close = _close(text, candidates)
    return f"; did you mean {' or '.join(_quoted(c) for c in close)}?" if close else ""


def _close(text: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(text, sorted(candidates), n=SUGGESTIONS)


def _written(attr: m.Attr) -> str:
    return f"{attr.scope}.{attr.name}" if attr.scope else attr.name


def _quoted(text: str) -> str:
    """A remote or rule string in double quotes, escaped so that it cannot break the line."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
