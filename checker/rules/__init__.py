"""Rule files, the rule language and its readings: the bottom layer, with the trace model.

Callers load files (``load_paths``, ``load_file``, ``load_text``) into a ``RuleSet`` of
``Rule`` objects; the AST (``checker.rules.model``), the vocabulary and the printer are for
the layers that compile and explain rules.
"""

from checker.rules.load import RuleSet, load_file, load_paths, load_text
from checker.rules.rule import Rule

__all__ = ["Rule", "RuleSet", "load_file", "load_paths", "load_text"]
