"""The checker's own traces: one span per window evaluation, its Tempo searches and fetches below it.

Operators then see the checker's load in the Tempo it checks (``tracing.otlp_endpoint``). The
tracer is handed to the parts that make spans, never set process-wide, so that tests and
several daemons in one process keep theirs apart; without an endpoint it is OpenTelemetry's
no-op tracer, and a span costs a function call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from checker import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

NO_TRACER: trace.Tracer = trace.NoOpTracer()
SCOPE = "betrace-checker"
EXPORT_TIMEOUT_SECONDS = 10.0


def traces_url(url: str) -> str | None:
    """``http://tempo:4318`` → ``http://tempo:4318/v1/traces``; a URL with a path is kept.

    None when it is not an http(s) URL.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        return None
    return url if parsed.path not in {"", "/"} else str(parsed.copy_with(path="/v1/traces"))


def tracer_for(endpoint: str | None, *, service: str, headers: Mapping[str, str] | None = None,
               exporter: SpanExporter | None = None) -> tuple[trace.Tracer, Callable[[], None]]:
    """A tracer exporting over OTLP/HTTP (protobuf) to ``endpoint``, and the shutdown that flushes it.

    ``exporter`` replaces the OTLP one (tests). Spans are batched in a background thread;
    an unreachable endpoint costs dropped spans and a log line from the SDK, never a window.
    """
    if endpoint is None and exporter is None:
        return NO_TRACER, lambda: None
    provider = TracerProvider(resource=Resource.create({"service.name": service,
                                                        "service.version": __version__}))
    provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter(
        endpoint=endpoint, headers=dict(headers or {}), timeout=EXPORT_TIMEOUT_SECONDS)))
    return provider.get_tracer(SCOPE, __version__), provider.shutdown
