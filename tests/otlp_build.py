"""Building OTLP/JSON by hand for tests and benchmarks, typed the way exporters type values."""

from __future__ import annotations

from typing import Any


def attribute(key: str, value: object) -> dict[str, Any]:
    """An OTLP KeyValue: bool, int (as a string, like the Collector), double or string."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}
