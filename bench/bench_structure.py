"""Benchmark structure and order checks (has sibling, has descendant, followed by) against a plain check.

Why it exists: a structure check relates every span of its left side to every span of its right
side, which done pair by pair is quadratic; ``engine/structure.py`` answers each relation in time
linear in the spans. This prints µs per trace for small traces and for one very large one, so a
quadratic slip shows as a jump of the large figure (20,000 spans: 1,000 times the spans of the
small traces should cost about 1,000 times as much, not a million).

    .venv/bin/python bench/bench_structure.py [--small 5000] [--large-spans 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time

from checker.engine import Scanner
from checker.rules.load import load_text
from checker.traces.model import Span, Trace

RULES = """
rules:
  - id: plain
    condition: "when { pii.access } always { audit.log }"
  - id: sibling
    condition: "when { pii.access } always { every pii.access has sibling audit.log }"
  - id: descendant
    condition: "when { req } always { req has descendant db.query }"
  - id: order
    condition: "when { pii.access } always { every pii.access followed by audit.log }"
"""


def spans(count: int, trace_id: str, rng: random.Random) -> list[Span]:
    """A random tree under one root: each span's parent is an earlier span, names from four."""
    made = [Span(trace_id, f"{0:016x}", "req", None, start_ns=0, end_ns=10**9)]
    for i in range(1, count):
        start = rng.randrange(10**9)
        made.append(Span(trace_id, f"{i:016x}", rng.choice(["pii.access", "audit.log", "db.query", "mid"]),
                         f"{rng.randrange(i):016x}", start_ns=start, end_ns=start + 10**6))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=5000, help="traces of 20 spans (default 5000)")
    parser.add_argument("--large-spans", type=int, default=20_000, help="spans of the large traces (20000)")
    parser.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rules = load_text(RULES, "bench.yaml").rules
    print(f"{'spans':>6}  {'rule':<11} {'µs per trace':>14}   (trace assembly, check and explanation)")
    for size, count in ((20, args.small), (args.large_spans, 3)):
        batches = [spans(size, f"{t:032x}", rng) for t in range(count)]
        for rule in rules:
            scanner = Scanner([rule])
            started = time.perf_counter()
            for batch in batches:
                list(scanner.check(Trace(batch[0].trace_id, batch)))
            print(f"{size:>6}  {rule.id:<11} {(time.perf_counter() - started) / count * 1e6:14.1f}")


if __name__ == "__main__":
    main()
