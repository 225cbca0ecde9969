"""Benchmark: what settled verdicts cost Tempo, and what they fix, on a simulated live daemon.

Why: a final pass per window must not double the load on Tempo (issue 13's targets: under 30 %
more searches than one pass per window, no extra fetch of a trace judged whole and unchanged),
and after settling the stored violations must be exactly those of the finished traces.

The daemon runs in-process with a settable clock against the Tempo double over real HTTP: the
starter rules of ``rules.d/``, ``every: 1m``, demo traffic (``checker.demo.traffic``) at
``--rate`` traces/s for ``--minutes`` simulated minutes. Each trace reaches Tempo
``--pipeline-delay`` after it starts (batch processor + tail sampling); a ``--split`` share is
exported in two parts, its last child spans ``--late`` later still (a second fragment). One
``run_once`` per simulated minute, when the daemon's interval trigger would fire (as a window of
the one-minute grid becomes due: its end plus ``evaluation_delay``), after the pushes that
arrived by then; then the clock runs on until every window is settled. Two configurations over
the same traffic:

- single pass: ``settle`` equal to ``evaluation_delay``, every window judged once, finally;
- settled: ``settle: 10m``, a provisional and a final pass per window.

Rules due at an identical window are evaluated together (a group: issue 14), their searches
shared and each candidate fetched once for all of them, so Tempo requests are counted per
group-window, not per rule-window: with the starter rules on one schedule, the group is all of
them. The daemon is driven through its public entry points (``benchkit.run_daemon``); each
request is classified from the double's request log, attributed to a pass by wrapping the
judge's group entry points (``WindowJudge.commit_group``, ``commit_final_group``), and the
final pass's ``_settled`` is wrapped to see what each rule's provisional pass judged (why a
trace was fetched again). Shards run one at a time (``parallel_rules: 1``) so each request is
counted against the pass that made it. Run on demand:
``.venv/bin/python bench/bench_settle.py [--rate 5] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import math
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchkit import run_daemon  # noqa: E402
from daemon_kit import Clock, write_settings  # noqa: E402
from tempo_double import TempoDouble  # noqa: E402

import checker.tempo.run as tempo_run  # noqa: E402
from checker.config import load_settings  # noqa: E402
from checker.daemon.judge import Member, Settling, WindowJudge  # noqa: E402
from checker.demo.traffic import Template, instantiate, templates  # noqa: E402
from checker.engine import Scanner  # noqa: E402
from checker.log import configure  # noqa: E402
from checker.rules.load import load_paths  # noqa: E402
from checker.store import Store  # noqa: E402
from checker.timeparse import duration_seconds  # noqa: E402
from checker.traceql import compile_rule  # noqa: E402

RULES_D = ROOT / "rules.d"
START = 2_000_000_000  # the first trace's second (unix); the clock starts a minute or so later


Key = tuple[str, int]  # (group, window start) of one group's window (``group_name``)


@dataclass
class Pass:
    """Tempo requests of one kind of pass, per group-window (a final pass's go to its first window).

    A group is the rules evaluated together (their searches shared, each trace fetched once), so
    its requests are counted once for the group, never split between its rules.
    """

    passes: int = 0
    windows: set[Key] = field(default_factory=set)
    searches: Counter[Key] = field(default_factory=Counter)
    fetches: Counter[Key] = field(default_factory=Counter)
    fetched: Counter[str] = field(default_factory=Counter)  # final passes: why each fetch
    # Searches by kind: a rule's query, the same query again over a cut window (a full page),
    # and the final pass's "anything new?" search (in parts when too long for one request).
    kinds: Counter[str] = field(default_factory=Counter)
    cut_by_query: Counter[str] = field(default_factory=Counter)
    cut_by_group: Counter[str] = field(default_factory=Counter)
    new_by_group: Counter[str] = field(default_factory=Counter)

    def add(self, group: str, starts: list[int], searches: list[Any], fetches: int) -> None:
        seen: set[str] = set()
        for request in searches:
            query = request.params.get("q", "")
            if "trace:id" in query:
                self.kinds["anything new?"] += 1
                self.new_by_group[group] += 1
            elif query in seen:
                self.kinds["rule query, window cut (page full)"] += 1
                self.cut_by_query[query] += 1
                self.cut_by_group[group] += 1
            else:
                self.kinds["rule query"] += 1
            seen.add(query)
        self.passes += 1
        self.windows |= {(group, s) for s in starts}
        self.searches[(group, starts[0])] += len(searches)
        self.fetches[(group, starts[0])] += fetches

    def total(self, key: str, over: set[Key]) -> int:
        counts: Counter[Key] = getattr(self, key)
        return sum(n for k, n in counts.items() if k in over)


@dataclass
class Traffic:
    """What the simulation pushes: (arrival second, OTLP request), and each finished trace."""

    pushes: list[tuple[float, dict[str, Any]]]
    finished: dict[str, dict[str, Any]]
    split: set[str]


def spans_of(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for part in request["resourceSpans"] for scope in part["scopeSpans"] for s in scope["spans"]]


def keep(request: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    """The request with only the spans whose IDs are ``wanted`` (empty parts dropped)."""
    parts = []
    for part in request["resourceSpans"]:
        scopes = [{**scope, "spans": [s for s in scope["spans"] if s["spanId"] in wanted]}
                  for scope in part["scopeSpans"]]
        scopes = [scope for scope in scopes if scope["spans"]]
        if scopes:
            parts.append({**part, "scopeSpans": scopes})
    return {"resourceSpans": parts}


def traffic(args: argparse.Namespace) -> Traffic:
    """``rate`` traces a second; ``violating`` of them from the flagged demo traces."""
    rng = random.Random(args.seed)
    passing, violating = templates(RULES_D)
    pushes: list[tuple[float, dict[str, Any]]] = []
    finished: dict[str, dict[str, Any]] = {}
    split: set[str] = set()
    total = int(args.rate * args.minutes * 60)
    for i in range(total):
        start = START + i / args.rate
        pool: list[Template] = violating if rng.random() < args.violating else passing
        request = instantiate(rng.choice(pool), int(start * 1e9))
        spans = spans_of(request)
        trace_id = spans[0]["traceId"]
        finished[trace_id] = copy.deepcopy(request)
        arrives = start + args.pipeline_delay
        children = sorted((s for s in spans if s.get("parentSpanId")),
                          key=lambda s: (int(s["startTimeUnixNano"]), s["spanId"]))
        if children and rng.random() < args.split:
            late = {s["spanId"] for s in children[-max(1, len(children) // 3):]}
            early = {s["spanId"] for s in spans} - late
            pushes.append((arrives, keep(request, early)))
            pushes.append((arrives + args.late, keep(request, late)))
            split.add(trace_id)
        else:
            pushes.append((arrives, request))
    pushes.sort(key=lambda p: p[0])
    return Traffic(pushes, finished, split)


def truth_from_file(finished: dict[str, dict[str, Any]], rules_path: Path = RULES_D) -> set[tuple[str, str]]:
    import json  # noqa: PLC0415

    from checker.traces.otlp import read_traces  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "finished.otlp.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in finished.values()))
        rules = load_paths([rules_path]).rules
        return {(v.rule_id, v.trace_id) for v in Scanner(rules).scan(read_traces([path]))}


class Counting:
    """Counts each pass's Tempo requests from the double's log, one judge call (a group) at a time.

    The daemon runs through its public entry points (``benchkit.run_daemon``); only the judge's
    two group entry points are wrapped, to mark where each pass starts and ends in the log and
    which rules and windows it served, and the final pass's ``_settled``, to see what each rule's
    provisional pass had judged (why a trace was fetched again). With ``parallel_rules: 1`` one
    group at a time talks to Tempo, so the requests logged during a call are that call's.
    """

    def __init__(self, double: TempoDouble) -> None:
        self.double = double
        self.provisional = Pass()
        self.final = Pass()
        self._seen: dict[str, Seen] = {}
        self._saved: dict[str, Any] = {}

    def _delta(self, before: int) -> tuple[list[Any], list[str]]:
        requests = self.double.requests[before:]
        fetched = [r.path.rstrip("/").rsplit("/", 1)[-1] for r in requests if r.route == "trace"]
        return [r for r in requests if r.route == "search"], fetched

    def __enter__(self) -> Self:
        counting = self
        commit_group, commit_final_group = WindowJudge.commit_group, WindowJudge.commit_final_group
        settled = tempo_run._settled  # noqa: SLF001
        self._saved = {"commit_group": commit_group, "commit_final_group": commit_final_group,
                       "settled": settled}

        async def wrapped_group(judge: WindowJudge, members: list[Member], window: Any, **kwargs: Any) -> Any:
            before = len(counting.double.requests)
            results = await commit_group(judge, members, window, **kwargs)
            searches, fetched = counting._delta(before)
            # Judged at once finally (settle == delay, or a catch-up): a final pass of one window.
            provisional = any(m.provisional for m in members)
            into = counting.provisional if provisional else counting.final
            into.add(group_name(m.rule.id for m in members), [int(window[0].timestamp())], searches,
                     len(fetched))
            if not provisional:
                into.fetched["new candidate (single pass)"] += len(fetched)
            return results

        async def wrapped_final(judge: WindowJudge, settlings: list[Settling]) -> Any:
            before = len(counting.double.requests)
            counting._seen = {}
            results = await commit_final_group(judge, settlings)
            searches, fetched = counting._delta(before)
            # The rules of one final pass settle identical batches of windows.
            starts = [int(w.start.timestamp()) for w in settlings[0].windows]
            counting.final.add(group_name(s.rule.id for s in settlings), starts, searches, len(fetched))
            for trace_id in fetched:
                counting.final.fetched[why(trace_id, counting._seen)] += 1
            return results

        async def wrapped_settled(client: Any, outcomes: list[Any], provisional: Any, *rest: Any) -> None:
            candidates = {o.rule.id: frozenset(o.candidates) for o in outcomes}
            await settled(client, outcomes, provisional, *rest)
            counting._seen = {o.rule.id: Seen(candidates[o.rule.id], provisional.get(o.rule.id), o.unchanged)
                              for o in outcomes}

        WindowJudge.commit_group = wrapped_group  # type: ignore[method-assign,assignment]
        WindowJudge.commit_final_group = wrapped_final  # type: ignore[method-assign,assignment]
        tempo_run._settled = wrapped_settled  # type: ignore[assignment]  # noqa: SLF001
        return self

    def __exit__(self, *exc: object) -> None:
        WindowJudge.commit_group = self._saved["commit_group"]  # type: ignore[method-assign]
        WindowJudge.commit_final_group = self._saved["commit_final_group"]  # type: ignore[method-assign]
        tempo_run._settled = self._saved["settled"]  # noqa: SLF001


@dataclass(frozen=True)
class Seen:
    """One rule of a final pass: its candidates before settling, its provisional pass, what stands."""

    candidates: frozenset[str]
    provisional: Any  # tempo_run.Provisional, or None: no provisional pass to lean on
    unchanged: frozenset[str]


def group_name(rule_ids: Any) -> str:
    """A group of rules, as the report names it: its rule IDs, sorted, joined by ``+``."""
    return "+".join(sorted(rule_ids))


# A final-pass fetch serves every rule of the group that needs the trace: the first reason in
# this order among them names it.
REASONS = ("new candidate", "unfinished", "too many spans to ask about", "grown", "dropped violator")


def why_for(trace_id: str, seen: Seen) -> str | None:
    """Why one rule of a final pass needed ``trace_id`` fetched; None when it did not."""
    provisional = seen.provisional
    if trace_id in seen.unchanged:
        return None
    if trace_id not in seen.candidates:
        return "dropped violator" if provisional is not None and trace_id in provisional.violators else None
    if provisional is None or trace_id not in provisional.judged:
        return "new candidate"
    spans = provisional.judged[trace_id]
    if spans is None:
        return "unfinished"
    return "too many spans to ask about" if len(spans) > tempo_run.MAX_SEEN_SPANS else "grown"


def why(trace_id: str, seen: dict[str, Seen]) -> str:
    """Why a final pass fetched ``trace_id``, for the group (see ``REASONS``)."""
    if not seen:
        return "unknown"
    reasons = {why_for(trace_id, one) for one in seen.values()} - {None}
    for reason in REASONS:
        if reason in reasons:
            return reason
    # No rule of the group needed it: whole and unchanged for those that had it as a candidate.
    return "WHOLE AND UNCHANGED" if any(trace_id in one.unchanged for one in seen.values()) else "unknown"


@dataclass
class Outcome:
    label: str
    provisional: Pass
    final: Pass
    stored: set[tuple[str, str]]
    retracted: set[tuple[str, str]]
    runs: int
    wall: float
    failed: int
    found: dict[tuple[str, str], Any]


def simulate(label: str, args: argparse.Namespace, data: Traffic, settle: str) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # The first run when the daemon's interval trigger fires (``RuleSchedule.trigger``): as a
        # window of the one-minute grid becomes due (its end plus the delay), so each window is
        # judged as soon as a live daemon would judge it, not up to a minute later when the late
        # parts are all in. Looking back to the grid point before the first trace, every trace is judged.
        delay = math.ceil(duration_seconds(args.delay))
        first_run = math.ceil((START + 60 - delay) / 60) * 60 + delay
        lookback = first_run - START // 60 * 60
        clock = Clock.at(first_run)
        with TempoDouble(now=lambda: clock.now.timestamp()) as double:  # noqa: PLW0108
            settings = load_settings(write_settings(
                tmp, tempo_url=double.url, store=f"sqlite:///{tmp / 'betrace.db'}", rules_dir=args.rules,
                # The double answers a long "anything new?" search slowly (Python, every fragment).
                tempo={"url": double.url, "query_end_cutoff": "0s", "retries": 0, "timeout": "600s"},
                schedule={"every": "1m", "evaluation_delay": args.delay, "settle": settle,
                          "trace_idle": "30s", "initial_lookback": f"{lookback}s", "jitter": "0s",
                          "parallel_rules": 1}))
            pending = list(data.pushes)
            last_arrival = pending[-1][0]

            def deliver(now: float) -> None:
                while pending and pending[0][0] <= now:
                    double.push(pending.pop(0)[1])

            started = time.perf_counter()
            with Counting(double) as counting:
                # Until the last push is long settled: 10m + a batch (5m) + slack.
                runs = asyncio.run(run_daemon(settings, clock, step=60, before_run=deliver,
                                              until=last_arrival + 60 * (args.tail_minutes + 1)))
            wall = time.perf_counter() - started
        store = Store.open(settings.store)
        try:
            rows = store.violations()
            windows = {e["id"]: (e["window_start"].timestamp() - START, e["window_end"].timestamp() - START,
                                 e["verdict"]) for e in store.evaluations()}
            found = {(s.violation.rule_id, s.violation.trace_id): (s.status, windows[s.evaluation_id])
                     for s in rows}
            failed = sum(e["outcome"] == "failed" for e in store.evaluations())
        finally:
            store.close()
    stored = {(s.violation.rule_id, s.violation.trace_id) for s in rows if s.status != "retracted"}
    retracted = {(s.violation.rule_id, s.violation.trace_id) for s in rows if s.status == "retracted"}
    return Outcome(label, counting.provisional, counting.final, stored, retracted, runs, wall, failed, found)


def per(value: int, windows: int) -> str:
    return f"{value / windows:.2f}" if windows else "-"


def report(single: Outcome, settled: Outcome, expected: set[tuple[str, str]], data: Traffic,
           args: argparse.Namespace, *, queries: dict[str, list[str]]) -> None:
    """Print the comparison; ``queries`` names the rules whose plan searches each query."""
    print(f"traffic   {len(data.finished):,} demo traces ({args.rate:g}/s for {args.minutes} simulated min), "
          f"{len(data.split):,} exported in two parts (the second {args.late:g}s later), "
          f"each first part {args.pipeline_delay:g}s after the trace starts")
    print(f"rules     {len({r for r, _ in expected} | {r for r, _ in settled.stored})} of the starter rules "
          f"fire; every: 1m, evaluation_delay: {args.delay}; ground truth {len(expected):,} violations")
    report_costs(single, settled, queries)
    report_verdicts(single, settled, expected, data)


def report_costs(single: Outcome, settled: Outcome, queries: dict[str, list[str]]) -> None:
    """Tempo requests per group-window of both runs, by kind of search, and why each final-pass fetch."""
    # The group-windows both configurations judged finally (the newest ones were not settled yet).
    over = settled.final.windows & single.final.windows
    windows = len(over)
    groups = sorted({g for g, _ in single.final.windows | settled.final.windows
                     | settled.provisional.windows}, key=lambda g: (-g.count("+"), g))
    label = {g: f"group {i}" for i, g in enumerate(groups, 1)}
    print("\nrules evaluated together are counted together: a group's searches are shared and each trace "
          "is fetched once for all its rules")
    for g in groups:
        print(f"  {label[g]}: {g.count('+') + 1} rules ({g.replace('+', ', ')})")
    print(f"\nper group-window, over the {windows:,} group-windows settled in both runs")
    print(f"{'':24}{'single pass':>12}{'provisional':>14}{'final':>8}{'settled total':>15}{'extra':>8}")
    one: dict[str, int] = {}
    both: dict[str, int] = {}
    for key in ("searches", "fetches"):
        one[key] = single.final.total(key, over)
        prov, fin = settled.provisional.total(key, over), settled.final.total(key, over)
        both[key] = prov + fin
        print(f"{key:<24}{per(one[key], windows):>12}{per(prov, windows):>14}{per(fin, windows):>8}"
              f"{per(prov + fin, windows):>15}{(prov + fin - one[key]) / max(1, one[key]):>+8.0%}")
        print(f"{'  totals':<24}{one[key]:>12,}{prov:>14,}{fin:>8,}{prov + fin:>15,}")
    print(f"final passes: {settled.final.passes:,} over {len(settled.final.windows):,} group-windows "
          f"({len(settled.final.windows) / max(1, settled.final.passes):.1f} windows a pass)")
    ratio = (both["searches"] - one["searches"]) / max(1, one["searches"])
    for name, kind in (("single-pass run's passes", single.final),
                       ("provisional passes", settled.provisional), ("final passes", settled.final)):
        print(f"searches of the {name}: " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(kind.kinds.items())))
        if kind.cut_by_query:
            cut: Counter[str] = Counter()
            for query, n in kind.cut_by_query.items():
                for rule in queries.get(query, ["(a query of no rule)"]):
                    cut[rule] += n
            print("  windows cut, by rule whose query it is (a query shared by rules counts for each): "
                  + ", ".join(f"{r} {n:,}" for r, n in cut.most_common()))
    print(f"\n{'searches per window, by group':<44}{'single':>8}{'final':>8}{'extra':>8}"
          f"{'anything new?':>15}{'cut':>6}")
    for group in groups:
        mine = {k for k in over if k[0] == group}
        if not mine:
            continue
        alone, final = single.final.total("searches", mine), settled.final.total("searches", mine)
        print(f"{label[group]:<44}{per(alone, len(mine)):>8}{per(final, len(mine)):>8}"
              f"{final / max(1, alone):>+8.0%}{settled.final.new_by_group[group]:>15,}"
              f"{settled.final.cut_by_group[group]:>6,}")
    print("final-pass fetches by reason: " + (", ".join(
        f"{k} {v:,}" for k, v in sorted(settled.final.fetched.items())) or "none"))
    print(f"  (a trace is fetched once for its group: the first reason among its rules, in the order "
          f"{', '.join(REASONS)})")
    unchanged = settled.final.fetched.get("WHOLE AND UNCHANGED", 0)
    met = "MET" if ratio < 0.3 else "MISSED"
    print(f"\ntarget    < 30% more searches than one pass: {met} ({ratio:+.0%})")
    print(f"target    0 final-pass fetches of traces judged whole and unchanged: "
          f"{'MET' if unchanged == 0 else 'MISSED'} ({unchanged})")


def report_verdicts(single: Outcome, settled: Outcome, expected: set[tuple[str, str]], data: Traffic) -> None:
    """The stored violations of both runs against the local scanner over the finished traces."""
    for outcome in (single, settled):
        false_alerts = outcome.stored - expected
        missed = expected - outcome.stored
        print(f"\n{outcome.label}: {len(outcome.stored):,} violations standing, {len(outcome.retracted):,} "
              f"retracted; {outcome.runs} runs in {outcome.wall:.1f}s, {outcome.failed} windows failed")
        print(f"  equal to the truth: {outcome.stored == expected}; false alerts never withdrawn: "
              f"{len(false_alerts)}; missed violations: {len(missed)}")
        for name, pairs in (("false alerts", false_alerts), ("missed", missed)):
            if pairs:
                by_rule = Counter(rule for rule, _ in pairs)
                print(f"  {name} by rule: " + ", ".join(f"{r} {n}" for r, n in sorted(by_rule.items())))
            if pairs and outcome is settled:
                for rule, trace_id in sorted(pairs):
                    spans = spans_of(data.finished[trace_id])
                    times = sorted(int(sp["startTimeUnixNano"]) / 1e9 - START for sp in spans)
                    print(f"    {rule} {trace_id}: {outcome.found.get((rule, trace_id))}, "
                          f"split {trace_id in data.split}, spans at {[round(t, 2) for t in times]} "
                          f"(seconds after the first trace)")


def queries_of(rules_path: Path) -> dict[str, list[str]]:
    """Each search query of the rules' plans, and the rules that search it."""
    found: dict[str, list[str]] = {}
    for rule in load_paths([rules_path]).rules:
        for search in compile_rule(rule.invariant).searches:
            found.setdefault(search.query, []).append(rule.id)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="traces a second")
    parser.add_argument("--minutes", type=int, default=30, help="simulated minutes of traffic")
    parser.add_argument("--violating", type=float, default=0.05, help="share of violating demo traces")
    parser.add_argument("--split", type=float, default=0.10, help="share exported in two parts")
    parser.add_argument("--pipeline-delay", type=float, default=30.0, help="seconds to the first part")
    parser.add_argument("--late", type=float, default=35.0, help="seconds from the first part to the second")
    parser.add_argument("--delay", default="45s", help="evaluation_delay")
    parser.add_argument("--settle", default="10m")
    parser.add_argument("--tail-minutes", type=int, default=17, help="minutes run after the last push")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rules", type=Path, default=RULES_D, help="rules file or directory")
    args = parser.parse_args()
    configure(level=logging.WARNING)
    data = traffic(args)
    expected = truth_from_file(data.finished, args.rules)
    single = simulate("single pass (settle = evaluation_delay)", args, data, args.delay)
    settled = simulate(f"settled (settle {args.settle})", args, data, args.settle)
    report(single, settled, expected, data, args, queries=queries_of(args.rules))


if __name__ == "__main__":
    main()
