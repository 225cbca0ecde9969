"""Benchmark: what pushing rules down to TraceQL saves over fetching every trace in scope.

Why: the product's promise is that Tempo does most of the work and only traces that may
violate are fetched. This measures it against the Tempo double over real HTTP: 2,000 traces
in scope of the PCI "payments over 1000 are fraud-checked and never bypass validation" rule,
1% of them violating, among as many out-of-scope payments, and compares with what a user
would otherwise script (search the scope, fetch every trace, evaluate locally).

Run on demand: ``.venv/bin/python bench/bench_tempo.py [--in-scope 2000] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from otlp_build import attribute as attr  # noqa: E402
from tempo_double import TempoDouble  # noqa: E402

from checker.engine import Scanner  # noqa: E402
from checker.rules.load import load_paths  # noqa: E402
from checker.tempo.client import TempoClient  # noqa: E402
from checker.tempo.run import evaluate_window  # noqa: E402
from checker.tempo.settings import TempoSettings  # noqa: E402
from checker.traceql import compile_rule  # noqa: E402

RULE_ID = "pci-dss-high-value-fraud-check"
START = 1_795_000_000
SPAN_NAMES = ["auth.verify", "cart.load", "inventory.check", "db.query", "cache.get",
              "pricing.quote", "tax.compute", "notification.enqueue"]


def checkout(rng: random.Random, index: int, amount: float, *, fraud_check: bool,
             bypass: bool) -> list[dict[str, Any]]:
    """One checkout trace of about 25 spans with realistic attributes."""
    trace_id = f"{rng.getrandbits(128):032x}"
    base = (START + index // 10) * 10**9
    spans: list[dict[str, Any]] = []

    def span(name: str, attributes: list[dict[str, Any]], parent: str | None) -> str:
        span_id = f"{rng.getrandbits(64):016x}"
        start = base + len(spans) * 1_000_000
        spans.append({"traceId": trace_id, "spanId": span_id, "parentSpanId": parent or "",
                      "name": name, "kind": 2 if parent is None else 1,
                      "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 900_000),
                      "attributes": attributes, "status": {}})
        return span_id

    root = span("POST /checkout", [attr("http.method", "POST"), attr("http.route", "/checkout"),
                                   attr("http.status_code", 200), attr("user.id", f"u{index}")], None)
    for _ in range(20):
        name = rng.choice(SPAN_NAMES)
        span(name, [attr("db.statement", "SELECT * FROM orders WHERE id = ?"),
                    attr("component", name.split(".")[0]), attr("retry", False),
                    attr("items", rng.randint(1, 9))], root)
    span("payment.charge_card", [attr("amount", amount), attr("currency", "EUR"),
                                 attr("processor", "stripe")], root)
    if fraud_check:
        span("payment.fraud_check", [attr("score", round(rng.random(), 3))], root)
    if bypass:
        span("payment.bypass_validation", [attr("reason", "manual override")], root)
    return spans


def dataset(in_scope: int, seed: int) -> tuple[list[dict[str, Any]], int]:
    """OTLP pushes of 50 traces each, and how many in-scope traces violate."""
    rng = random.Random(seed)
    violating = max(1, in_scope // 100)
    broken = set(rng.sample(range(in_scope), violating))
    traces = []
    for i in range(in_scope):
        # Half of the broken payments skip the fraud check, half bypass validation.
        skip, bypass = i in broken and i % 2 == 0, i in broken and i % 2 == 1
        traces.append(checkout(rng, i, float(rng.randint(1001, 5000)) + 0.5,
                               fraud_check=not skip, bypass=bypass))
    traces.extend(checkout(rng, in_scope + i, rng.randint(10, 1000), fraud_check=True, bypass=False)
                  for i in range(in_scope))
    rng.shuffle(traces)
    pushes = []
    for chunk in range(0, len(traces), 50):
        spans = [s for t in traces[chunk:chunk + 50] for s in t]
        pushes.append({"resourceSpans": [{"resource": {"attributes": [attr("service.name", "checkout")]},
                                          "scopeSpans": [{"scope": {"name": "bench"}, "spans": spans}]}]})
    return pushes, violating


def measure(double: TempoDouble, run: Any) -> dict[str, float]:
    before = len(double.requests)
    started = time.perf_counter()
    found = asyncio.run(run())
    wall = time.perf_counter() - started
    requests = double.requests[before:]
    return {"searches": sum(r.path == "/api/search" for r in requests),
            "fetches": sum("/traces/" in r.path for r in requests),
            "bytes": sum(r.response_bytes for r in requests), "wall": wall, "violations": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-scope", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rule = next(r for r in load_paths([ROOT / "rules.d"]).rules if r.id == RULE_ID)
    pushes, violating = dataset(args.in_scope, args.seed)
    end = START + args.in_scope // 5 + 60
    scope_query = compile_rule(rule.invariant).searches[0].query

    with TempoDouble() as double:
        for push in pushes:
            double.push(push)
        config = TempoSettings(url=double.url)  # the default search limit, as deployed

        async def pushed_down() -> int:
            async with TempoClient(config) as client:
                result = await evaluate_window([rule], client, START, end)
            return len(result.violations)

        async def fetch_everything() -> int:
            async with TempoClient(config) as client:
                ids = await client.search_all(scope_query, START, end)
                fetched = await asyncio.gather(*(client.fetch(t) for t in sorted(ids)))
            scanner = Scanner([rule])
            return sum(len(scanner.check(f.trace)) for f in fetched if f.trace is not None)

        ours = measure(double, pushed_down)
        baseline = measure(double, fetch_everything)

    print(f"rule      {RULE_ID}")
    print(f"traces    {args.in_scope:,} in scope ({violating} violating), "
          f"{args.in_scope:,} out of scope, ~25 spans each; Tempo double on loopback")
    print(f"\n{'':28}{'pushed down':>14}{'fetch everything':>18}")
    for key, label in (("searches", "searches"), ("fetches", "trace fetches"),
                       ("bytes", "bytes read"), ("violations", "violations found")):
        print(f"{label:<28}{int(ours[key]):>14,}{int(baseline[key]):>18,}")
    print(f"{'wall time':<28}{ours['wall']:>13.2f}s{baseline['wall']:>17.2f}s")
    fetch_target = violating + 0.05 * args.in_scope
    ratio = baseline["bytes"] / max(1.0, ours["bytes"])
    print(f"\ntarget    fetches <= violations + 5% of scope ({fetch_target:,.0f}): "
          f"{'MET' if ours['fetches'] <= fetch_target else 'MISSED'} ({int(ours['fetches'])})")
    print(f"target    >= 20x fewer bytes than fetching everything: "
          f"{'MET' if ratio >= 20 else 'MISSED'} ({ratio:.1f}x)")
    print(f"same violations as the baseline: {ours['violations'] == baseline['violations']}")


if __name__ == "__main__":
    main()
