"""Golden tests: each tests/golden/conditions/<case>.rule has its expected reading in <case>.out."""

from __future__ import annotations

from pathlib import Path

import pytest

from checker.rules import model as m
from checker.rules.errors import ConditionError
from checker.rules.normalise import normalise
from checker.rules.parse import parse_condition
from checker.rules.printer import invariant

GOLDEN = Path(__file__).parent / "golden" / "conditions"
CASES = sorted(GOLDEN.glob("*.rule"))


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
        if update_golden or not expected_file.exists():
            expected_file.write_text(actual)
        assert expected_file.read_text() == actual

    def test_cases_exist(self) -> None:
        assert len(CASES) >= 30
