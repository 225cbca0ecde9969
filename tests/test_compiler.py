"""TraceQL plans: goldens for every golden condition, and the escaping and typing edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from golden_kit import assert_golden

from checker.rules.errors import ConditionError
from checker.rules.normalise import normalise
from checker.rules.parse import parse_condition
from checker.traceql import compile_rule
from checker.traceql import syntax as q
from checker.traceql.plan import EVERY_TRACE, NOTHING, Search

if TYPE_CHECKING:
    from checker.rules import model as m

GOLDEN = Path(__file__).parent / "golden"
CASES = [c for c in sorted((GOLDEN / "conditions").glob("*.rule")) if not c.stem.startswith("err_")]


def plan_text(text: str) -> str:
    try:
        inv = normalise(parse_condition(text))
    except ConditionError as err:
        return f"error: {err.message}\n"
    return "\n".join(compile_rule(inv).describe()) + "\n"


def invariant(text: str) -> m.Invariant:
    return normalise(parse_condition(text))


class TestGoldenPlans:
    """Each golden condition compiles to the recorded plan (tests/golden/traceql)."""

    @pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
    def test_plan(self, case: Path, update_golden: bool) -> None:
        expected_file = GOLDEN / "traceql" / f"{case.stem}.plan"
        actual = plan_text(case.read_text())
        assert_golden(expected_file, actual, update=update_golden)


class TestSyntax:
    """Quoting and literals cannot be broken out of."""

    @pytest.mark.parametrize(("value", "expected"), [
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("line\nbreak\ttab", '"line\\nbreak\\ttab"'),
        ("\x01", '"\\x01"'),
        ("} || { true", '"} || { true"'),
        ("données", '"données"'),
    ])
    def test_string(self, value: str, expected: str) -> None:
        assert expected == q.string(value)

    def test_attribute_is_always_quoted(self) -> None:
        assert 'span."user id"' == q.attribute("span", "user id")
        assert 'resource."va\\"l"' == q.attribute("resource", 'va"l')

    def test_contains_escapes_regex_metacharacters(self) -> None:
        assert "(?s).*a\\.b\\*\\(c\\).*" == q.contains_pattern("a.b*(c)")

    @pytest.mark.parametrize(("op", "value", "expected"), [
        (">", 1000, [(">", "1000.0"), (">", "1000")]),
        (">", 1500.5, [(">", "1500.5"), (">", "1500")]),
        (">=", 1500.5, [(">=", "1500.5"), (">=", "1501")]),
        ("<", 1500.5, [("<", "1500.5"), ("<", "1501")]),
        ("<=", -1.5, [("<=", "-1.5"), ("<=", "-2")]),
        ("==", 2.5, [("=", "2.5")]),
        ("==", 2.0, [("=", "2.0"), ("=", "2")]),
        ("!=", 0.5, [("!=", "0.5"), (">", "0"), ("<=", "0")]),
        (">", 1e30, None),
        (">", 2**70, None),
        ("!=", 2**53 + 1, None),  # a double cannot hold it: the float form would be wrong
    ])
    def test_number_forms(self, op: str, value: float, expected: list[tuple[str, str]] | None) -> None:
        assert expected == q.number_forms(op, value)


class TestSoundnessShapes:
    """Scopes never use cross-span && or counts; clearing never uses approximations upward."""

    def test_scope_of_and_is_client_side_intersection(self) -> None:
        plan = compile_rule(invariant("when { a and b } always { c }"))
        queries = [s.query for s in plan.searches]
        assert all("&&" not in query.replace(" && (", "") or query.count("{") == 1 for query in queries)
        assert '{ name = "a" }' in queries
        assert '{ name = "b" }' in queries

    def test_count_scope_is_widened_to_has(self) -> None:
        plan = compile_rule(invariant("never { count(http.retry) > 3 }"))
        assert ['{ name = "http.retry" }'] == [s.query for s in plan.searches]
        assert not plan.searches[0].exact

    def test_count_can_clear_per_fragment(self) -> None:
        plan = compile_rule(invariant("when { a } always { count(b) > 2 }"))
        assert '{ name = "b" } | count() > 2' in [s.query for s in plan.searches]

    def test_not_inside_where_is_dropped_from_scope(self) -> None:
        plan = compile_rule(invariant("when { a.where(not x == 1) } always { b }"))
        assert '{ name = "a" }' == plan.scope.query if isinstance(plan.scope, Search) else False

    def test_not_inside_where_cannot_clear(self) -> None:
        plan = compile_rule(invariant("when { a } always { b.where(not x == 1) }"))
        assert [Search] == [type(plan.candidates)]
        assert '{ name = "a" }' == plan.candidates.query  # type: ignore[union-attr]

    def test_without_when_everything_is_in_scope(self) -> None:
        plan = compile_rule(invariant("always { audit.log }"))
        assert EVERY_TRACE == plan.scope
        assert "{ }" in [s.query for s in plan.searches]

    def test_never_only_searches_the_pattern(self) -> None:
        plan = compile_rule(invariant("never { oversight.evasion_attempt }"))
        assert ['{ name = "oversight.evasion_attempt" }'] == [s.query for s in plan.searches]

    def test_unclearable_always_fetches_the_scope(self) -> None:
        plan = compile_rule(invariant("when { a } always { count(a) == count(b) }"))
        assert plan.scope == plan.candidates
        assert NOTHING != plan.candidates
