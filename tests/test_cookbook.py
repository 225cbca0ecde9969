"""The documented rules: the tour's and the cookbook's load without warnings and pass their examples."""

from __future__ import annotations

from typing import TYPE_CHECKING

from docs_text import block_after

from checker.config import load_settings
from checker.engine import run_examples
from checker.rules.load import load_text

if TYPE_CHECKING:
    from pathlib import Path


def cookbook() -> str:
    """The recipes for real instrumentation (docs/language.md)."""
    return block_after("cookbook")


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


class TestTour:
    """The README's five-minute tour: its rule passes its examples, its settings load."""

    def test_rule(self) -> None:
        loaded = load_text(block_after("tour-rule"), "rules/checkout.yaml")
        assert ([], []) == (loaded.errors, [str(w) for w in loaded.warnings])
        assert all(r.passed for r in run_examples(loaded.rules))

    def test_settings(self, tmp_path: Path) -> None:
        path = tmp_path / "betrace.yaml"
        path.write_text(block_after("tour-settings"))
        settings = load_settings(path)
        assert ["security"] == list(settings.notifiers)
