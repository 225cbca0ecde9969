"""Peak memory of ``betrace scan --traces`` on one large single-object OTLP/JSON file.

Why it exists: the README promises that memory stays bounded whatever the size of the
trace files. JSON Lines always kept that promise; a single ExportTraceServiceRequest
object used to be loaded whole (a 500 MB file took 3.9 GB against 478 MB for the same
data as JSON Lines). This script writes the same spans three ways, a pretty-printed
object, a compact one-line object and JSON Lines, scans each in a subprocess and prints
each run's peak RSS and time, so a regression shows up as a number.

Run on demand (not part of the test suite)::

    /work/main/.venv/bin/python bench/bench_otlp_memory.py [--size-mb 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

PROJECT = Path(__file__).resolve().parent.parent
SPANS_PER_GROUP = 20
NAMES = ("GET /patients/{id}", "pii.access", "audit.log", "db.query", "http.request", "http.response",
         "http.retry", "cache.get")


def group(number: int) -> dict[str, Any]:
    """One resourceSpans item: a trace of 20 spans with typical attributes."""
    trace_id = f"{number + 1:032x}"
    start = 1_764_000_000_000_000_000 + number * 1_000_000_000
    spans = [{
        "traceId": trace_id, "spanId": f"{number * SPANS_PER_GROUP + i + 1:016x}",
        "parentSpanId": f"{number * SPANS_PER_GROUP + 1:016x}" if i else "",
        "name": NAMES[i % len(NAMES)], "kind": 2 if i == 0 else 3,
        "startTimeUnixNano": str(start + i * 1000), "endTimeUnixNano": str(start + i * 1000 + 900),
        "status": {"code": 1},
        "attributes": [
            {"key": "http.method", "value": {"stringValue": "GET"}},
            {"key": "http.status_code", "value": {"intValue": "200"}},
            {"key": "user_id", "value": {"stringValue": f"user-{number % 977}"}},
            {"key": "db.statement", "value": {"stringValue": "SELECT * FROM patients WHERE id = ?"}},
            {"key": "duration_ms", "value": {"doubleValue": 12.5}},
        ],
    } for i in range(SPANS_PER_GROUP)]
    return {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "patient-api"}}]},
            "scopeSpans": [{"scope": {"name": "bench"}, "spans": spans}]}


def groups(size_bytes: int) -> Iterator[str]:
    """Compact JSON texts of span groups until about ``size_bytes`` were produced."""
    written, number = 0, 0
    while written < size_bytes:
        text = json.dumps(group(number))
        written += len(text)
        number += 1
        yield text


def write_inputs(folder: Path, size_bytes: int) -> dict[str, Path]:
    """The same spans as a pretty object, a compact one-line object and JSON Lines."""
    paths = {"single, pretty": folder / "pretty.json", "single, one line": folder / "compact.json",
             "JSON Lines": folder / "lines.jsonl"}
    with (paths["single, pretty"].open("w") as pretty, paths["single, one line"].open("w") as compact,
          paths["JSON Lines"].open("w") as lines):
        pretty.write('{\n  "resourceSpans": [\n')
        compact.write('{"resourceSpans": [')
        for number, text in enumerate(groups(size_bytes)):
            separator = "," if number else ""
            pretty.write(f"{separator}\n" + json.dumps(json.loads(text), indent=2))
            compact.write(separator + text)
            lines.write('{"resourceSpans": [' + text + "]}\n")
        pretty.write("\n  ]\n}\n")
        compact.write("]}\n")
    return paths


def scan(path: Path) -> tuple[int, float, int]:
    """``betrace scan --traces path`` in a subprocess: exit code, seconds, peak RSS in bytes."""
    command = [sys.executable, "-m", "checker", "scan", "--rules", str(PROJECT / "rules.d"),
               "--traces", str(path), "--format", "json"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,  # noqa: S603
                               env={**os.environ, "PYTHONPATH": str(PROJECT)})
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if process.stderr is not None:
        process.stderr.close()
    return os.waitstatus_to_exitcode(status), elapsed, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200, help="size of the compact data (default 200)")
    parser.add_argument("--keep", type=Path, help="write the inputs here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="betrace-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = write_inputs(folder, int(args.size_mb * 1024 * 1024))
        print(f"{'input':<18} {'file MB':>8} {'peak RSS MB':>12} {'RSS/file':>9} {'seconds':>8}  exit")
        for label, path in paths.items():
            code, seconds, peak = scan(path)
            size = path.stat().st_size
            print(f"{label:<18} {size / 2**20:>8.0f} {peak / 2**20:>12.0f} {peak / size:>9.2f} "
                  f"{seconds:>8.1f}  {code}")


if __name__ == "__main__":
    main()
