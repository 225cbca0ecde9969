"""Tempo's answers in protobuf, for a request with ``Accept: application/protobuf``.

Tempo marshals the same messages it prints as JSON (shared/tempo.md §1.5, §2), so the double
builds its JSON answer as always and re-encodes it: ``json_format.ParseDict`` reads gogo's
JSON spelling (base64 IDs, enum names, uint64 as strings). The messages are declared here
from grafana/tempo's ``pkg/tempopb/tempo.proto`` (Tempo 3, as generated in ``tempo.pb.go``),
independently of the checker's own declarations, so that a wrong field number on either side
shows; ``tempopb.Trace`` is OTLP's ``TracesData`` on the wire.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

PROTOBUF = "application/protobuf"
_FILE = "tempo_double/tempopb.proto"
_F = descriptor_pb2.FieldDescriptorProto
_KEY_VALUE = ".opentelemetry.proto.common.v1.KeyValue"
# message -> (field, number, type, message or enum type, repeated)
_MESSAGES: dict[str, list[tuple[str, int, int, str, bool]]] = {
    "TraceByIDResponse": [("trace", 1, _F.TYPE_MESSAGE, ".opentelemetry.proto.trace.v1.TracesData", False),
                          ("metrics", 2, _F.TYPE_MESSAGE, ".tempopb.TraceByIDMetrics", False),
                          ("status", 3, _F.TYPE_ENUM, ".tempopb.PartialStatus", False),
                          ("message", 4, _F.TYPE_STRING, "", False)],
    "TraceByIDMetrics": [("inspectedBytes", 1, _F.TYPE_UINT64, "", False)],
    "SearchResponse": [("traces", 1, _F.TYPE_MESSAGE, ".tempopb.TraceSearchMetadata", True),
                       ("metrics", 2, _F.TYPE_MESSAGE, ".tempopb.SearchMetrics", False)],
    "TraceSearchMetadata": [("traceID", 1, _F.TYPE_STRING, "", False),
                            ("rootServiceName", 2, _F.TYPE_STRING, "", False),
                            ("rootTraceName", 3, _F.TYPE_STRING, "", False),
                            ("startTimeUnixNano", 4, _F.TYPE_UINT64, "", False),
                            ("durationMs", 5, _F.TYPE_UINT32, "", False),
                            ("spanSet", 6, _F.TYPE_MESSAGE, ".tempopb.SpanSet", False),
                            ("spanSets", 7, _F.TYPE_MESSAGE, ".tempopb.SpanSet", True),
                            ("serviceStats", 8, _F.TYPE_MESSAGE,
                             ".tempopb.TraceSearchMetadata.ServiceStatsEntry", True)],
    "ServiceStats": [("spanCount", 1, _F.TYPE_UINT32, "", False),
                     ("errorCount", 2, _F.TYPE_UINT32, "", False)],
    "SpanSet": [("spans", 1, _F.TYPE_MESSAGE, ".tempopb.Span", True),
                ("matched", 2, _F.TYPE_UINT32, "", False),
                ("attributes", 3, _F.TYPE_MESSAGE, _KEY_VALUE, True)],
    "Span": [("spanID", 1, _F.TYPE_STRING, "", False), ("name", 2, _F.TYPE_STRING, "", False),
             ("startTimeUnixNano", 3, _F.TYPE_UINT64, "", False),
             ("durationNanos", 4, _F.TYPE_UINT64, "", False),
             ("attributes", 5, _F.TYPE_MESSAGE, _KEY_VALUE, True)],
    "SearchMetrics": [("inspectedTraces", 1, _F.TYPE_UINT32, "", False),
                      ("inspectedBytes", 2, _F.TYPE_UINT64, "", False),
                      ("totalBlocks", 3, _F.TYPE_UINT32, "", False),
                      ("completedJobs", 4, _F.TYPE_UINT32, "", False),
                      ("totalJobs", 5, _F.TYPE_UINT32, "", False),
                      ("totalBlockBytes", 6, _F.TYPE_UINT64, "", False),
                      ("inspectedSpans", 7, _F.TYPE_UINT64, "", False)],
}


def _add_fields(message: descriptor_pb2.DescriptorProto,
                fields: list[tuple[str, int, int, str, bool]]) -> None:
    for name, number, kind, type_name, repeated in fields:
        field = message.field.add(name=name, number=number, type=kind,
                                  label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
        if type_name:
            field.type_name = type_name


@cache
def message(name: str) -> type[Message]:
    """The class of Tempo's message ``name`` (``tempopb.<name>``)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        declared = descriptor_pb2.FileDescriptorProto(
            name=_FILE, package="tempopb", syntax="proto3",
            dependency=[trace_pb2.DESCRIPTOR.name, common_pb2.DESCRIPTOR.name])
        status = declared.enum_type.add(name="PartialStatus")
        status.value.add(name="COMPLETE", number=0)
        status.value.add(name="PARTIAL", number=1)
        for message_name, fields in _MESSAGES.items():
            message = declared.message_type.add(name=message_name)
            _add_fields(message, fields)
            if message_name == "TraceSearchMetadata":
                entry = message.nested_type.add(name="ServiceStatsEntry")
                entry.options.map_entry = True
                _add_fields(entry, [("key", 1, _F.TYPE_STRING, "", False),
                                    ("value", 2, _F.TYPE_MESSAGE, ".tempopb.ServiceStats", False)])
        pool.AddSerializedFile(declared.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tempopb.{name}"))


def search(payload: dict[str, Any]) -> bytes:
    """A search answer (its JSON) as ``tempopb.SearchResponse``."""
    return _encode("SearchResponse", payload)


def trace_v2(payload: dict[str, Any]) -> bytes:
    """A v2 trace answer (its JSON) as ``tempopb.TraceByIDResponse``."""
    return _encode("TraceByIDResponse", payload)


def trace_v1(payload: dict[str, Any]) -> bytes:
    """A v1 trace answer (its JSON, ``batches``) as ``tempopb.Trace``."""
    traces = trace_pb2.TracesData()
    json_format.ParseDict({"resourceSpans": payload["batches"]}, traces)
    return traces.SerializeToString()


def _encode(name: str, payload: dict[str, Any]) -> bytes:
    encoded = message(name)()
    json_format.ParseDict(payload, encoded)
    return encoded.SerializeToString()


def otlp_request(body: bytes) -> dict[str, Any]:
    """An OTLP/HTTP protobuf ``ExportTraceServiceRequest`` as the OTLP/JSON the double ingests.

    OTLP/JSON writes IDs in hex where protobuf's JSON mapping writes bytes in base64.
    """
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: PLC0415

    request = json_format.MessageToDict(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
    for resource_spans in request.get("resourceSpans", []):
        for scope in resource_spans.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64decode(span[key]).hex()
    return request
