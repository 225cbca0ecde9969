"""Map positions inside a YAML scalar back to the file, and show a line with a caret.

A condition is a YAML string; errors must point into the *file*, whatever the scalar's
style (plain, quoted, literal ``|`` or folded ``>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import yaml

    from checker.rules.model import Pos


@dataclass(frozen=True)
class SourceText:
    """A file's text, for quoting lines in error messages."""

    text: str

    def context(self, line: int, column: int) -> str:
        """The 1-based ``line`` with a caret under ``column``."""
        lines = self.text.splitlines()
        if not 1 <= line <= len(lines):
            return ""
        source = lines[line - 1].expandtabs(1)
        gutter = f"{line:>5} | "
        return f"{gutter}{source}\n{' ' * (len(gutter) - 2)}| {' ' * (column - 1)}^"


class ScalarMap:
    """Where each character of a scalar's value stands in the file.

    Aligns the value with the raw source greedily: folding, indentation, quotes and
    escapes only ever add source characters, so each value character is the next
    matching one. When the alignment fails the scalar's start is used.
    """

    def __init__(self, node: yaml.ScalarNode, text: str) -> None:
        start = node.start_mark
        self._fallback = (start.line + 1, start.column + 1)
        begin = start.index
        if node.style in {"|", ">"}:
            newline = text.find("\n", begin)
            begin = newline + 1 if newline >= 0 else begin
        self._places = self._align(str(node.value), text, begin, node.end_mark.index)
        self._line_starts = [0]
        for i, ch in enumerate(str(node.value)):
            if ch == "\n":
                self._line_starts.append(i + 1)

    @staticmethod
    def _align(value: str, text: str, begin: int, end: int) -> list[tuple[int, int]] | None:
        places: list[tuple[int, int]] = []
        line = text.count("\n", 0, begin) + 1
        col = begin - (text.rfind("\n", 0, begin) + 1) + 1
        i = begin
        for ch in value:
            while i < end and text[i] != ch:
                line, col = (line + 1, 1) if text[i] == "\n" else (line, col + 1)
                i += 1
            if i >= end:
                return None
            places.append((line, col))
            line, col = (line + 1, 1) if text[i] == "\n" else (line, col + 1)
            i += 1
        return places

    def locate(self, pos: Pos) -> tuple[int, int]:
        """File line and column of a position inside the value."""
        if self._places is None or pos.line > len(self._line_starts):
            return self._fallback
        index = self._line_starts[pos.line - 1] + pos.column - 1
        if index >= len(self._places):
            if not self._places:
                return self._fallback
            line, col = self._places[-1]
            return line, col + 1 + index - len(self._places)
        return self._places[index]
