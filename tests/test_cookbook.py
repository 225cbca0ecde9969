"""The README's recipes for real instrumentation: they load without warnings and pass their examples."""

from __future__ import annotations

import re
from pathlib import Path

from checker.engine import run_examples
from checker.rules.load import load_text

README = Path(__file__).resolve().parents[1] / "README.md"


def cookbook() -> str:
    """The YAML block after the ``<!-- cookbook -->`` marker."""
    found = re.search(r"<!-- cookbook -->\n```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert found is not None, "README.md has no cookbook block"
    return found.group(1)


def test_recipes_load_cleanly() -> None:
    loaded = load_text(cookbook(), "README.md")
    assert [] == loaded.errors
    assert [] == [str(w) for w in loaded.warnings]
    assert len(loaded.rules) >= 4


def test_every_example_gives_its_verdict() -> None:
    rules = load_text(cookbook(), "README.md").rules
    results = list(run_examples(rules))
    assert {rule.id for rule in rules} == {r.rule.id for r in results}  # every recipe has examples
    assert [] == [f"{r.rule.id}: {r.example.name}" for r in results if not r.passed]
