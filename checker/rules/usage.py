"""What a rule relies on the traces having: span names, attribute names, string values.

A rule whose span name or attribute is misspelt parses, validates and runs, and never
matches, which looks exactly like a rule that passes. ``validate --tempo`` compares what
``usage`` collects with what Tempo has seen (``checker.tempo.seen``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from checker.rules import model as m
from checker.rules.lint import walk
from checker.rules.vocabulary import Intrinsic

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass
class Usage:
    """One rule's names, in the order written; ``values`` only of ``==`` and ``in`` on strings.

    Only equality can be checked against a list of seen values: ``!=``, ``not in``,
    ``matches`` and ``contains`` hold for values nobody ever listed.
    """

    span_names: list[str] = field(default_factory=list)
    attributes: list[m.Attr] = field(default_factory=list)
    values: dict[m.Attr, list[str]] = field(default_factory=dict)

    def add_span_name(self, name: str) -> None:
        """Note a span name once."""
        if name not in self.span_names:
            self.span_names.append(name)

    def add_value(self, attr: m.Attr, value: m.Scalar) -> None:
        """Note a value ``attr`` is compared with for equality; numbers and booleans are not listed."""
        if not isinstance(value, str):
            return
        if attr.intrinsic:  # span:name == "x" names a span; other intrinsics are lint's
            if Intrinsic.named(attr.name) is Intrinsic.NAME:
                self.add_span_name(value)
            return
        listed = self.values.setdefault(attr, [])
        if value not in listed:
            listed.append(value)


def checked_names(node: object) -> Iterator[str | None]:
    """The span names a check reads: a span check's own, or each side of a count; None: any span."""
    match node:
        case m.SpanCheck():
            yield node.name
        case m.CountCheck():
            counts = (node.left, node.right) if isinstance(node.right, m.SpanCount) else (node.left,)
            yield from (count.name for count in counts)


def usage(invariant: m.Invariant) -> Usage:
    """Every span name, attribute and equality value ``invariant`` uses."""
    used = Usage()
    conditions = (invariant.when, invariant.always, invariant.never)
    for node in (node for cond in conditions if cond is not None for node in walk(cond)):
        for name in checked_names(node):
            if name is not None:  # any span has no name to check
                used.add_span_name(name)
        match node:
            case m.Compare() | m.InList() | m.Matches() | m.Contains() | m.Truthy():
                _attribute(used, node)
    return used


def _attribute(used: Usage, node: m.Compare | m.InList | m.Matches | m.Contains | m.Truthy) -> None:
    attr = node.attr
    if not attr.intrinsic and attr not in used.attributes:
        used.attributes.append(attr)
    if isinstance(node, m.Compare) and node.op == "==":
        used.add_value(attr, node.value)
    elif isinstance(node, m.InList) and not node.negated:
        for value in node.values:
            used.add_value(attr, value)
