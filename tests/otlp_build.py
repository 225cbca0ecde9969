"""Building OTLP/JSON by hand for tests and benchmarks, typed the way exporters type values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tempo_double import TempoDouble


def attribute(key: str, value: object) -> dict[str, Any]:
    """An OTLP KeyValue: bool, int (as a string, like the Collector), double or string."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def span(trace: int, n: int, name: str, at: float, *, parent: int | None = None,
         **attributes: object) -> dict[str, Any]:
    """One span of trace ``trace`` (span IDs are the trace number and ``n``), 1 ms long."""
    start = int(at * 1e9)
    made: dict[str, Any] = {
        "traceId": f"{trace:032x}", "spanId": f"{trace:08x}{n:08x}", "name": name, "kind": 1,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000),
        "attributes": [attribute(k, v) for k, v in attributes.items()]}
    if parent is not None:
        made["parentSpanId"] = f"{trace:08x}{parent:08x}"
    return made


def push(tempo: TempoDouble, *spans: dict[str, Any]) -> None:
    """One export: Tempo stores it as a fragment of its own."""
    tempo.push({"resourceSpans": [{
        "resource": {"attributes": [attribute("service.name", "api")]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}]}]})
