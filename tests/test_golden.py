"""Golden tests: each tests/golden/conditions/<case>.rule has its expected reading in <case>.out."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden_kit import assert_golden

from checker.rules import model as m
from checker.rules.errors import ConditionError
from checker.rules.lint import lint
from checker.rules.normalise import normalise
from checker.rules.parse import parse_condition
from checker.rules.printer import invariant

GOLDEN = Path(__file__).parent / "golden" / "conditions"
CASES = sorted(GOLDEN.glob("*.rule"))
LINT_CASES = sorted((GOLDEN.parent / "lint").glob("*.rule"))


def render(text: str) -> str:
    """The reading of a condition, or its error with the position inside the condition."""
    try:
        parsed = parse_condition(text)
        reading = invariant(normalise(parsed))
    except ConditionError as err:
        hint = f"\nhint: {err.hint}" if err.hint else ""
        return f"error at {err.pos.line}:{err.pos.column}: {err.message}{hint}\n"
    legacy = "legacy" if isinstance(parsed, m.BareRule) else "explicit"
    return f"{legacy}: {reading}\n"


class TestGolden:
    """Every golden case reads (or fails) exactly as recorded."""

    @pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
    def test_case(self, case: Path, update_golden: bool) -> None:
        expected_file = case.with_suffix(".out")
        actual = render(case.read_text())
        assert_golden(expected_file, actual, update=update_golden)

    def test_cases_exist(self) -> None:
        assert len(CASES) >= 30


def render_lint(text: str) -> str:
    """Each issue lint finds in a condition that parses, with its position and hint."""
    issues = lint(parse_condition(text))
    return "".join(f"{i.level.value} at {i.pos.line}:{i.pos.column}: {i.message}\n"
                   + (f"  hint: {i.hint}\n" if i.hint else "") for i in issues) or "no issues\n"


class TestLintGolden:
    """Rules that parse but would silently never match warn as recorded (tests/golden/lint)."""

    @pytest.mark.parametrize("case", LINT_CASES, ids=[c.stem for c in LINT_CASES])
    def test_case(self, case: Path, update_golden: bool) -> None:
        expected_file = case.with_suffix(".out")
        actual = render_lint(case.read_text())
        assert_golden(expected_file, actual, update=update_golden)
