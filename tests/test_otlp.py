"""Reading OTLP/JSON traces from disk: files, JSON Lines, directories, Tempo bodies, errors."""

# The suite writes `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.

from __future__ import annotations

import base64
import json
import re
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from recordings import RECORDINGS as _RECORDINGS
from recordings import needs_recordings

from checker.errors import TraceSourceError
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from checker.traces.model import Span, Trace

RECORDINGS: Path = _RECORDINGS or Path("absent")

TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_C = "5b8efff798038103d269b633813fc60c"


# ------------------------------------------------------------------ helpers


def otlp_span(trace_id: str, span_id: str, name: str, **fields: Any) -> dict[str, Any]:
    """One OTLP/JSON span; extra fields (attributes, kind, status, parentSpanId ...) as given."""
    return {"traceId": trace_id, "spanId": span_id, "name": name, **fields}


def request(*spans: dict[str, Any], service: str = "svc",
            resource_attrs: list[dict[str, Any]] | None = None, key: str = "resourceSpans",
            ) -> dict[str, Any]:
    """An ExportTraceServiceRequest holding ``spans`` under one resource and one scope."""
    attrs = [{"key": "service.name", "value": {"stringValue": service}}, *(resource_attrs or [])]
    return {key: [{"resource": {"attributes": attrs},
                   "scopeSpans": [{"scope": {"name": "tests"}, "spans": list(spans)}]}]}


def write_pretty(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def write_lines(path: Path, *docs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def read_all(*paths: Path, budget_bytes: int | None = None) -> list[Trace]:
    if budget_bytes is None:
        return list(read_traces(list(paths)))
    return list(read_traces(list(paths), budget_bytes=budget_bytes))


def shape(traces: list[Trace]) -> dict[str, list[str]]:
    """Trace ID → span IDs in order: what grouping must preserve."""
    return {t.trace_id: [s.span_id for s in t.spans] for t in traces}


def only_span(traces: list[Trace]) -> Span:
    assert 1 == len(traces)
    assert 1 == len(traces[0].spans)
    return traces[0].spans[0]


def decode_one(tmp_path: Path, **fields: Any) -> Span:
    """The single span decoded from a file holding one span with ``fields``."""
    doc = request(otlp_span(TRACE_A, "00f067aa0ba902b7", "op", **fields))
    return only_span(read_all(write_lines(tmp_path / "one.jsonl", doc)))


# ------------------------------------------------------------------ tests


class TestSingleDocument:
    """A file holding one pretty-printed ExportTraceServiceRequest is decoded field by field."""

    def test_every_field_of_a_span_is_decoded(self, tmp_path: Path) -> None:
        doc = request(
            otlp_span(TRACE_A, "00f067aa0ba902b7", "GET /patients/{id}", kind="SPAN_KIND_SERVER",
                      startTimeUnixNano="1700000000000000000", endTimeUnixNano="1700000000250000000",
                      attributes=[{"key": "http.status_code", "value": {"intValue": "200"}}]),
            otlp_span(TRACE_A, "b7ad6b7169203331", "pii.access", parentSpanId="00f067aa0ba902b7",
                      status={"code": "STATUS_CODE_ERROR", "message": "denied"}),
            service="patient-api",
            resource_attrs=[{"key": "deployment.environment", "value": {"stringValue": "prod"}}],
        )
        path = write_pretty(tmp_path / "request.json", doc)
        assert len(path.read_text().splitlines()) > 20

        traces = read_all(path)

        assert [TRACE_A] == [t.trace_id for t in traces]
        root, child = traces[0].spans
        assert ("00f067aa0ba902b7", None, "GET /patients/{id}") == (
            root.span_id, root.parent_span_id, root.name)
        assert {"http.status_code": 200} == root.attributes
        assert {"service.name": "patient-api", "deployment.environment": "prod"} == root.resource
        assert (1_700_000_000_000_000_000, 1_700_000_000_250_000_000, 250_000_000) == (
            root.start_ns, root.end_ns, root.duration_ns)
        assert ("server", "unset") == (root.kind, root.status)
        assert ("b7ad6b7169203331", "00f067aa0ba902b7", "pii.access") == (
            child.span_id, child.parent_span_id, child.name)
        assert ("error", "denied", "unspecified") == (child.status, child.status_message, child.kind)
        assert "patient-api" == child.service
        assert root is traces[0].root

    def test_several_resources_and_scopes_in_one_request(self, tmp_path: Path) -> None:
        doc = {"resourceSpans": [
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "a"}}]},
             "scopeSpans": [{"spans": [otlp_span(TRACE_A, "0000000000000001", "one")]},
                            {"spans": [otlp_span(TRACE_B, "0000000000000002", "two")]}]},
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "b"}}]},
             "scopeSpans": [{"spans": [otlp_span(TRACE_A, "0000000000000003", "three")]}]},
        ]}
        traces = read_all(write_pretty(tmp_path / "multi.json", doc))

        assert {TRACE_A: ["0000000000000001", "0000000000000003"], TRACE_B: ["0000000000000002"]} == (
            shape(traces))
        assert ["a", "b"] == [s.service for s in traces[0].spans]

    def test_leading_blank_lines_before_a_pretty_document(self, tmp_path: Path) -> None:
        path = tmp_path / "blank.json"
        path.write_text("\n\n" + json.dumps(request(otlp_span(TRACE_A, "0000000000000001", "x")),
                                            indent=1), encoding="utf-8")
        assert {TRACE_A: ["0000000000000001"]} == shape(read_all(path))


class TestJsonLines:
    """JSON Lines of requests, as the Collector's file exporter writes them, are read line by line."""

    def test_each_line_is_one_request(self, tmp_path: Path) -> None:
        path = write_lines(tmp_path / "export.jsonl",
                           request(otlp_span(TRACE_A, "0000000000000001", "a")),
                           request(otlp_span(TRACE_B, "0000000000000002", "b")),
                           request(otlp_span(TRACE_C, "0000000000000003", "c")))
        assert [TRACE_A, TRACE_B, TRACE_C] == [t.trace_id for t in read_all(path)]

    def test_spans_of_one_trace_on_two_lines_form_one_trace(self, tmp_path: Path) -> None:
        path = write_lines(tmp_path / "export.jsonl",
                           request(otlp_span(TRACE_A, "0000000000000001", "root"), service="front"),
                           request(otlp_span(TRACE_B, "0000000000000009", "other")),
                           request(otlp_span(TRACE_A, "0000000000000002", "child",
                                             parentSpanId="0000000000000001"), service="back"))
        traces = read_all(path)

        assert {TRACE_A: ["0000000000000001", "0000000000000002"], TRACE_B: ["0000000000000009"]} == (
            shape(traces))
        assert ["front", "back"] == [s.service for s in traces[0].spans]
        assert ["root", "child"] == [s.name for s in traces[0].spans]

    def test_blank_lines_are_skipped(self, tmp_path: Path) -> None:
        path = tmp_path / "gaps.jsonl"
        first = json.dumps(request(otlp_span(TRACE_A, "0000000000000001", "a")))
        second = json.dumps(request(otlp_span(TRACE_A, "0000000000000002", "b")))
        path.write_text(f"\n{first}\n\n   \n{second}\n\n", encoding="utf-8")
        assert {TRACE_A: ["0000000000000001", "0000000000000002"]} == shape(read_all(path))

    def test_an_empty_file_is_an_error_not_a_clean_result(self, tmp_path: Path) -> None:
        path = tmp_path / "empty.jsonl"
        path.write_text("", encoding="utf-8")
        with pytest.raises(TraceSourceError, match="the file is empty"):
            read_all(path)


class TestDirectory:
    """A directory is searched recursively for JSON files, read in name order, traces grouped across files."""

    def test_recursive_in_name_order_ignoring_other_files(self, tmp_path: Path) -> None:
        # Written in reverse order, so that creation order cannot pass for name order.
        write_pretty(tmp_path / "sub" / "c.json", request(otlp_span(TRACE_C, "0000000000000003", "c")))
        write_lines(tmp_path / "b.jsonl", request(otlp_span(TRACE_B, "0000000000000002", "b")))
        write_pretty(tmp_path / "a.json", request(otlp_span(TRACE_A, "0000000000000001", "a")))
        (tmp_path / "notes.txt").write_text("not json", encoding="utf-8")
        (tmp_path / "rules.yaml").write_text("rules: []\n", encoding="utf-8")

        assert [TRACE_A, TRACE_B, TRACE_C] == [t.trace_id for t in read_all(tmp_path)]

    def test_one_trace_split_across_two_files_is_one_trace(self, tmp_path: Path) -> None:
        write_pretty(tmp_path / "1-first.json", request(
            otlp_span(TRACE_A, "0000000000000001", "pii.access"),
            otlp_span(TRACE_B, "0000000000000005", "unrelated")))
        write_lines(tmp_path / "2-second.jsonl", request(
            otlp_span(TRACE_A, "0000000000000002", "audit.log", parentSpanId="0000000000000001")))

        traces = read_all(tmp_path)

        assert {TRACE_A: ["0000000000000001", "0000000000000002"], TRACE_B: ["0000000000000005"]} == (
            shape(traces))
        assert {"pii.access", "audit.log"} == set(traces[0].by_name)

    def test_files_and_directories_given_together(self, tmp_path: Path) -> None:
        single = write_lines(tmp_path / "single.jsonl", request(otlp_span(TRACE_A, "0000000000000001", "a")))
        write_lines(tmp_path / "dir" / "more.ndjson", request(otlp_span(TRACE_A, "0000000000000002", "b")))

        assert {TRACE_A: ["0000000000000001", "0000000000000002"]} == shape(
            read_all(single, tmp_path / "dir"))


class TestIds:
    """Trace and span IDs in hex (any case, zeros stripped) or base64 become lowercase padded hex."""

    @pytest.mark.parametrize(("raw", "expected"), [
        ("0AF7651916CD43DD8448EB211C80319C", "0af7651916cd43dd8448eb211c80319c"),
        ("af7651916cd43dd8448eb211c80319c", "0af7651916cd43dd8448eb211c80319c"),
        ("ABC", "00000000000000000000000000000abc"),
        ("IiIiIiIiIiIiIiIiIiIiIg==", "22" * 16),
        ("N4Fr3QpzCctKElLk2nDmcg==", "37816bdd0a7309cb4a1252e4da70e672"),
    ])
    def test_trace_id(self, tmp_path: Path, raw: str, expected: str) -> None:
        doc = request(otlp_span(raw, "00f067aa0ba902b7", "op"))
        assert expected == only_span(read_all(write_lines(tmp_path / "t.jsonl", doc))).trace_id

    @pytest.mark.parametrize(("raw", "expected"), [
        ("00F067AA0BA902B7", "00f067aa0ba902b7"),
        ("f067aa0ba902b7", "00f067aa0ba902b7"),
        ("1", "0000000000000001"),
        ("ERERERERERE=", "11" * 8),
        ("D8qk2h6YQGw=", "0fcaa4da1e98406c"),
    ])
    def test_span_and_parent_id(self, tmp_path: Path, raw: str, expected: str) -> None:
        doc = request(otlp_span(TRACE_A, raw, "op", parentSpanId=raw))
        span = only_span(read_all(write_lines(tmp_path / "t.jsonl", doc)))
        assert (expected, expected) == (span.span_id, span.parent_span_id)

    def test_empty_parent_is_a_root(self, tmp_path: Path) -> None:
        assert decode_one(tmp_path, parentSpanId="").parent_span_id is None

    def test_hex_and_base64_forms_of_one_id_group_together(self, tmp_path: Path) -> None:
        write_lines(tmp_path / "a.jsonl", request(otlp_span(TRACE_A.upper(), "0000000000000001", "a")))
        write_lines(tmp_path / "b.jsonl", request(otlp_span(b64(TRACE_A), b64("0000000000000002"), "b")))
        write_lines(tmp_path / "c.jsonl", request(otlp_span(TRACE_A.lstrip("0"), "3", "c")))

        assert {TRACE_A: ["0000000000000001", "0000000000000002", "0000000000000003"]} == shape(
            read_all(tmp_path))


class TestAttributeValues:
    """Every comparable AnyValue decodes to the Python type the evaluator compares by."""

    @pytest.mark.parametrize(("value", "expected"), [
        ({"stringValue": "USD"}, "USD"),
        ({"intValue": "1500"}, 1500),
        ({"intValue": 1500}, 1500),
        ({"intValue": "-7"}, -7),
        ({"intValue": "9223372036854775807"}, 9223372036854775807),
        ({"doubleValue": 1500.5}, 1500.5),
        ({"doubleValue": 2}, 2.0),
        ({"boolValue": True}, True),
        ({"boolValue": False}, False),
        ({"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}, {"boolValue": True}]}},
         ("a", 2, True)),
        ({"arrayValue": {}}, ()),
    ], ids=lambda v: json.dumps(v) if isinstance(v, dict) else repr(v))
    def test_value(self, tmp_path: Path, value: dict[str, Any], expected: object) -> None:
        span = decode_one(tmp_path, attributes=[{"key": "k", "value": value}])
        actual = span.attributes["k"]
        assert (expected, type(expected)) == (actual, type(actual))

    def test_uncomparable_values_are_left_out(self, tmp_path: Path) -> None:
        span = decode_one(tmp_path, attributes=[
            {"key": "empty", "value": {}},
            {"key": "map", "value": {"kvlistValue": {"values": []}}},
            {"key": "kept", "value": {"stringValue": "x"}},
        ])
        assert {"kept": "x"} == span.attributes

    def test_resource_attributes_are_typed_too(self, tmp_path: Path) -> None:
        doc = request(otlp_span(TRACE_A, "0000000000000001", "op"), resource_attrs=[
            {"key": "replicas", "value": {"intValue": "3"}},
            {"key": "canary", "value": {"boolValue": True}},
        ])
        span = only_span(read_all(write_lines(tmp_path / "r.jsonl", doc)))
        assert {"service.name": "svc", "replicas": 3, "canary": True} == span.resource


class TestKindAndStatus:
    """Span kind and status code are accepted as enum names and as numbers."""

    @pytest.mark.parametrize(("raw", "expected"), [
        ("SPAN_KIND_SERVER", "server"),
        (2, "server"),
        ("SPAN_KIND_CLIENT", "client"),
        (3, "client"),
        ("SPAN_KIND_INTERNAL", "internal"),
        (1, "internal"),
        ("SPAN_KIND_PRODUCER", "producer"),
        (5, "consumer"),
        ("SPAN_KIND_UNSPECIFIED", "unspecified"),
        (0, "unspecified"),
    ])
    def test_kind(self, tmp_path: Path, raw: object, expected: str) -> None:
        assert expected == decode_one(tmp_path, kind=raw).kind

    def test_missing_kind_is_unspecified(self, tmp_path: Path) -> None:
        assert "unspecified" == decode_one(tmp_path).kind

    @pytest.mark.parametrize(("raw", "expected"), [
        ({"code": "STATUS_CODE_ERROR", "message": "boom"}, ("error", "boom")),
        ({"code": 2, "message": "upstream down"}, ("error", "upstream down")),
        ({"code": "STATUS_CODE_OK"}, ("ok", "")),
        ({"code": 1}, ("ok", "")),
        ({"code": "STATUS_CODE_UNSET"}, ("unset", "")),
        ({}, ("unset", "")),
    ])
    def test_status(self, tmp_path: Path, raw: dict[str, Any], expected: tuple[str, str]) -> None:
        span = decode_one(tmp_path, status=raw)
        assert expected == (span.status, span.status_message)


class TestTempoBodies:
    """Tempo's trace-by-ID bodies, v1 ``batches`` and v2 ``trace.resourceSpans``, decode like OTLP."""

    def _spans(self) -> list[dict[str, Any]]:
        return [
            otlp_span(b64("22" * 16), b64("11" * 8), "GET /x", kind="SPAN_KIND_SERVER"),
            otlp_span(b64("22" * 16), b64("33" * 8), "db.query", parentSpanId=b64("11" * 8),
                      kind="SPAN_KIND_CLIENT", status={"code": "STATUS_CODE_ERROR"},
                      attributes=[{"key": "rows", "value": {"intValue": "12"}}]),
        ]

    def _check(self, traces: list[Trace]) -> None:
        assert {"22" * 16: ["11" * 8, "33" * 8]} == shape(traces)
        root, child = traces[0].spans
        assert ("server", "client", "error") == (root.kind, child.kind, child.status)
        assert ("11" * 8, {"rows": 12}) == (child.parent_span_id, child.attributes)

    def test_v1_batches(self, tmp_path: Path) -> None:
        doc = request(*self._spans(), key="batches")
        self._check(read_all(write_pretty(tmp_path / "v1.json", doc)))

    def test_v2_trace_object(self, tmp_path: Path) -> None:
        doc = {"trace": request(*self._spans()), "metrics": {}}
        self._check(read_all(write_pretty(tmp_path / "v2.json", doc)))


class TestEventsAndLinks:
    """Span events (the ``exception`` event instrumentations record) and links are kept."""

    EVENT: ClassVar[dict[str, Any]] = {
        "timeUnixNano": "1795729020229499100", "name": "exception", "attributes": [
        {"key": "exception.type", "value": {"stringValue": "ValueError"}},
        {"key": "exception.escaped", "value": {"boolValue": False}}]}
    LINK: ClassVar[dict[str, Any]] = {"traceId": "33" * 16, "spanId": "44" * 8,
            "attributes": [{"key": "link.kind", "value": {"stringValue": "batch"}}]}

    def test_from_otlp_json(self, tmp_path: Path) -> None:
        span = decode_one(tmp_path, events=[self.EVENT, {"name": "retry"}], links=[self.LINK])

        assert [("exception", 1795729020229499100, {"exception.type": "ValueError",
                                                   "exception.escaped": False}), ("retry", 0, {})] == [
            (e.name, e.time_ns, e.attributes) for e in span.events]
        assert [("33" * 16, "44" * 8, {"link.kind": "batch"})] == [
            (link.trace_id, link.span_id, link.attributes) for link in span.links]

    def test_from_tempo_base64_ids(self, tmp_path: Path) -> None:
        link = {**self.LINK, "traceId": b64("33" * 16), "spanId": b64("44" * 8)}
        doc = {"trace": request(otlp_span(b64(TRACE_A), b64("00f067aa0ba902b7"), "op", links=[link],
                                          events=[self.EVENT]))}
        span = only_span(read_all(write_pretty(tmp_path / "v2.json", doc)))
        assert (("33" * 16, "44" * 8), "exception") == (
            (span.links[0].trace_id, span.links[0].span_id), span.events[0].name)

    def test_a_bad_link_id_is_an_error_naming_it(self, tmp_path: Path) -> None:
        with pytest.raises(TraceSourceError, match="link traceId"):
            decode_one(tmp_path, links=[{"traceId": "not an id", "spanId": "44" * 8}])


@needs_recordings
class TestTempoRecordings:
    """The bodies a real Tempo returned, and the dataset pushed to it, decode completely."""

    TRACE = "37816bdd0a7309cb4a1252e4da70e672"

    @pytest.mark.parametrize("name", ["trace_v1_json.json", "trace_v2_json.json"])
    def test_trace_by_id_sample(self, name: str) -> None:
        traces = read_all(RECORDINGS / "samples" / name)

        assert [self.TRACE] == [t.trace_id for t in traces]
        spans = {s.name: s for s in traces[0].spans}
        assert {"pii.access", "audit.log", "GET /patients/{id}"} == set(spans)
        root = spans["GET /patients/{id}"]
        assert ("0fcaa4da1e98406c", None, "server") == (root.span_id, root.parent_span_id, root.kind)
        assert root is traces[0].root
        assert {"http.status_code": 200} == root.attributes
        pii = spans["pii.access"]
        assert ("9c24279e9851d581", "0fcaa4da1e98406c", "internal", "unset") == (
            pii.span_id, pii.parent_span_id, pii.kind, pii.status)
        assert {"data.contains_pii": True, "resource": "patient_records", "user_id": "u1"} == pii.attributes
        assert "patient-api" == pii.service
        assert 1795729020229499022 == pii.start_ns

    def test_v1_and_v2_samples_agree(self) -> None:
        def fields(trace: Trace) -> list[tuple[object, ...]]:
            return [(s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.status, s.start_ns,
                     s.end_ns, s.attributes, s.resource) for s in trace.spans]

        (v1,) = read_all(RECORDINGS / "samples" / "trace_v1_json.json")
        (v2,) = read_all(RECORDINGS / "samples" / "trace_v2_json.json")
        assert fields(v1) == fields(v2)

    def test_dataset_has_56_traces_and_142_spans(self) -> None:
        traces = read_all(RECORDINGS / "dataset.otlp.json")

        assert (56, 142) == (len(traces), sum(len(t.spans) for t in traces))
        labels = json.loads((RECORDINGS / "labels.json").read_text(encoding="utf-8"))
        assert set(labels) == {t.trace_id for t in traces}


class TestErrors:
    """Malformed or missing input raises TraceSourceError naming the file and, where it has one, the line."""

    def test_invalid_json_on_line_3_of_json_lines(self, tmp_path: Path) -> None:
        good = json.dumps(request(otlp_span(TRACE_A, "0000000000000001", "a")))
        path = tmp_path / "export.jsonl"
        path.write_text(f'{good}\n{good}\n{{"resourceSpans": [\n{good}\n', encoding="utf-8")

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        assert str(info.value).startswith(f"{path}:3: invalid JSON")

    def test_invalid_json_in_a_pretty_document_names_line_and_column(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.json"
        path.write_text('{\n  "resourceSpans": [\n    {\n      "resource": {,\n', encoding="utf-8")

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        assert str(info.value).startswith(f"{path}:4:20: invalid JSON")

    @pytest.mark.parametrize("bad_id", [
        "not-an-id!", "", 12345, None, "0123456789abcdef0123456789abcdef01234567",
        pytest.param("payments", id="short-base64"),
    ])
    def test_bad_trace_id_on_line_2_of_json_lines(self, tmp_path: Path, bad_id: object) -> None:
        path = write_lines(tmp_path / "ids.jsonl",
                           request(otlp_span(TRACE_A, "0000000000000001", "a")),
                           request(otlp_span(bad_id, "0000000000000002", "b")))  # type: ignore[arg-type]

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        assert str(info.value).startswith(f"{path}:2: ")
        assert "traceId" in str(info.value)

    def test_bad_span_id_names_the_field(self, tmp_path: Path) -> None:
        path = write_lines(tmp_path / "ids.jsonl", request(otlp_span(TRACE_A, "zz", "a")))

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        assert str(info.value).startswith(f"{path}:1: ")
        assert "spanId" in str(info.value)

    @pytest.mark.parametrize("bad", [
        pytest.param({"traceId": "not-an-id!"}, id="traceId not hex nor base64"),
        pytest.param({"spanId": "zz"}, id="spanId not hex nor base64"),
        pytest.param({"traceId": 12345}, id="traceId a number"),
        pytest.param({"traceId": None}, id="traceId missing"),
        pytest.param({"traceId": "caf\u00e9"}, id="traceId not ASCII"),
        pytest.param({"attributes": [{"key": "n", "value": {"intValue": "twelve"}}]},
                     id="intValue not a number"),
        pytest.param({"traceId": "orders-eu!"}, id="traceId also used earlier as a value",
                     ),
    ])
    def test_a_bad_span_in_a_pretty_document_names_a_line_of_that_span(
            self, tmp_path: Path, bad: dict[str, Any]) -> None:
        good = otlp_span(TRACE_A, "0000000000000001", "a",
                         attributes=[{"key": "queue", "value": {"stringValue": "orders-eu!"}}])
        broken = {k: v for k, v in {**otlp_span(TRACE_A, "0000000000000002", "b"), **bad}.items()
                  if v is not None}
        path = tmp_path / "pretty.json"
        path.write_text(json.dumps(request(good, broken), indent=2, ensure_ascii=False), encoding="utf-8")
        lines = path.read_text(encoding="utf-8").splitlines()
        marker = next(n for n, text in enumerate(lines, start=1) if '"name": "b"' in text)
        first = max(n for n in range(1, marker) if lines[n - 1].strip() == "{")
        last = min(n for n in range(marker, len(lines) + 1) if lines[n - 1].strip().startswith("}"))

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        found = re.match(rf"{re.escape(str(path))}:(\d+): ", str(info.value))
        assert found is not None, str(info.value)
        assert first <= int(found.group(1)) <= last, (first, last, str(info.value))

    @pytest.mark.parametrize("line", ["[1, 2]", '{"something": "else"}', '{"resourceSpans": 7}'])
    def test_a_line_that_is_not_a_request(self, tmp_path: Path, line: str) -> None:
        good = json.dumps(request(otlp_span(TRACE_A, "0000000000000001", "a")))
        path = tmp_path / "mixed.jsonl"
        path.write_text(f"{good}\n{line}\n", encoding="utf-8")

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        assert str(info.value).startswith(f"{path}:2: ")

    def test_bad_int_value_is_a_source_error(self, tmp_path: Path) -> None:
        doc = request(otlp_span(TRACE_A, "0000000000000001", "a",
                                attributes=[{"key": "n", "value": {"intValue": "twelve"}}]))
        path = write_lines(tmp_path / "int.jsonl", doc)

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        assert str(info.value).startswith(f"{path}:1: ")

    def test_missing_path(self, tmp_path: Path) -> None:
        present = write_lines(tmp_path / "ok.jsonl", request(otlp_span(TRACE_A, "0000000000000001", "a")))
        missing = tmp_path / "nowhere" / "traces.json"

        with pytest.raises(TraceSourceError) as info:
            read_all(present, missing)
        assert str(info.value).startswith(f"{missing}: no such file or directory")

    def test_invalid_utf8_inside_a_document(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.json"
        path.write_bytes(b'{\n "resourceSpans": [],\n "x": "caf\xe9"\n}\n')

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        assert str(info.value).startswith(f"{path}:3: not UTF-8")

    def test_invalid_utf8_on_the_first_line(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.jsonl"
        path.write_bytes(b'{"resourceSpans": [], "x": "caf\xe9"}\n')

        with pytest.raises(TraceSourceError) as info:
            read_all(path)
        assert str(info.value).startswith(f"{path}:1: not UTF-8")


class TestPartitioned:
    """Above the memory budget, spans are partitioned on disk and grouped exactly as in memory."""

    def _inputs(self, tmp_path: Path) -> Path:
        folder = tmp_path / "in"
        write_lines(folder / "a.jsonl",
                    request(otlp_span(TRACE_A, "1", "a1"), otlp_span(TRACE_B, "2", "b1")),
                    request(otlp_span(TRACE_C, "3", "c1")),
                    request(otlp_span(TRACE_A, "4", "a2")))
        write_lines(folder / "b.json", request(otlp_span(TRACE_B, "5", "b2"), otlp_span(TRACE_A, "6", "a3")))
        return folder

    def test_budget_of_one_byte_groups_like_memory(self, tmp_path: Path) -> None:
        folder = self._inputs(tmp_path)

        in_memory = shape(read_all(folder))
        partitioned = shape(read_all(folder, budget_bytes=1))

        assert {
            TRACE_A: ["0000000000000001", "0000000000000004", "0000000000000006"],
            TRACE_B: ["0000000000000002", "0000000000000005"],
            TRACE_C: ["0000000000000003"],
        } == in_memory
        assert in_memory == partitioned

    def test_partitioned_spans_keep_their_fields(self, tmp_path: Path) -> None:
        doc = request(otlp_span(TRACE_A, "1", "op", kind=2, status={"code": 2, "message": "m"},
                                attributes=[{"key": "xs", "value": {"arrayValue": {"values": [
                                    {"intValue": "1"}, {"doubleValue": 1.5}]}}}]))
        path = write_lines(tmp_path / "one.jsonl", doc)

        (span,) = read_all(path, budget_bytes=1)[0].spans
        assert ("server", "error", "m", {"xs": (1, 1.5)}, {"service.name": "svc"}) == (
            span.kind, span.status, span.status_message, span.attributes, span.resource)

    def test_malformed_input_is_still_a_source_error(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(request(otlp_span(TRACE_A, "1", "a"))) + "\nnot json\n", encoding="utf-8")

        with pytest.raises(TraceSourceError) as info:
            read_all(path, budget_bytes=1)
        assert str(info.value).startswith(f"{path}:2: invalid JSON")

    def test_partitioning_stays_within_the_open_file_limit(self, tmp_path: Path) -> None:
        folder = self._inputs(tmp_path)
        expected = shape(read_all(folder))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, soft), hard))
        try:
            actual = shape(read_all(folder, budget_bytes=1))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert expected == actual
