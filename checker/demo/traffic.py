"""``betrace demo``: realistic traces over OTLP/HTTP, a chosen share of them breaking rules.

The traces are the bundled demo traces (a patient portal, checkout, an admin API,
deployments, retries), sorted once into those the starter rules pass and those they flag,
then sent again and again with fresh trace and span IDs and timestamps moved to now, so a
whole pipeline (Tempo, the daemon, Slack) can be watched working.
"""

from __future__ import annotations

import asyncio
import copy
import random
import secrets
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from checker.engine import Scanner
from checker.errors import TraceSourceError, UsageError
from checker.rules.load import load_paths
from checker.selftrace import traces_url
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)


def demo_file() -> Path:
    """The bundled traces."""
    return Path(str(resources.files("checker") / "demo" / "traces.otlp.jsonl"))


@dataclass(frozen=True)
class Template:
    """One demo trace: its resourceSpans, whatever lines of the file they came from."""

    trace_id: str
    resource_spans: list[dict[str, Any]]


def templates(rules_dir: Path) -> tuple[list[Template], list[Template]]:
    """(passing, violating) demo traces, as the rules in ``rules_dir`` judge them."""
    import json  # noqa: PLC0415  (only the demo reads raw OTLP)

    path = demo_file()
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope in resource_spans.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    trace_id = span["traceId"]
                    single = {**resource_spans, "scopeSpans": [{**scope, "spans": [span]}]}
                    by_trace.setdefault(trace_id, []).append(single)
    ruleset = load_paths([rules_dir])
    flagged = {v.trace_id for v in Scanner(ruleset.rules).scan(read_traces([path]))}
    every = [Template(trace_id, parts) for trace_id, parts in sorted(by_trace.items())]
    return [t for t in every if t.trace_id not in flagged], [t for t in every if t.trace_id in flagged]


def instantiate(template: Template, now_ns: int) -> dict[str, Any]:
    """An ExportTraceServiceRequest: fresh IDs, the trace starting at ``now_ns``."""
    trace_id = secrets.token_hex(16)
    span_ids: dict[str, str] = {}
    parts = copy.deepcopy(template.resource_spans)
    spans = [span for part in parts for scope in part["scopeSpans"] for span in scope["spans"]]
    start = min(int(span["startTimeUnixNano"]) for span in spans)
    for span in spans:
        span["traceId"] = trace_id
        span["spanId"] = span_ids.setdefault(span["spanId"], secrets.token_hex(8))
        if span.get("parentSpanId"):
            span["parentSpanId"] = span_ids.setdefault(span["parentSpanId"], secrets.token_hex(8))
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            span[key] = str(int(span[key]) - start + now_ns)
        for event in span.get("events", []):
            event["timeUnixNano"] = str(int(event["timeUnixNano"]) - start + now_ns)
    return {"resourceSpans": parts}


def endpoint(url: str) -> str:
    """``http://tempo:4318`` → ``http://tempo:4318/v1/traces``; a URL with a path is kept."""
    found = traces_url(url)
    if found is None:
        raise UsageError(f"--otlp {url!r} is not an http(s) URL", hint="e.g. --otlp http://localhost:4318")
    return found


@dataclass
class Sent:
    """What the generator sent."""

    traces: int = 0
    violating: int = 0


async def send(url: str, *, rate: float, violations: float, count: int | None, rules_dir: Path,
               seed: int | None = None, on_sent: Callable[[Sent], None] | None = None) -> Sent:
    """Send ``rate`` traces a second (``count`` in all, or until cancelled)."""
    if not 0 <= violations <= 1:
        raise UsageError(f"--violations {violations} must be between 0 and 1")
    if rate <= 0:
        raise UsageError(f"--rate {rate} must be positive")
    passing, violating = templates(rules_dir)
    if (not violating and violations > 0) or (not passing and violations < 1):
        raise UsageError(f"the rules in {rules_dir} leave no demo trace to pick for that share")
    chooser = random.Random(seed)  # noqa: S311 - demo traffic, not cryptography
    target, sent = endpoint(url), Sent()
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        while count is None or sent.traces < count:
            bad = chooser.random() < violations
            body = instantiate(chooser.choice(violating if bad else passing), time.time_ns())
            try:
                response = await client.post(target, json=body)
            except httpx.TransportError as err:
                raise TraceSourceError(f"{target}: cannot send: {type(err).__name__}",
                                       hint="is the OTLP/HTTP receiver (Tempo's port 4318) up?") from None
            if response.status_code >= 300:
                raise TraceSourceError(f"{target} answered {response.status_code}: {response.text[:200]}")
            sent.traces += 1
            sent.violating += bad
            if on_sent is not None:
                on_sent(sent)
            await asyncio.sleep(max(0.0, started + sent.traces / rate - time.monotonic()))
    return sent
