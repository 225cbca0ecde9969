"""The checker's own traces: a span per window evaluation, its Tempo searches and fetches below it.

Exported over OTLP/HTTP protobuf to the Tempo it checks (the double ingests it as Tempo does),
then found there with TraceQL, as an operator would.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest
from daemon_kit import dataset, write_settings
from tempo_double import TempoDouble

from checker.cli import main
from checker.config import load_settings
from checker.errors import ConfigError
from checker.selftrace import NO_TRACER, tracer_for, traces_url
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from pathlib import Path

    from checker.traces.model import Span


def test_run_once_traces_its_windows_into_tempo(tmp_path: Path) -> None:
    moved = dataset(int(time.time()) // 300 * 300 - 1795729050 - 120)
    with TempoDouble() as tempo:
        tempo.push(moved)
        before = set(tempo.trace_ids)
        path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 't.db'}",
                              schedule__initial_lookback="10m",
                              tracing={"otlp_endpoint": tempo.url, "service_name": "betrace-test"})
        assert main(["run", "--once", "--config", str(path)]) in {0, 1}
        own = sorted(set(tempo.trace_ids) - before)
        assert own, "no span of the checker reached Tempo"
        spans = [s for trace_id in own for s in _spans(tempo, trace_id, tmp_path)]
    windows = {s.span_id: s for s in spans if s.name == "betrace.window"}
    assert windows
    assert all(s.resource["service.name"] == "betrace-test" for s in spans)
    searches = [s for s in spans if s.name == "tempo.search"]
    fetches = [s for s in spans if s.name == "tempo.fetch"]
    assert searches
    assert fetches
    assert all(s.parent_span_id in windows for s in searches + fetches)  # children of their window
    assert all(isinstance(s.attributes["tempo.query"], str) for s in searches)
    window = next(iter(windows.values()))
    assert {"betrace.rules", "betrace.window_start", "betrace.candidates"} <= window.attributes.keys()


def _spans(tempo: TempoDouble, trace_id: str, folder: Path) -> list[Span]:
    """A trace as stored in the double, read through the checker's own OTLP reader."""
    file = folder / f"{trace_id}.json"
    file.write_text(httpx.get(f"{tempo.url}/api/traces/{trace_id}").text)
    return [s for t in read_traces([file]) for s in t.spans]


def test_without_an_endpoint_the_tracer_is_a_no_op() -> None:
    tracer, flush = tracer_for(None, service="x")
    assert tracer is NO_TRACER
    flush()


@pytest.mark.parametrize(("written", "url"), [
    ("http://tempo:4318", "http://tempo:4318/v1/traces"),
    ("https://otlp.example.com/v1/traces", "https://otlp.example.com/v1/traces"),
    ("tempo:4318", None),
    ("ftp://x", None),
])
def test_endpoints(written: str, url: str | None) -> None:
    assert url == traces_url(written)


def test_a_bad_endpoint_is_a_config_error(tmp_path: Path) -> None:
    path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store="sqlite:///x.db",
                          tracing={"otlp_endpoint": "tempo:4318"})
    with pytest.raises(ConfigError, match=r"tracing\.otlp_endpoint"):
        load_settings(path)
