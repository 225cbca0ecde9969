"""The language's vocabulary and durations: one table, read alike by every stage."""

from __future__ import annotations

from datetime import timedelta

import pytest

from checker.config_types import Duration, Section
from checker.engine import CompiledInvariant
from checker.rules import model as m
from checker.rules.durations import parse_ns, parse_timedelta
from checker.rules.errors import DurationTooLongError
from checker.rules.load import load_text
from checker.rules.parse import parse_condition, parser
from checker.rules.vocabulary import KEYWORDS, SPAN_KINDS, SPAN_STATUSES, Intrinsic
from checker.traceql.compiler import compile_rule
from checker.traces.otlp import decode_span


def literal(text: str) -> m.Scalar:
    parsed = parse_condition(f"never {{ x.where(span:duration > {text}) }}")
    assert isinstance(parsed, m.ClausedRule)
    check = parsed.clauses[0].cond
    assert isinstance(check, m.SpanCheck)
    compare = check.where[0]
    assert isinstance(compare, m.Compare)
    return compare.value


class TestDurations:
    """Conditions, rule fields and settings accept the same units, up to ten years."""

    @pytest.mark.parametrize(("text", "nanos"), [
        ("7ns", 7), ("3us", 3_000), ("3µs", 3_000), ("1.5ms", 1_500_000), ("2s", 2 * 10**9),
        ("1m", 60 * 10**9), ("1h", 3600 * 10**9), ("2d", 2 * 86400 * 10**9),
    ])
    def test_every_unit_everywhere(self, text: str, nanos: int) -> None:
        assert nanos == parse_ns(text)
        assert m.DurationLiteral(nanos, text) == literal(text)
        assert timedelta(microseconds=nanos / 1000) == parse_timedelta(text)

    def test_sign_only_in_conditions(self) -> None:
        assert m.DurationLiteral(-2_000_000, "-2ms") == literal("-2ms")
        assert parse_ns("-2ms") is None

    def test_compound_only_in_fields(self) -> None:
        assert 5_400 * 10**9 == parse_ns("1h30m")
        with pytest.raises(Exception, match="unexpected character"):
            literal("1h30m")

    def test_ten_years(self) -> None:
        assert 3650 * 86400 * 10**9 == parse_ns("3650d")
        with pytest.raises(DurationTooLongError):
            parse_ns("3651d")
        with pytest.raises(Exception, match="longer than 3650d"):
            literal("3651d")

    def test_settings(self) -> None:
        class Timing(Section):
            wait: Duration

        assert timedelta(microseconds=5) == Timing.model_validate({"wait": "5µs"}).wait


class TestIntrinsics:
    """Every intrinsic is known to the linter, the evaluator and the compiler alike."""

    @pytest.mark.parametrize("intrinsic", list(Intrinsic))
    def test_each_stage_knows_it(self, intrinsic: Intrinsic) -> None:
        value = {"string": '"x"', "duration": "1ms"}.get(intrinsic.value_type.value)
        value = value or (intrinsic.value_type.allowed or ("",))[0]
        condition = f"never {{ a.where({intrinsic.written} == {value}) }}"
        ruleset = load_text(f"rules:\n  - id: r\n    condition: '{condition}'\n", "r.yaml")
        assert [] == ruleset.errors
        CompiledInvariant.build(ruleset.rules[0].invariant)
        queries = [s.query for s in compile_rule(ruleset.rules[0].invariant).searches]
        # Trace intrinsics are not pushed down: Tempo knows them per stored fragment only.
        assert any(intrinsic.traceql in q for q in queries) != intrinsic.of_trace, queries

    def test_unknown_trace_intrinsic_is_linted_not_a_syntax_error(self) -> None:
        text = "rules:\n  - id: r\n    condition: 'never { a.where(trace:rootColour == \"x\") }'\n"
        message = str(load_text(text, "r.yaml").errors[0])
        assert "unknown intrinsic trace:rootColour" in message
        assert "known intrinsics: " + ", ".join(sorted(i.written for i in Intrinsic)) in message

    def test_named(self) -> None:
        assert Intrinsic.KIND is Intrinsic.named("span:kind")
        assert Intrinsic.named("span:colour") is None


class TestWords:
    """The grammar's keywords and the OTLP enums are the vocabulary's."""

    def test_grammar_keywords(self) -> None:
        words = {t.pattern.value for t in parser().terminals if t.name.lower() == t.pattern.value}
        assert set(KEYWORDS) == words

    def test_otlp_codes(self) -> None:
        span = {"traceId": "1" * 32, "spanId": "2" * 16, "name": "a", "kind": 2,
                "status": {"code": 2}}
        decoded = decode_span(span, {})
        assert (SPAN_KINDS[2], SPAN_STATUSES[2]) == (decoded.kind, decoded.status)
