"""Tempo's protobuf answers, read into the JSON shapes ``answers`` proves and decodes.

Asked with ``Accept: application/protobuf``, Tempo answers a trace by ID and a search in
binary (shared/tempo.md §1.5, §2), a fraction of the JSON's bytes: IDs are raw bytes, not
base64, and numbers are varints, not decimal strings. Only Tempo's small wrapper messages are
declared here, built at run time; the trace inside is OTLP's ``TracesData``, wire-compatible
with ``tempopb.Trace``. Field numbers are grafana/tempo's ``pkg/tempopb/tempo.proto`` (Tempo 3,
checked against the generated ``tempo.pb.go`` and the recorded answers in tempo-recordings):

- ``TraceByIDResponse``: trace = 1, metrics = 2, status = 3 (``PartialStatus``: COMPLETE = 0,
  PARTIAL = 1), message = 4. ``/api/traces/ID`` answers ``tempopb.Trace`` (resourceSpans = 1).
- ``SearchResponse``: traces = 1, metrics = 2; ``TraceSearchMetadata.traceID`` = 1;
  ``SearchMetrics``: completedJobs = 4, totalJobs = 5. Fields not declared are skipped.

Each answer becomes the dict its JSON would have parsed to, so that one set of checks
(``answers``) decides whether it is Tempo's, and one decoder (``traces.otlp``) reads spans.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.trace.v1 import trace_pb2

from checker.tempo.errors import UnprovenAnswerError

PROTOBUF = "application/protobuf"
PACKAGE = "betrace.tempopb"  # not Tempo's own name: nothing else in the process can clash with it
PARTIAL = 1
_F = descriptor_pb2.FieldDescriptorProto
# message -> its fields: (name, number, type, message type or "", repeated)
_MESSAGES: dict[str, list[tuple[str, int, int, str, bool]]] = {
    "Trace": [("resourceSpans", 1, _F.TYPE_MESSAGE, ".opentelemetry.proto.trace.v1.ResourceSpans", True)],
    "TraceByIDMetrics": [("inspectedBytes", 1, _F.TYPE_UINT64, "", False)],
    "TraceByIDResponse": [
        ("trace", 1, _F.TYPE_MESSAGE, ".opentelemetry.proto.trace.v1.TracesData", False),
        ("metrics", 2, _F.TYPE_MESSAGE, f".{PACKAGE}.TraceByIDMetrics", False),
        ("status", 3, _F.TYPE_INT32, "", False),  # an enum on the wire is a varint
        ("message", 4, _F.TYPE_STRING, "", False)],
    "TraceSearchMetadata": [("traceID", 1, _F.TYPE_STRING, "", False)],
    "SearchMetrics": [("completedJobs", 4, _F.TYPE_UINT32, "", False),
                      ("totalJobs", 5, _F.TYPE_UINT32, "", False)],
    "SearchResponse": [
        ("traces", 1, _F.TYPE_MESSAGE, f".{PACKAGE}.TraceSearchMetadata", True),
        ("metrics", 2, _F.TYPE_MESSAGE, f".{PACKAGE}.SearchMetrics", False)],
}


@cache
def _message(name: str) -> type[Message]:
    """The class of one wrapper message, the file declaring them all added to the pool once."""
    pool = descriptor_pool.Default()
    if not _declared(pool):
        declared = descriptor_pb2.FileDescriptorProto(
            name="betrace/tempopb.proto", package=PACKAGE, syntax="proto3",
            dependency=[trace_pb2.DESCRIPTOR.name])
        for message, fields in _MESSAGES.items():
            entry = declared.message_type.add(name=message)
            for field, number, kind, type_name, repeated in fields:
                added = entry.field.add(name=field, number=number, type=kind,
                                        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
                if type_name:
                    added.type_name = type_name
        pool.AddSerializedFile(declared.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


def _declared(pool: descriptor_pool.DescriptorPool) -> bool:
    try:
        pool.FindFileByName("betrace/tempopb.proto")
    except KeyError:
        return False
    return True


def _parse(name: str, data: bytes) -> Any:
    """``data`` as message ``name``; a body that is not one is not Tempo's answer."""
    parsed = _message(name)()
    try:
        parsed.ParseFromString(data)
    except DecodeError as err:
        raise UnprovenAnswerError(f"answer is not a protobuf {name}: {err}") from None
    return parsed


def _otlp(traces: Message) -> dict[str, Any]:
    """OTLP as Tempo's JSON spells it: camelCase, base64 IDs, enum names, int64 as strings."""
    return json_format.MessageToDict(traces)


def search_body(data: bytes) -> dict[str, Any]:
    """A ``SearchResponse`` as the JSON ``answers.search_page`` reads (only what it reads)."""
    answer = _parse("SearchResponse", data)
    body: dict[str, Any] = {"traces": [{"traceID": item.traceID} for item in answer.traces]}
    if answer.HasField("metrics"):
        body["metrics"] = {"completedJobs": answer.metrics.completedJobs,
                           "totalJobs": answer.metrics.totalJobs}
    return body


def trace_v2_body(data: bytes) -> dict[str, Any]:
    """A ``TraceByIDResponse`` as the JSON ``answers.trace_v2`` reads."""
    answer = _parse("TraceByIDResponse", data)
    body: dict[str, Any] = {}
    if answer.HasField("trace"):
        body["trace"] = _otlp(answer.trace)
    if answer.HasField("metrics"):
        body["metrics"] = {}
    if answer.status:
        body["status"] = "PARTIAL" if answer.status == PARTIAL else f"status {answer.status}"
    if answer.message:
        body["message"] = answer.message
    return body


def trace_v1_body(data: bytes) -> dict[str, Any]:
    """A ``tempopb.Trace`` (v1) as the JSON ``answers.trace_v1`` reads."""
    return _otlp(_parse("Trace", data))
