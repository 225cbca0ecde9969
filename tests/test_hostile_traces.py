"""Hostile and odd trace files: a clear error with exit code 3, or a correct result; never a traceback.

Issue 11, "Trace files": numbers out of range, absurd nesting, lone surrogates, empty files,
single-object files too large to load whole, spans exported more than once, span order,
and what reaches reports (Markdown, HTML, CSV) from span names.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tempfile
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checker.cli import main
from checker.engine import Violation
from checker.errors import TraceSourceError
from checker.evidence import render
from checker.evidence.figures import ControlFigures, Filters, Gap, Report, RuleFigures
from checker.output import write_stored_csv, write_table
from checker.store import StoredViolation
from checker.store.ledger import Verdict
from checker.traces import otlp
from checker.traces.model import Span, Trace
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from collections.abc import Sequence

TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER = "4bf92f3577b34da6a3ce929d0e0e4736"
RAW = "@@RAW@@"  # replaced by raw JSON text that json.dumps cannot write
RULES = """\
rules:
  - id: audited
    name: "Access is audited"
    severity: high
    condition: when { pii.access } always { audit.log }
  - id: retries
    name: "Retries are bounded"
    severity: medium
    condition: never { count(http.retry) > 2 }
"""


# ------------------------------------------------------------------ helpers


def span(span_id: str, name: str, trace_id: str = TRACE, **fields: Any) -> dict[str, Any]:
    return {"traceId": trace_id, "spanId": span_id, "name": name, **fields}


def request(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}]}]}


def text_of(doc: object, layout: str, raw: str = "") -> str:
    """``doc`` as file text: one JSON Lines record, a pretty document or one compact line."""
    text = json.dumps(doc, indent=2) if layout == "pretty" else json.dumps(doc)
    return text.replace(f'"{RAW}"', raw) + "\n"


def scan(capsys: pytest.CaptureFixture[str], rules: Path, *traces: Path,
         fmt: str = "json") -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["scan", "--rules", str(rules), "--traces", *map(str, traces), "--format", fmt])
    out, err = capsys.readouterr()
    return code, out, err


def scan_quietly(rules: Path, *traces: Path) -> tuple[int, str, str]:
    """``main`` in-process without pytest fixtures (hypothesis runs it many times)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["scan", "--rules", str(rules), "--traces", *map(str, traces), "--format", "json"])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def good() -> dict[str, Any]:
    return request(span("0000000000000001", "pii.access"))


# ------------------------------------------------------------------ numbers, nesting


HOSTILE = {
    "timestamp 1e400": ({"startTimeUnixNano": RAW}, "1e400"),
    "timestamp -1e400": ({"endTimeUnixNano": RAW}, "-1e400"),
    "timestamp of 5000 digits": ({"startTimeUnixNano": RAW}, "9" * 5000),
    "timestamp string of 5000 digits": ({"startTimeUnixNano": "9" * 5000}, ""),
    "timestamp string 1e400": ({"startTimeUnixNano": "1e400"}, ""),
    "timestamp NaN": ({"startTimeUnixNano": RAW}, "NaN"),
    "timestamp Infinity": ({"startTimeUnixNano": RAW}, "Infinity"),
    "timestamp negative": ({"startTimeUnixNano": "-5"}, ""),
    "intValue 1e400": ({"attributes": [{"key": "n", "value": {"intValue": RAW}}]}, "1e400"),
    "intValue of 5000 digits": ({"attributes": [{"key": "n", "value": {"intValue": RAW}}]}, "9" * 5000),
    "intValue string of 5000 digits": (
        {"attributes": [{"key": "n", "value": {"intValue": "9" * 5000}}]}, ""),
    "intValue beyond int64": ({"attributes": [{"key": "n", "value": {"intValue": "9" * 20}}]}, ""),
    "doubleValue 1e400": ({"attributes": [{"key": "d", "value": {"doubleValue": RAW}}]}, "1e400"),
    "kind 1e400": ({"kind": RAW}, "1e400"),
    "nesting 100000 deep": ({"extra": RAW}, "[" * 100_000 + "]" * 100_000),
    "nested arrayValue 200 deep": (
        {"attributes": [{"key": "a", "value": json.loads(
            '{"arrayValue": {"values": [' * 200 + "]}}" * 200)}]}, ""),
}


class TestHostileNumbersAndNesting:
    """Each is exit 3 naming file and line, never a traceback or exit 1 ("violations found")."""

    @pytest.mark.parametrize("case", HOSTILE)
    @pytest.mark.parametrize("layout", ["lines", "pretty", "compact"])
    def test_exit_3_with_file_and_line(self, tmp_path: Path, rules: Path,
                                       capsys: pytest.CaptureFixture[str], case: str, layout: str) -> None:
        fields, raw = HOSTILE[case]
        bad = request(span("0000000000000001", "pii.access"), span("0000000000000002", "b", **fields))
        path = tmp_path / "traces.jsonl"
        if layout == "lines":
            path.write_text(text_of(good(), "lines") + text_of(bad, "lines", raw), encoding="utf-8")
        else:
            path.write_text(text_of(bad, layout, raw), encoding="utf-8")

        code, out, err = scan(capsys, rules, path)

        assert 3 == code, err
        line = "2" if layout == "lines" else r"\d+"
        assert re.match(rf"error: {re.escape(str(path))}:{line}[:\s]", err), err
        assert "" == out

    @pytest.mark.parametrize("raw", ["1e400", "9" * 5000, "NaN"])
    def test_library_raises_trace_source_error(self, tmp_path: Path, raw: str) -> None:
        path = tmp_path / "t.json"
        path.write_text(text_of(request(span("0000000000000001", "a", startTimeUnixNano=RAW)),
                                "pretty", raw), encoding="utf-8")
        with pytest.raises(TraceSourceError, match=re.escape(str(path))):
            list(read_traces([path]))

    def test_pretty_document_points_at_the_bad_number(self, tmp_path: Path) -> None:
        doc = request(span("0000000000000001", "a"), span("0000000000000002", "b", startTimeUnixNano=RAW))
        path = tmp_path / "t.json"
        path.write_text(text_of(doc, "pretty", "1e400"), encoding="utf-8")
        line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "1e400" in text)

        with pytest.raises(TraceSourceError) as info:
            list(read_traces([path]))
        assert str(info.value).startswith(f"{path}:{line}:"), str(info.value)
        assert "number out of range" in str(info.value)

    def test_finite_values_in_range_are_fine(self, tmp_path: Path) -> None:
        doc = request(span("0000000000000001", "a", startTimeUnixNano=str(2**64 - 1), attributes=[
            {"key": "i", "value": {"intValue": str(-(2**63))}},
            {"key": "d", "value": {"doubleValue": "Infinity"}}]))
        path = tmp_path / "t.json"
        path.write_text(text_of(doc, "pretty"), encoding="utf-8")
        (trace,) = read_traces([path])
        assert (2**64 - 1, -(2**63), float("inf")) == (
            trace.spans[0].start_ns, trace.spans[0].attributes["i"], trace.spans[0].attributes["d"])


# ------------------------------------------------------------------ lone surrogates


class TestLoneSurrogates:
    """Half a surrogate pair in a span name must not abort the output half-way."""

    @pytest.mark.parametrize("layout", ["lines", "pretty"])
    def test_json_output_is_whole_and_encodable(self, tmp_path: Path, rules: Path,
                                                capsys: pytest.CaptureFixture[str], layout: str) -> None:
        first = request(span("0000000000000001", "root \ud800 \udfff end"),
                        span("0000000000000002", "pii.access", parentSpanId="0000000000000001"))
        second = request(span("0000000000000003", "pii.access", trace_id=OTHER))
        path = tmp_path / "t.json"
        if layout == "lines":
            path.write_text(text_of(first, "lines") + text_of(second, "lines"), encoding="utf-8")
        else:
            merged = {"resourceSpans": first["resourceSpans"] + second["resourceSpans"]}
            path.write_text(text_of(merged, "pretty"), encoding="utf-8")

        code, out, err = scan(capsys, rules, path)

        assert 1 == code, err
        out.encode("utf-8")  # strict: a lone surrogate would raise here
        found = [json.loads(line) for line in out.splitlines()]
        assert [TRACE, OTHER] == [v["trace_id"] for v in found]
        assert "root \ufffd \ufffd end" == found[0]["root_name"]

    def test_surrogate_pairs_written_as_escapes_stay_one_character(self, tmp_path: Path) -> None:
        path = tmp_path / "t.jsonl"
        path.write_text(text_of(request(span("0000000000000001", "\U0001f600")), "lines"), encoding="utf-8")
        assert "\\ud83d\\ude00" in path.read_text()
        (trace,) = read_traces([path])
        assert "\U0001f600" == trace.spans[0].name

    def test_table_output_too(self, tmp_path: Path, rules: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
        doc = request(span("0000000000000001", "pii.access", attributes=[
            {"key": "k\ud800", "value": {"stringValue": "v\udc00"}}], status={"message": "\ud800"}))
        path = tmp_path / "t.jsonl"
        path.write_text(text_of(doc, "lines"), encoding="utf-8")
        (trace,) = read_traces([path])
        decoded = trace.spans[0]
        assert ({"k\ufffd": "v\ufffd"}, "\ufffd") == (decoded.attributes, decoded.status_message)
        code, out, _ = scan(capsys, rules, path, fmt="text")
        assert 1 == code
        out.encode("utf-8")


# ------------------------------------------------------------------ empty input


class TestEmptyInput:
    """No spans is not a clean result: it is said, with exit code 3."""

    @pytest.mark.parametrize(("text", "message"), [
        ("", "the file is empty"),
        ("\n  \n\n", "no spans in this file"),
        ('{"resourceSpans": []}\n', "no spans in this file"),
        ('{\n  "resourceSpans": [\n    {"scopeSpans": []}\n  ]\n}\n', "no spans in this file"),
    ])
    def test_a_file_without_spans(self, tmp_path: Path, rules: Path, capsys: pytest.CaptureFixture[str],
                                  text: str, message: str) -> None:
        path = tmp_path / "traces.json"
        path.write_text(text, encoding="utf-8")
        code, out, err = scan(capsys, rules, path)
        assert 3 == code
        assert err.startswith(f"error: {path}: {message}"), err
        assert "hint:" in err
        assert "" == out

    def test_one_empty_file_among_good_ones(self, tmp_path: Path, rules: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "a.jsonl").write_text(text_of(good(), "lines"), encoding="utf-8")
        (tmp_path / "in" / "b.jsonl").write_text("", encoding="utf-8")
        code, _, err = scan(capsys, rules, tmp_path / "in")
        assert 3 == code
        assert f"{tmp_path / 'in' / 'b.jsonl'}: the file is empty" in err

    def test_a_directory_without_trace_files(self, tmp_path: Path, rules: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "none").mkdir()
        code, _, err = scan(capsys, rules, tmp_path / "none")
        assert 3 == code
        assert "no .json, .jsonl, .ndjson files" in err


# ------------------------------------------------------------------ streaming


def _many(traces: int) -> list[dict[str, Any]]:
    """Span groups as exporters batch them: one resource, a few spans each."""
    return [request(*(span(f"{t * 10 + i + 1:016x}", f"op-{i}", trace_id=f"{t + 1:032x}",
                           attributes=[{"key": f"k{j}", "value": {"stringValue": f"v{j}-{t}"}}
                                       for j in range(5)]) for i in range(5)))["resourceSpans"][0]
            for t in range(traces)]


def _peak(path: Path) -> int:
    tracemalloc.start()
    try:
        for _ in read_traces([path]):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class TestStreaming:
    """A single-object document is read one span group at a time, like JSON Lines."""

    def test_single_object_memory_is_close_to_json_lines(self, tmp_path: Path) -> None:
        groups = _many(800)
        single = tmp_path / "single.json"
        single.write_text(json.dumps({"resourceSpans": groups}, indent=1), encoding="utf-8")
        lines = tmp_path / "lines.jsonl"
        lines.write_text("".join(json.dumps({"resourceSpans": [g]}) + "\n" for g in groups),
                         encoding="utf-8")
        assert single.stat().st_size > 2_000_000

        # Whole-document loading peaked at several times the JSON Lines figure.
        assert _peak(single) < 1.3 * _peak(lines)

    def test_a_long_compact_line_is_streamed_with_the_same_result(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        groups = _many(30)
        path = tmp_path / "compact.json"
        path.write_text(json.dumps({"resourceSpans": groups}) + "\n" + json.dumps(good()) + "\n",
                        encoding="utf-8")
        expected = {t.trace_id: [s.span_id for s in t.spans] for t in read_traces([path])}
        monkeypatch.setattr(otlp, "STREAM_LINE_BYTES", 1024)
        assert expected == {t.trace_id: [s.span_id for s in t.spans] for t in read_traces([path])}
        assert 31 == len(expected)

    def test_a_document_whose_long_first_line_goes_on(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        first, second = _many(2)
        path = tmp_path / "t.json"
        path.write_text('{"resourceSpans": [' + json.dumps(first) + ",\n" + json.dumps(second) + "]}\n",
                        encoding="utf-8")
        monkeypatch.setattr(otlp, "STREAM_LINE_BYTES", 64)
        assert 2 == len(list(read_traces([path])))

    def test_errors_in_a_streamed_line_name_that_line(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bad = {"resourceSpans": [*_many(30), request(span("zz", "a"))["resourceSpans"][0]]}
        path = tmp_path / "t.jsonl"
        path.write_text(json.dumps(good()) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
        monkeypatch.setattr(otlp, "STREAM_LINE_BYTES", 1024)
        with pytest.raises(TraceSourceError, match=rf"^{re.escape(str(path))}:2: spanId"):
            list(read_traces([path]))

    def test_invalid_json_at_the_end_of_a_long_line(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp_path / "t.jsonl"
        text = json.dumps({"resourceSpans": _many(30)})
        path.write_text(json.dumps(good()) + "\n" + text[:-1] + ",}\n", encoding="utf-8")
        monkeypatch.setattr(otlp, "STREAM_LINE_BYTES", 1024)
        with pytest.raises(TraceSourceError) as info:
            list(read_traces([path]))
        # The "}" that follows the comma, as Python's json would say too.
        assert str(info.value).startswith(f"{path}:2:{len(text) + 1}: invalid JSON"), str(info.value)

    @pytest.mark.parametrize(("doc", "message"), [
        ({"resourceSpans": 7}, "resourceSpans is not a list"),
        ({"something": "else"}, "expected a JSON object with resourceSpans"),
        ({"trace": {"batches": request(span("0000000000000001", "a"))["resourceSpans"]}}, None),
    ])
    def test_document_shapes(self, tmp_path: Path, doc: dict[str, Any], message: str | None) -> None:
        path = tmp_path / "t.json"
        path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        if message is None:
            assert 1 == len(list(read_traces([path])))
            return
        with pytest.raises(TraceSourceError, match=f"^{re.escape(str(path))}: {message}"):
            list(read_traces([path]))

    @pytest.mark.parametrize("layout", ["lines", "pretty"])
    def test_a_byte_order_mark_is_skipped(self, tmp_path: Path, layout: str) -> None:
        path = tmp_path / "t.json"
        path.write_bytes(b"\xef\xbb\xbf" + text_of(good(), layout).encode())
        assert [TRACE] == [t.trace_id for t in read_traces([path])]

    def test_a_top_level_array_names_its_first_character(self, tmp_path: Path) -> None:
        path = tmp_path / "t.json"
        path.write_text("\n[\n  1\n]\n", encoding="utf-8")
        with pytest.raises(TraceSourceError, match=f"^{re.escape(str(path))}:2:1: expected a JSON object"):
            list(read_traces([path]))


# ------------------------------------------------------------------ duplicates and order


class TestDuplicateSpans:
    """A span exported four times (exporter retries) is one span."""

    def test_count_counts_spans_not_deliveries(self, tmp_path: Path, rules: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        retry = span("00000000000000aa", "http.retry")
        path = tmp_path / "t.jsonl"
        path.write_text("".join(text_of(request(retry), "lines") for _ in range(4)), encoding="utf-8")
        code, out, err = scan(capsys, rules, path)
        assert (0, "") == (code, out), err

    def test_distinct_spans_are_still_counted(self, tmp_path: Path, rules: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "t.jsonl"
        path.write_text(text_of(request(*(span(f"{i:016x}", "http.retry") for i in range(1, 4))), "lines"),
                        encoding="utf-8")
        code, out, _ = scan(capsys, rules, path)
        assert 1 == code
        assert "retries" == json.loads(out)["rule_id"]

    def test_every_assembled_trace_is_deduplicated(self) -> None:
        copy = Span(trace_id=TRACE, span_id="00000000000000aa", name="http.retry")
        trace = Trace(TRACE, [copy, Span(TRACE, "00000000000000aa", "http.retry"), copy])
        assert 1 == len(trace.spans) == len(trace.by_name["http.retry"])


class TestStableOrder:
    """The spans a violation lists are in start order whatever order the source delivered."""

    def _spans(self) -> list[dict[str, Any]]:
        return [span(f"{i:016x}", name, startTimeUnixNano=str(1_700_000_000_000_000_000 + start))
                for i, (name, start) in enumerate(
                    [("pii.access", 30), ("http.retry", 20), ("pii.access", 10), ("http.retry", 10),
                     ("pii.access", 10), ("http.retry", 5)], start=1)]

    def test_byte_identical_json_whatever_the_file_order(self, tmp_path: Path, rules: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
        spans = self._spans()
        forward, backward = tmp_path / "f.jsonl", tmp_path / "b.jsonl"
        forward.write_text(text_of(request(*spans), "lines"), encoding="utf-8")
        backward.write_text("".join(text_of(request(s), "lines") for s in reversed(spans)), encoding="utf-8")

        first = scan(capsys, rules, forward)
        second = scan(capsys, rules, backward)

        assert first[:2] == second[:2]
        audited, retries = (json.loads(line) for line in first[1].splitlines())
        assert ["0000000000000003", "0000000000000005", "0000000000000001"] == [
            s["span_id"] for s in audited["trigger_spans"]]
        assert audited["reason"].startswith(
            "Triggered by pii.access (span 0000000000000003), pii.access (span 0000000000000005), "
            "pii.access (span 0000000000000001)")
        assert ["0000000000000006", "0000000000000004", "0000000000000002"] == [
            s["span_id"] for s in retries["forbidden"][0]["spans"]]


# ------------------------------------------------------------------ reports


HOSTILE_TEXT = '=HYPERLINK("http://x") | <img src=x onerror=alert(1)> [a](javascript:x) `c` *e*\nnext'


def _violation(reason: str = HOSTILE_TEXT) -> Violation:
    return Violation(rule_id="audited", rule_name="Access is audited", severity="high", trace_id=TRACE,
                     reason=reason, frameworks=("SOC2",), controls=("CC6.1",), trigger_spans=(),
                     missing=(), forbidden=(), root_service="@svc", root_name="-2+3")


def _report() -> Report:
    moment = datetime(2026, 11, 1, tzinfo=UTC)
    found = {**_violation().to_json(), "found_at": moment, "trace_url": "http://tempo/trace/a b(c)"}
    version = {"version": "abc", "source": "rules|x.yaml", "condition": "when { a }\n```\nfence",
               "first_seen_at": moment}
    withdrawn = {**found, "status": "retracted", "retraction_reason": "<i>audit</i> | arrived\nlater"}
    rule = RuleFigures(rule_id="audited", name="+cmd|x", severity="high", frameworks=["SOC2"],
                       controls=["CC6.1"], versions=[version],
                       gaps=[Gap(moment, moment, "=gap | <b>reason</b>")], violations=[found],
                       retracted=[withdrawn])
    return Report(Filters(moment, moment), [ControlFigures("CC6.1", [rule])], Verdict(1, "h"), moment)


class TestReports:
    """Text from traces reaches reports through reasons and root names: it must stay text."""

    def test_violations_csv_prefixes_formulas(self) -> None:
        out = io.StringIO()
        write_stored_csv([StoredViolation(_violation(), datetime(2026, 11, 1, tzinfo=UTC), 1)], out)
        row = next(iter(__import__("csv").DictReader(io.StringIO(out.getvalue()))))
        assert row["reason"].startswith("'=HYPERLINK")
        assert ("'@svc", "'-2+3") == (row["root_service"], row["root_name"])

    def test_evidence_csv_prefixes_formulas(self) -> None:
        out = io.StringIO()
        render.write_csv(_report(), out)
        rows = list(__import__("csv").DictReader(io.StringIO(out.getvalue())))
        assert {"'+cmd|x"} == {r["rule_name"] for r in rows}

    def test_markdown_escapes_cells_links_and_html(self) -> None:
        out = io.StringIO()
        render.write_markdown(_report(), out)
        text = out.getvalue()
        line = next(t for t in text.splitlines() if "HYPERLINK" in t)
        assert "<img" not in text
        assert "<b>" not in text
        assert "&lt;img" in line
        assert re.search(r"(?<!\\)\|", line.split(")", 1)[1]) is None, line  # no bare pipe after the link
        assert "\\[a\\]" in line
        assert "(http://tempo/trace/a%20b%28c%29)" in line
        assert "next" in line  # the newline did not end the list item
        assert "### +cmd\\|x" in text
        assert "````" in text  # a longer fence than the condition's own
        assert "<i>" not in text
        assert "(retracted: &lt;i&gt;audit&lt;/i&gt; \\| arrived later)" in text  # a retraction's reason too

    def test_html_escapes(self) -> None:
        out = io.StringIO()
        render.write_html(_report(), out)
        text = out.getvalue()
        assert "<img" not in text
        assert "<b>reason" not in text
        assert "&lt;img src=x onerror=alert(1)&gt;" in text
        assert "<i>" not in text

    def test_table_shows_control_characters_escaped(self) -> None:
        out = io.StringIO()
        write_table([_violation("a \x1b]0;owned\x07 b")], out)
        assert "\x1b" not in out.getvalue()
        assert "\\u001b]0;owned\\u0007" in out.getvalue()


# ------------------------------------------------------------------ properties


@st.composite
def ids(draw: st.DrawFn, length: int) -> str:
    return draw(st.one_of(
        st.integers(1, 40).map(lambda n: f"{n:0{length}x}"),
        st.sampled_from(["", "zz", "not-an-id!", "00" * (length // 2 + 1)]),
    ))


NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.sampled_from(["1e400", "NaN", "-0", "9" * 5000, "1.5"]),
    st.integers(0, 2**64 - 1), st.floats(allow_nan=True, allow_infinity=True),
)
TEXT = st.text(st.characters(codec=None, blacklist_categories=()), max_size=8)
NAMES = st.one_of(st.sampled_from(["pii.access", "audit.log", "http.retry"]), TEXT)


@st.composite
def otlp_spans(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": draw(st.sampled_from([TRACE, OTHER]) | ids(32)),
                           "spanId": draw(ids(16)), "name": draw(NAMES)}
    if draw(st.booleans()):
        out["startTimeUnixNano"] = draw(NUMBERS)
    if draw(st.booleans()):
        out["attributes"] = [{"key": draw(TEXT), "value": draw(st.sampled_from(
            ["stringValue", "intValue", "doubleValue", "boolValue"]).map(lambda k: {k: None}))}]
        out["attributes"][0]["value"] = {next(iter(out["attributes"][0]["value"])): draw(
            st.one_of(NUMBERS, TEXT, st.booleans()))}
    return out


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], bool]:
    """File text (layout and damage drawn too), the spans it was made from, whether it is intact."""
    spans = draw(st.lists(otlp_spans(), max_size=6))
    spans += draw(st.sampled_from([[], spans[:1] * 3]))  # retried exports
    layout = draw(st.sampled_from(["lines", "pretty", "compact"]))
    text = text_of(request(*spans), layout) if layout != "lines" else "".join(
        text_of(request(s), "lines") for s in spans)
    damage = draw(st.sampled_from(["none", "none", "cut", "deep", "garbage", "surrogate"]))
    if damage == "cut" and text.strip():
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif damage == "deep":
        text = text.replace('"traceId"', '"x": ' + "[" * 3000 + "]" * 3000 + ', "traceId"', 1)
    elif damage == "garbage":
        text += draw(st.sampled_from(["}", "{", "nul", "\x00", "[1]"]))
    elif damage == "surrogate":
        text = text.replace('"name": "', '"name": "\\udc80', 1)
    return text, spans, damage == "none"


def _expected_retry_violations(spans: Sequence[dict[str, Any]]) -> int:
    """What ``never { count(http.retry) > 2 }`` must find when every span decoded."""
    per_trace: dict[str, set[str]] = {}
    for s in spans:
        if s["name"] == "http.retry":
            per_trace.setdefault(s["traceId"], set()).add(s["spanId"])
    return sum(len(v) > 2 for v in per_trace.values())


class TestProperties:
    """Random documents: exit 0/1 with the right violations, or exit 3 naming the file."""

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(documents())
    def test_a_clear_error_or_a_correct_result(self, doc: tuple[str, list[dict[str, Any]], bool]) -> None:
        text, spans, intact = doc
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp, "rules.yaml")
            rules.write_text(RULES, encoding="utf-8")
            path = Path(tmp, "traces.json")
            path.write_text(text, encoding="utf-8", errors="surrogatepass")

            try:
                decoded: list[Trace] | None = list(read_traces([path]))
                problem = ""
            except TraceSourceError as err:
                decoded, problem = None, str(err)
            code, out, err_text = scan_quietly(rules, path)

        out.encode("utf-8")
        err_text.encode("utf-8")
        if decoded is None:
            assert problem.startswith(str(path)), problem
            assert 3 == code, err_text
            assert err_text.startswith(f"error: {path}"), err_text
            return
        assert code in {0, 1}, err_text
        found = [json.loads(line) for line in out.splitlines()]
        assert (code == 1) == bool(found)
        retries = [v for v in found if v["rule_id"] == "retries"]
        if intact:
            assert _expected_retry_violations(
                [{**s, "traceId": s["traceId"].lower().zfill(32), "spanId": s["spanId"].lower().zfill(16)}
                 for s in spans]) == len(retries)
