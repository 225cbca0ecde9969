"""Structure and order between spans: has child / descendant / sibling, followed by, every.

Judged on the whole trace (engine/structure.py); pushed down to Tempo only as a scope of both
sides and, where TraceQL has the operator, a per-fragment clear, checked here against the
double's nested-set model.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from otlp_build import push, span
from tempo_double import TempoDouble

from checker.cli import main
from checker.engine import CompiledInvariant, Scanner
from checker.engine.compiled import span_names
from checker.rules.load import load_text
from checker.rules.normalise import normalise
from checker.rules.parse import parse_condition
from checker.tempo.client import TempoClient
from checker.tempo.run import evaluate_window
from checker.tempo.settings import TempoSettings
from checker.traces.model import Span, Trace

if TYPE_CHECKING:
    from pathlib import Path

TRACE_ID = "ab" * 16


def tree(*spans: tuple[str, str, str | None], times: dict[str, tuple[int, int]] | None = None) -> Trace:
    """A trace of (span ID, name, parent ID) spans; ``times`` gives some of them (start, end)."""
    times = times or {}
    return Trace(TRACE_ID, [
        Span(TRACE_ID, span_id, name, parent, start_ns=times.get(span_id, (0, 0))[0],
             end_ns=times.get(span_id, (0, 0))[1])
        for span_id, name, parent in spans])


def holds(check: str, trace: Trace) -> bool:
    """Whether ``check`` holds on ``trace`` (as the ``never`` block it is placed in)."""
    return CompiledInvariant.build(normalise(parse_condition(f"never {{ {check} }}"))).violated_by(trace)


# req ─┬─ pii.access(02) ── db.query(04)
#      ├─ audit.log(03)
#      └─ mid(05) ── pii.access(06) ── export(07)
REQUEST = tree(("01", "req", None), ("02", "pii.access", "01"), ("03", "audit.log", "01"),
               ("04", "db.query", "02"), ("05", "mid", "01"), ("06", "pii.access", "05"),
               ("07", "export", "06"))


class TestRelations:
    """Each relation, from its definition, on one request tree."""

    @pytest.mark.parametrize(("check", "expected"), [
        ("req has child pii.access", True),
        ("req has child db.query", False),  # a grandchild is not a child
        ("req has descendant db.query", True),
        ("req has descendant export", True),  # through mid, whose name the rule never says
        ("db.query has descendant req", False),
        ("pii.access has sibling audit.log", True),
        ("every pii.access has sibling audit.log", False),  # 06 sits under mid
        ('every pii.access has child span.where(span:name matches "db.*|export")', True),
        ("every pii.access has descendant db.query", False),
        ("audit.log has sibling audit.log", False),  # never its own sibling
        ("pii.access has sibling pii.access", False),  # two, but under different parents
        ("every nothing.here has child req", True),  # for each of none
        ("nothing.here has child req", False),
        ("not req has child export", True),
    ])
    def test_on_request_tree(self, check: str, expected: bool) -> None:
        assert holds(check, REQUEST) is expected

    def test_followed_by_compares_start_with_end(self) -> None:
        timed = tree(("01", "write", None), ("02", "commit", None), ("03", "write", None),
                     times={"01": (0, 10), "02": (10, 12), "03": (11, 20)})
        assert holds("write followed by commit", timed)  # 01 ends at 10, commit starts at 10
        assert not holds("every write followed by commit", timed)  # 03 ends after commit starts
        assert holds("commit followed by write", timed) is False
        assert not holds("commit followed by commit", timed)  # not by itself

    def test_a_zero_length_span_does_not_follow_itself(self) -> None:
        assert not holds("tick followed by tick", tree(("01", "tick", None), times={"01": (5, 5)}))
        assert holds("tick followed by tick", tree(("01", "tick", None), ("02", "tick", None),
                                                   times={"01": (5, 5), "02": (5, 5)}))

    def test_roots_are_siblings_and_so_are_orphans_of_one_missing_parent(self) -> None:
        # As in Tempo's nested sets, two roots share the (absent) top; orphans share their parent ID.
        assert holds("a has sibling b", tree(("01", "a", None), ("02", "b", None)))
        assert holds("a has sibling b", tree(("01", "a", "ff"), ("02", "b", "ff")))
        assert not holds("a has sibling b", tree(("01", "a", "ff"), ("02", "b", None)))

    def test_parent_cycles_end(self) -> None:
        cycle = tree(("01", "a", "02"), ("02", "b", "01"), ("03", "c", "03"))
        assert holds("a has descendant b", cycle)
        assert not holds("c has child c", cycle)  # a span that is its own parent is not its own child
        assert not holds("a has descendant c", cycle)

    def test_deep_and_wide_traces_are_linear(self) -> None:
        # 20 000 siblings and a 5 000-deep chain: a quadratic walk would not finish in the suite.
        wide = tree(("root", "r", None), *((f"{i:05}", "s", "root") for i in range(20_000)))
        assert holds("every s has sibling s", wide)
        chain = tree(("00000", "top", None), *((f"{i:05}", "link", f"{i - 1:05}") for i in range(1, 5000)))
        assert holds("every link.where(span:name == link) has sibling top or top has descendant link", chain)
        assert not holds("every link has descendant link", chain)


class TestExplanations:
    """A failing structure check names the spans of its left side that lack the relation."""

    def test_always_names_the_offending_spans(self) -> None:
        rules = load_text("rules:\n  - id: same-request\n    condition: when { pii.access } always "
                          "{ every pii.access has sibling audit.log }\n", "r.yaml").rules
        (violation,) = Scanner(rules).check(REQUEST)
        assert violation.missing == ("every pii.access has sibling audit.log",)
        assert "not so for pii.access (span 06)" in violation.reason
        assert "(span 02)" not in violation.reason.partition("not so for")[2]

    def test_never_lists_the_spans_that_have_the_relation(self) -> None:
        rules = load_text("rules:\n  - id: no-direct-db\n    condition: never { req has descendant "
                          "db.query }\n", "r.yaml").rules
        (violation,) = Scanner(rules).check(REQUEST)
        assert [(f.check, [s.span_id for s in f.spans]) for f in violation.forbidden] == [
            ("req has descendant db.query", ["01"])]


class TestWhatTheVerdictReads:
    """Which spans can change a verdict: the final pass asks Tempo about those."""

    def test_descendant_reads_spans_of_any_name(self) -> None:
        inv = normalise(parse_condition("when { req } always { req has descendant db.query }"))
        assert span_names(inv) is None

    def test_child_sibling_and_order_read_their_two_sides(self) -> None:
        inv = normalise(parse_condition(
            "when { a has child b } always { a has sibling c and c followed by d }"))
        assert span_names(inv) == {"a", "b", "c", "d"}


class TestExamples:
    """Example spans may say when they start, so that order can be written down."""

    @staticmethod
    def example(name: str, expect: str, audit_start: str) -> str:
        return (f"      - name: {name}\n        expect: {expect}\n        trace:\n          - span: req\n"
                "            children:\n              - {span: pii.access, start: 0ms, duration: 5ms}\n"
                f"              - {{span: audit.log, start: {audit_start}}}\n")

    RULE = ("rules:\n  - id: audit-after-access\n    condition: when { pii.access } always "
            "{ every pii.access followed by audit.log }\n    examples:\n")

    def test_start_orders_example_spans(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text(self.RULE + self.example("audit written after the access", "pass", "6ms")
                        + self.example("audit written during the access", "violation", "2ms"))
        assert main(["test", str(path)]) == 0


# -------------------------------------------------------------- against Tempo

def search(double: TempoDouble, query: str) -> set[str]:
    """Trace IDs a TraceQL search over every stored fragment returns."""
    now = int(time.time())
    answer = httpx.get(f"{double.url}/api/search", params={
        "q": query, "start": now - 3600, "end": now + 60, "limit": 100}).json()
    return {t["traceID"].zfill(32) for t in answer["traces"]}


class TestTempoStructure:
    """Tempo finds a relation inside one fragment only: it may clear, never decide."""

    def test_a_relation_split_over_fragments_is_not_found(self) -> None:
        at = time.time() - 60
        with TempoDouble() as double:
            push(double, span(1, 1, "req", at), span(1, 2, "pii.access", at, parent=1),
                 span(1, 3, "audit.log", at, parent=1))
            push(double, span(2, 1, "req", at), span(2, 2, "pii.access", at, parent=1))
            push(double, span(2, 3, "audit.log", at, parent=1))  # arrives later: its own fragment
            push(double, span(3, 2, "pii.access", at, parent=1), span(3, 3, "audit.log", at, parent=1))
            found = search(double, '{ name = "pii.access" } ~ { name = "audit.log" }')
        # 3 has no root in its fragment, which Tempo leaves unnumbered: no structure at all.
        assert found == {f"{1:032x}"}

    def test_candidates_are_judged_whole(self) -> None:
        rules = load_text("rules:\n  - id: same-request\n    condition: when { pii.access } always "
                          "{ pii.access has sibling audit.log }\n", "r.yaml").rules
        at = time.time() - 60
        with TempoDouble() as double:
            push(double, span(1, 1, "req", at), span(1, 2, "pii.access", at, parent=1),
                 span(1, 3, "audit.log", at, parent=1))
            push(double, span(2, 1, "req", at), span(2, 2, "pii.access", at, parent=1))
            push(double, span(2, 3, "audit.log", at, parent=1))
            push(double, span(3, 1, "req", at), span(3, 2, "pii.access", at, parent=1),
                 span(3, 4, "job", at, parent=1), span(3, 3, "audit.log", at, parent=4))
            result = asyncio.run(_window(double, rules, int(at) - 5, int(at) + 5))
        (outcome,) = result.outcomes
        assert outcome.candidates == {f"{2:032x}", f"{3:032x}"}  # 1 cleared by Tempo
        assert {v.trace_id for v in result.violations} == {f"{3:032x}"}  # 2 is whole once fetched


async def _window(double: TempoDouble, rules: Any, start: int, end: int) -> Any:
    async with TempoClient(TempoSettings(url=double.url), backoff=0.0) as client:
        return await evaluate_window(rules, client, start, end)
