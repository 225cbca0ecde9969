"""Exact evaluation: one test per operator and attribute type, and the invariant semantics."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from checker.engine import CompiledInvariant, Scanner
from checker.engine.compiled import span_names
from checker.errors import SourceLocation
from checker.rules.normalise import normalise
from checker.rules.parse import parse_condition
from checker.rules.rule import Rule
from checker.traceql import compile_rule
from checker.traces.model import Span, SpanEvent, Trace


def trace(*spans: tuple[str, dict[str, Any]], resource: dict[str, Any] | None = None,
          **span_fields: Any) -> Trace:
    """A trace of (name, attributes) spans, all sharing one resource."""
    built = [
        Span(trace_id="ab" * 16, span_id=f"{i + 1:016x}", name=name, attributes=dict(attrs),
             resource=dict(resource or {}), **span_fields)
        for i, (name, attrs) in enumerate(spans)
    ]
    return Trace("ab" * 16, built)


def violates(condition: str, t: Trace) -> bool:
    return CompiledInvariant.build(normalise(parse_condition(condition))).violated_by(t)


def holds(predicate: str, attrs: dict[str, Any], **kw: Any) -> bool:
    """Whether ``s.where(predicate)`` holds on a single span with ``attrs``."""
    return violates(f"never {{ s.where({predicate}) }}", trace(("s", attrs), **kw))


class TestNumbers:
    """Numbers compare with int and double attributes alike, never with strings or bools."""

    @pytest.mark.parametrize(("predicate", "value", "expected"), [
        ("amount > 1000", 1500, True),
        ("amount > 1000", 1500.5, True),
        ("amount > 1000", 1000, False),
        ("amount > 1000", "1800", False),
        ("amount > 1000", True, False),
        ("amount >= 1000", 1000, True),
        ("amount >= 1000.0", 1000, True),
        ("amount < 0", -1, True),
        ("amount <= -1.5", -1.5, True),
        ("amount == 1500", 1500.0, True),
        ("amount == 1500.0", 1500, True),
        ("amount != 1500", 1500, False),
        ("amount != 1500", 1501, True),
        ("amount != 1500", "x", False),
        ("amount == 1", True, False),
        ("amount == 10_000", 10000, True),
    ])
    def test_compare(self, predicate: str, value: object, expected: bool) -> None:
        assert expected == holds(predicate, {"amount": value})


class TestStrings:
    """Quoted strings and identifier values compare with strings only."""

    @pytest.mark.parametrize(("predicate", "value", "expected"), [
        ('currency == "USD"', "USD", True),
        ("currency == USD", "USD", True),
        ("currency == USD", "usd", False),
        ('currency != "USD"', "EUR", True),
        ('currency != "USD"', 5, False),
        ('amount == "1800"', 1800, False),
        ('amount == "1800"', "1800", True),
        ('amount > "1000"', "1800", True),
        ('flag == "true"', True, False),
    ])
    def test_compare(self, predicate: str, value: object, expected: bool) -> None:
        assert expected == holds(predicate, {"currency": value, "amount": value, "flag": value})


class TestBooleans:
    """true/false compare with booleans only; a bare attribute means "is true"."""

    @pytest.mark.parametrize(("predicate", "value", "expected"), [
        ("flag == true", True, True),
        ("flag == true", "true", False),
        ("flag == true", 1, False),
        ("flag != true", False, True),
        ("flag", True, True),
        ("flag", "true", False),
        ("flag", 1, False),
        ("not flag", False, True),
        ("not flag", True, False),
    ])
    def test_compare(self, predicate: str, value: object, expected: bool) -> None:
        assert expected == holds(predicate, {"flag": value})


class TestMissingAttribute:
    """A missing attribute makes every comparison false, so `not (...)` holds."""

    @pytest.mark.parametrize("predicate", [
        "x == 1", "x != 1", "x > 1", "x < 1", 'x == "a"', 'x != "a"', "x in [1]",
        "x not in [1]", 'x matches ".*"', 'x contains ""', "x", "x == true", "x != false",
    ])
    def test_comparison_false(self, predicate: str) -> None:
        assert holds(predicate, {}) is False

    @pytest.mark.parametrize("predicate", ["not (x == 1)", "not (x != 1)", "not x"])
    def test_negation_true(self, predicate: str) -> None:
        assert holds(predicate, {}) is True


class TestLists:
    """`in` holds when any value equals; `not in` when every value differs (typed)."""

    @pytest.mark.parametrize(("predicate", "value", "expected"), [
        ("x in [1, 2]", 2, True),
        ("x in [1, 2]", 2.0, True),
        ("x in [1, 2]", 3, False),
        ('x in ["a", b]', "b", True),
        ("x not in [1, 2]", 3, True),
        ("x not in [1, 2]", 2, False),
        ("x not in [1, 2]", "3", False),
        ("x not in [1, USD]", 3, False),  # `!=` each value, typed as in Tempo: 3 != "USD" fails
        ("x in [true]", True, True),
    ])
    def test_membership(self, predicate: str, value: object, expected: bool) -> None:
        assert expected == holds(predicate, {"x": value})


class TestRegexAndContains:
    """`matches` is a full-match RE2 regex; `contains` a substring test; strings only."""

    @pytest.mark.parametrize(("predicate", "value", "expected"), [
        ('n matches "pii"', "pii.access", False),
        ('n matches "pii.*"', "pii.access", True),
        ('n matches "(?i)PII.ACCESS"', "pii.access", True),
        ('n matches "/api/v[0-9]+/admin/.*"', "/api/v2/admin/keys", True),
        ('n matches "/api/v[0-9]+/admin/.*"', "/api/v1/search?q=adm", False),
        ('n matches "1.*"', 1500, False),
        ('n contains "admin"', "/api/v1/admin/users", True),
        ("n contains admin", "/api/v1/users", False),
        ('n contains "1"', 15, False),
        ('n contains "a.b"', "xa.bx", True),
        ('n contains "a.b"', "xaxbx", False),
    ])
    def test_match(self, predicate: str, value: object, expected: bool) -> None:
        assert expected == holds(predicate, {"n": value})


class TestArrays:
    """Array attributes match when any element matches, as in Tempo."""

    @pytest.mark.parametrize(("predicate", "expected"), [
        ('tags == "pci"', True),
        ('tags matches "p.*"', True),
        ('tags contains "ci"', True),
        ('tags == "nope"', False),
        ('tags not in ["pci", "gdpr"]', False),
        ('tags not in ["x"]', True),
    ])
    def test_any_element(self, predicate: str, expected: bool) -> None:
        assert expected == holds(predicate, {"tags": ("pci", "gdpr")})

    def test_bare_boolean_array(self) -> None:
        assert holds("flags", {"flags": (False, True)})
        assert not holds("flags", {"flags": (False,)})


class TestUnscopedLookup:
    """An attribute name matches the span attribute or the resource attribute."""

    def test_resource_attribute(self) -> None:
        assert holds('environment == "production"', {}, resource={"environment": "production"})

    def test_either_may_hold(self) -> None:
        attrs = {"environment": "staging"}
        assert holds('environment == "production"', attrs, resource={"environment": "production"})

    def test_neither_holds(self) -> None:
        assert not holds('environment == "dev"', {"environment": "staging"},
                         resource={"environment": "production"})


class TestScopedLookup:
    """``resource.x`` and ``span.x`` look in that scope only, as in TraceQL; quoted names are literal."""

    def test_resource_scope_ignores_the_span(self) -> None:
        assert holds("resource.env == prod", {}, resource={"env": "prod"})
        assert not holds("resource.env == prod", {"env": "prod"})

    def test_span_scope_ignores_the_resource(self) -> None:
        assert holds('span.http.route == "/charge"', {"http.route": "/charge"})
        assert not holds('span.http.route == "/charge"', {}, resource={"http.route": "/charge"})

    def test_a_quoted_name_is_never_scoped(self) -> None:
        assert holds('"resource.odd" == x', {"resource.odd": "x"})
        assert not holds('"resource.odd" == x', {}, resource={"odd": "x"})


def exception(kind: object = None, name: str = "exception", **attributes: object) -> SpanEvent:
    """An event, by default an ``exception`` one, with ``exception.type`` when ``kind`` is given."""
    extra = {} if kind is None else {"exception.type": kind}
    return SpanEvent(name, 0, {**extra, **attributes})


def with_events(predicate: str, *events: SpanEvent, attrs: dict[str, Any] | None = None,
                **span_fields: Any) -> bool:
    """Whether ``s.where(predicate)`` holds on a single span with these events."""
    return holds(predicate, attrs or {}, events=events, **span_fields)


class TestEvents:
    """Event terms: one event of the span must satisfy every event term of one ``.where``."""

    def test_event_name(self) -> None:
        assert with_events("event:name == exception", exception())
        assert not with_events("event:name == exception", exception(name="retry"))
        assert with_events('event:name matches "exc.*"', exception(name="retry"), exception())
        assert with_events("event:name in [retry, timeout]", exception(name="timeout"))
        assert with_events('event:name contains "cept"', exception())

    def test_event_attribute(self) -> None:
        assert with_events('event.exception.type == "ValueError"', exception("ValueError"))
        assert not with_events('event.exception.type == "ValueError"', exception("KeyError"))
        assert not with_events('event.exception.type == "ValueError"', attrs={"exception.type": "ValueError"})

    def test_the_same_event_satisfies_every_event_term(self) -> None:
        predicate = "event:name == exception and event.exception.type == B"
        assert not with_events(predicate, exception("A"), exception("B", name="log"))
        assert with_events(predicate, exception("A"), exception("B"))

    def test_or_and_span_terms_read_the_span(self) -> None:
        predicate = "span:kind == server and (event:name == retry or event.exception.type == B)"
        assert with_events(predicate, exception("B"), kind="server")
        assert not with_events(predicate, exception("B"), kind="client")
        assert with_events("event:name == retry or code == 5", exception(), attrs={"code": 5})

    def test_a_span_without_events_fails(self) -> None:
        assert not with_events("event:name != exception")
        assert not with_events("code == 5 or event:name == exception", attrs={"code": 5})
        assert with_events("code == 5", attrs={"code": 5})

    def test_separate_wheres_may_use_different_events(self) -> None:
        rule = "never { s.where(event:name == exception).where(event.exception.type == B) }"
        t = trace(("s", {}), events=(exception("A"), exception("B", name="log")))
        assert violates(rule, t)
        assert not violates("never { s.where(event:name == exception and event.exception.type == B) }", t)

    def test_not_is_read_per_event(self) -> None:
        """``not`` inside the ``.where``: some event fails the term; outside: no event satisfies it."""
        assert with_events("not event:name == exception", exception(), exception(name="log"))
        assert not with_events("not event:name == exception", exception())
        assert not violates("never { not s.where(event:name == exception) }",
                            trace(("s", {}), events=(exception(), exception(name="log"))))

    def test_counted(self) -> None:
        rule = "never { count(s.where(event:name == exception)) > 2 }"
        failing = (exception(),)
        assert violates(rule, trace(("s", {}), ("s", {}), ("s", {}), events=failing))
        assert not violates(rule, trace(("s", {}), ("s", {}), events=failing))

    def test_explained_with_the_spans_whose_event_matched(self) -> None:
        condition = "when { s } never { s.where(event:name == exception and event.exception.type == B) }"
        rule = Rule(id="r", name="r", condition=condition, location=SourceLocation("r.yaml"), version="v",
                    invariant=normalise(parse_condition(condition)))
        plain = trace(("s", {}), ("s", {}))
        t = Trace(plain.trace_id, [plain.spans[0], replace(plain.spans[1], events=(exception("B"),))])
        (violation,) = Scanner([rule]).check(t)
        (forbidden,) = violation.forbidden
        assert 's.where(event:name == "exception" and event.exception.type == "B")' == forbidden.check
        assert [t.spans[1].span_id] == [span.span_id for span in forbidden.spans]

    def test_span_names_unchanged(self) -> None:
        inv = normalise(parse_condition("never { s.where(event:name == exception) }"))
        assert frozenset({"s"}) == span_names(inv)


class TestAnySpan:
    """``span.where(p)``: some span, whatever its name, satisfies ``p``."""

    def test_any_name(self) -> None:
        t = trace(("GET /a", {"code": 200}), ("POST /b", {"code": 503}))
        assert violates("never { span.where(code >= 500) }", t)
        assert not violates("never { span.where(code >= 600) }", t)

    def test_a_span_called_span_is_written_quoted(self) -> None:
        t = trace(("span", {"code": 503}))
        assert violates('never { "span".where(code >= 500) }', t)
        assert not violates('never { "span".where(code >= 500) }', trace(("other", {"code": 503})))

    def test_counted(self) -> None:
        t = trace(("GET /a", {"code": 503}), ("GET /b", {"code": 500}), ("db", {"code": 200}))
        assert violates("never { count(span.where(code >= 500)) > 1 }", t)
        assert not violates("never { count(span.where(code >= 500)) > 2 }", t)
        assert violates('never { count("GET /a".where(code >= 500)) == count(db.where(code == 200)) }', t)

    def test_every_span_may_change_the_verdict(self) -> None:
        """The final pass asks about late spans of any name for such a rule (``span_names``)."""
        assert span_names(normalise(parse_condition("never { span.where(code >= 500) }"))) is None
        assert frozenset({"a", "b"}) == span_names(normalise(parse_condition("when { a } never { b }")))

    def test_combined_with_names(self) -> None:
        t = trace(("GET /a", {"code": 503}), ("error.logged", {}))
        assert not violates("when { span.where(code >= 500) } always { error.logged }", t)
        assert violates("when { span.where(code >= 500) } always { error.logged }",
                        trace(("GET /a", {"code": 503})))


class TestTraceIntrinsics:
    """trace:rootService, trace:rootName and trace:duration hold on every span of the trace."""

    def _trace(self) -> Trace:
        root = Span(trace_id="ab" * 16, span_id="01" * 8, name="GET /x", start_ns=0, end_ns=3_000_000_000,
                    resource={"service.name": "frontend"})
        child = Span(trace_id="ab" * 16, span_id="02" * 8, name="db", parent_span_id="01" * 8,
                     start_ns=1_000_000_000, end_ns=4_000_000_000, resource={"service.name": "db-svc"})
        return Trace("ab" * 16, [child, root])

    def test_root_service_and_name(self) -> None:
        assert violates("never { db.where(trace:rootService == frontend) }", self._trace())
        assert not violates("never { db.where(trace:rootService == db-svc) }", self._trace())
        assert violates('never { db.where(trace:rootName == "GET /x") }', self._trace())

    def test_duration_spans_the_whole_trace(self) -> None:
        assert violates("never { db.where(trace:duration >= 4s) }", self._trace())
        assert not violates("never { db.where(trace:duration > 4s) }", self._trace())

    def test_not_pushed_down(self) -> None:
        """Tempo knows them per stored fragment only: searched without them, decided exactly."""
        plan = compile_rule(normalise(parse_condition("never { db.where(trace:rootService == x) }")))
        assert ['{ name = "db" }'] == [s.query for s in plan.searches]


class TestIntrinsics:
    """span:duration, span:status, span:kind, span:name and resource:service."""

    def test_duration(self) -> None:
        assert holds("span:duration > 1s", {}, start_ns=0, end_ns=1_500_000_000)
        assert not holds("span:duration > 1s", {}, start_ns=0, end_ns=1_000_000_000)
        assert holds("span:duration >= 1500ms", {}, start_ns=0, end_ns=1_500_000_000)

    def test_status_and_kind(self) -> None:
        assert holds("span:status == error and span:kind == server", {}, status="error",
                     kind="server")
        assert not holds("span:status == error", {}, status="ok")
        assert holds('span:statusMessage == "upstream down"', {}, status_message="upstream down")

    def test_name_and_service(self) -> None:
        assert holds('span:name == "s" and resource:service == "api"', {},
                     resource={"service.name": "api"})


class TestInvariant:
    """A trace violates when `when` holds and (`always` fails or `never` holds)."""

    RULE = ("when { payment.charge_card.where(amount > 1000) } "
            "always { payment.fraud_check } never { payment.bypass_validation }")

    def test_out_of_scope(self) -> None:
        assert not violates(self.RULE, trace(("payment.charge_card", {"amount": 500})))

    def test_always_missing(self) -> None:
        assert violates(self.RULE, trace(("payment.charge_card", {"amount": 1500})))

    def test_compliant(self) -> None:
        t = trace(("payment.charge_card", {"amount": 1500}), ("payment.fraud_check", {}))
        assert not violates(self.RULE, t)

    def test_never_matched(self) -> None:
        t = trace(("payment.charge_card", {"amount": 1500.5}), ("payment.fraud_check", {}),
                  ("payment.bypass_validation", {}))
        assert violates(self.RULE, t)

    def test_where_applies_to_one_span(self) -> None:
        """Chained .where() must hold on the same span, not on two different ones."""
        rule = "never { s.where(a == 1).where(b == 2) }"
        assert not violates(rule, trace(("s", {"a": 1}), ("s", {"b": 2})))
        assert violates(rule, trace(("s", {"a": 1}), ("s", {"a": 1, "b": 2})))

    def test_without_when_every_trace_is_in_scope(self) -> None:
        assert violates("always { audit.log }", trace(("other", {})))
        assert not violates("always { audit.log }", trace(("audit.log", {})))

    @pytest.mark.parametrize(("condition", "retries", "expected"), [
        ("never { count(http.retry) > 3 }", 4, True),
        ("never { count(http.retry) > 3 }", 3, False),
        ("never { trace.count(http.retry) >= 3 }", 3, True),
        ("when { r } always { count(http.retry) == count(r) }", 1, True),
        ("when { r } always { count(http.retry) == count(r) }", 2, False),
    ])
    def test_counts(self, condition: str, retries: int, expected: bool) -> None:
        t = trace(*[("http.retry", {})] * retries, ("r", {}), ("r", {}))
        assert expected == violates(condition, t)

    def test_boolean_structure(self) -> None:
        rule = "when { a or b and not c } never { d }"
        assert violates(rule, trace(("a", {}), ("c", {}), ("d", {})))
        assert violates(rule, trace(("b", {}), ("d", {})))
        assert not violates(rule, trace(("b", {}), ("c", {}), ("d", {})))
