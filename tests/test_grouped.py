"""Rules evaluated together: one evaluation per window, what ``scan --tempo`` finds, and replicas.

Against the Tempo test double over real HTTP, with the daemon on a settable clock.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import yaml
from daemon_kit import RULES_D, Clock, assert_contiguous, write_settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from otlp_build import push, span
from stores import needs_postgres, postgres_schema
from tempo_double import Fault, TempoDouble

from checker.config import load_settings
from checker.daemon import runner
from checker.daemon.factory import open_daemon
from checker.daemon.runner import RunSummary
from checker.demo.traffic import instantiate, templates
from checker.engine import Scanner
from checker.rules.load import load_paths
from checker.store import Store
from checker.tempo.client import TempoClient
from checker.tempo.run import evaluate_window
from checker.tempo.settings import TempoSettings
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from checker.config import Settings
    from checker.rules.rule import Rule

T = 2_000_000_000  # unix seconds: a multiple of 10 s (and 20 s past a minute)
STARTERS = {rule.id: rule for rule in load_paths([RULES_D]).rules}
PASSING, VIOLATING = templates(RULES_D)


def _flagged() -> list[str]:
    """The starter rules that some demo trace violates: the ones worth drawing."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "violating.otlp.jsonl"
        path.write_text("\n".join(json.dumps(instantiate(t, T * 10**9)) for t in VIOLATING))
        return sorted({v.rule_id for v in Scanner(list(STARTERS.values())).scan(read_traces([path]))})


FLAGGED = _flagged()


def rule_file(rules: dict[str, str], every: dict[str, str]) -> str:
    """A rules file: each rule's condition with its own ``every``."""
    return yaml.safe_dump({"rules": [{"id": rule_id, "condition": condition, "every": every[rule_id]}
                                     for rule_id, condition in sorted(rules.items())]})


def config(directory: Path, tempo: TempoDouble, store: str, **schedule: str) -> Settings:
    rules = directory / "rules.d"
    rules.mkdir(exist_ok=True)
    return load_settings(write_settings(
        directory, tempo_url=tempo.url, store=store, rules_dir=rules,
        schedule={"every": "1m", "evaluation_delay": "0s", "initial_lookback": "1m", "jitter": "0s",
                  "settle": "40s", "trace_idle": "5s", **schedule}))


def found(store: Store) -> set[tuple[str, str]]:
    """(rule, trace) of every violation that stands."""
    return {(s.violation.rule_id, s.violation.trace_id) for s in store.violations()
            if s.status != "retracted"}


class TestOneFetchPerCandidate:
    """Four rules sharing a scope: one search of it, one fetch of the trace."""

    RULES: ClassVar[dict[str, str]] = {  # every one of them flags trace 1
        "audited": "when { pii.access } always { audit.log }",
        "authorised": "when { pii.access } always { auth.check }",
        "no-export": "when { pii.access } never { export }",
        "few-queries": "when { pii.access } never { count(db.query) > 2 }",
    }

    def test_a_candidate_of_four_rules_is_fetched_once(self, tmp_path: Path) -> None:
        clock = Clock.at(T - 20)  # on the minute grid: run --once has no tail to evaluate
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            push(tempo, span(1, 1, "GET /patients", T - 30), span(1, 2, "pii.access", T - 29, parent=1),
                 span(1, 3, "export", T - 28, parent=1),
                 *(span(1, n, "db.query", T - 27, parent=1) for n in range(4, 8)))
            push(tempo, span(2, 1, "GET /patients", T - 20), span(2, 2, "pii.access", T - 19, parent=1),
                 span(2, 3, "audit.log", T - 18, parent=1), span(2, 4, "auth.check", T - 18, parent=1))
            settings = config(tmp_path, tempo, f"sqlite:///{tmp_path / 's.db'}")
            (settings.rules_dir / "r.yaml").write_text(rule_file(self.RULES, dict.fromkeys(self.RULES, "1m")))
            run_once(settings, clock)
            fetched = Counter(r.path for r in tempo.requests if r.route == "trace")
            searched = Counter((r.params["q"], r.params["start"], r.params["end"])
                               for r in tempo.requests if r.route == "search")
            store = Store.open(settings.store)
            try:
                assert {(rule_id, f"{1:032x}") for rule_id in self.RULES} == found(store)
                assert 4 == len(store.evaluations())  # one record per rule, from one evaluation
            finally:
                store.close()
        assert 1 == len(fetched)
        assert {1} == set(fetched.values())
        assert {1} == set(searched.values())  # each query asked once for each range
        scope = [q for q, _, _ in searched if q.strip() == '{ name = "pii.access" }']
        assert 1 == len(scope)


def test_a_bug_in_one_shard_never_stops_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock.at(T - 20)  # on the minute grid: run --once has no tail to evaluate
    real = runner.together

    def broken(heads: dict[str, Any]) -> Any:
        if "fast" in heads:
            raise RuntimeError("boom")
        return real(heads)

    monkeypatch.setattr(runner, "together", broken)
    with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
        settings = config(tmp_path, tempo, f"sqlite:///{tmp_path / 's.db'}")
        condition = "when { pii.access } always { audit.log }"
        (settings.rules_dir / "r.yaml").write_text(rule_file({"fast": condition, "slow": condition},
                                                             {"fast": "10s", "slow": "1m"}))
        summaries = {s.rule_id: s for s in run_once(settings, clock)}
    assert "internal error: RuntimeError: boom" == summaries["fast"].failed
    assert summaries["slow"].failed is None
    assert 1 == summaries["slow"].windows


def test_a_rule_firing_while_busy_is_due_again_when_its_run_ends(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The busy run fixed its "now" at its start: the firing must not wait a whole period."""
    clock = Clock.at(T - 20)
    runs: list[list[str]] = []

    async def scenario() -> None:
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            settings = config(tmp_path, tempo, f"sqlite:///{tmp_path / 's.db'}")
            (settings.rules_dir / "r.yaml").write_text(rule_file(
                {"busy": "when { a } always { b }"}, {"busy": "1m"}))
            daemon = await open_daemon(settings, clock=clock)
            try:
                release = asyncio.Event()

                async def slow(due: Any, *_args: Any, **_kwargs: Any) -> list[RunSummary]:
                    runs.append([rule.id for rule, _ in due])
                    if len(runs) == 1:
                        await release.wait()
                    return [RunSummary(rule.id) for rule, _ in due]

                monkeypatch.setattr(daemon.runner, "run_rules", slow)
                first = asyncio.create_task(daemon.run_rules(list(daemon.live.rules.values())))
                await asyncio.sleep(0)
                daemon._mark_due("busy")  # the trigger fires during the run
                release.set()
                await first
                await asyncio.sleep(0.5)  # the gathering wait, then the second run
            finally:
                await daemon.close()

    asyncio.run(scenario())
    assert [["busy"], ["busy"]] == runs


def run_once(settings: Settings, clock: Clock) -> list[RunSummary]:
    async def once() -> list[RunSummary]:
        daemon = await open_daemon(settings, clock=clock)
        try:
            return await daemon.run_once()
        finally:
            await daemon.close()

    return asyncio.run(once())


def scan(rule: Rule, tempo: TempoDouble, start: int, end: int, latest: int) -> set[tuple[str, str]]:
    """``scan --tempo`` of one rule over the period: the ground truth."""
    async def run() -> set[tuple[str, str]]:
        async with TempoClient(TempoSettings(url=tempo.url, retries=0), backoff=0.0) as client:
            result = await evaluate_window([rule], client, start, end, latest=latest)
        return {(v.rule_id, v.trace_id) for v in result.violations}

    return asyncio.run(run())


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """Rules from the starter library on mixed schedules joining at different moments, and traffic."""
    chosen = draw(st.lists(st.sampled_from(FLAGGED), min_size=2, max_size=6, unique=True))
    return {
        "every": {rule_id: draw(st.sampled_from(["10s", "20s", "1m"])) for rule_id in chosen},
        "joins": {rule_id: draw(st.integers(0, 40)) for rule_id in chosen},  # seconds after the first run
        "traces": draw(st.lists(st.tuples(st.sampled_from([True, True, False]),  # violating, mostly
                                          st.integers(0, len(VIOLATING) - 1), st.integers(-70, 150)),
                                min_size=10, max_size=30)),
        "steps": draw(st.lists(st.integers(3, 25), min_size=6, max_size=10)),
    }


# Each example runs the daemon a few times over HTTP: few examples, and no shrinking (minutes).
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(scenarios())
def test_the_grouped_daemon_finds_what_scan_finds(scenario: dict[str, Any]) -> None:
    """Whatever the schedules and the moments rules join, each rule's records equal its own scan."""
    clock = Clock.at(T + 3)
    with tempfile.TemporaryDirectory() as directory, \
            TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
        for violating, index, offset in scenario["traces"]:
            pool = VIOLATING if violating else PASSING
            tempo.push(instantiate(pool[index % len(pool)], (T + offset) * 10**9))
        settings = config(Path(directory), tempo, f"sqlite:///{directory}/s.db")
        first = clock.now
        for step in [0, *scenario["steps"]]:
            clock.advance(seconds=step)
            joined = {rule_id: STARTERS[rule_id].condition for rule_id, at in scenario["joins"].items()
                      if clock.now.timestamp() - first.timestamp() >= at}
            (settings.rules_dir / "r.yaml").write_text(rule_file(joined, scenario["every"]))
            run_once(settings, clock)
        store = Store.open(settings.store)
        try:
            evaluations = store.evaluations()
            assert_contiguous([e for e in evaluations if not e["amendments"]], None, None)
            expected: set[tuple[str, str]] = set()
            for rule_id in scenario["every"]:
                rows = [e for e in evaluations if e["rule_id"] == rule_id and e["outcome"] != "failed"]
                if rows:
                    start, end = rows[0]["window_start"], max(e["window_end"] for e in rows)
                    expected |= scan(STARTERS[rule_id], tempo, int(start.timestamp()), int(end.timestamp()),
                                     int(clock.now.timestamp()))
            assert expected == found(store)
        finally:
            store.close()


@needs_postgres
@pytest.mark.external_service
class TestTwoReplicasShareTheWork:
    """Two daemons on one PostgreSQL store: each rule window evaluated once, by one of them."""

    # Three schedules, so three shards for the replicas to share.
    EVERY: ClassVar[dict[str, str]] = {
        "a10": "10s", "b10": "10s", "c20": "20s", "d20": "20s", "e1m": "1m", "f1m": "1m"}

    def test_each_rule_window_once_and_both_replicas_work(self, tmp_path: Path) -> None:
        clock = Clock.at(T + 1)
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo, postgres_schema() as url:  # noqa: PLW0108
            for n in range(1, 30):
                push(tempo, span(n, 1, "GET /patients", T - 60 + 4 * n),
                     span(n, 2, "pii.access", T - 59 + 4 * n, parent=1))
            # Slow fetches make the two replicas' runs overlap.
            tempo.inject(Fault(route="trace", kind="timeout", delay=0.02, times=100_000))
            settings = config(tmp_path, tempo, url, parallel_rules="1", initial_lookback="2m")
            conditions = dict.fromkeys(self.EVERY, "when { pii.access } always { audit.log }")
            (settings.rules_dir / "r.yaml").write_text(rule_file(conditions, self.EVERY))

            async def scenario() -> tuple[list[RunSummary], list[RunSummary]]:
                one = await open_daemon(settings, clock=clock)
                two = await open_daemon(settings, clock=clock)
                mine: list[RunSummary] = []
                theirs: list[RunSummary] = []
                try:
                    for _ in range(6):
                        first, second = await asyncio.gather(one.run_once(), two.run_once())
                        mine += first
                        theirs += second
                        clock.advance(seconds=20)
                finally:
                    await one.close()
                    await two.close()
                return mine, theirs

            mine, theirs = asyncio.run(scenario())
            store = Store.open(url)
            try:
                evaluations = store.evaluations()
            finally:
                store.close()
        assert sum(s.windows for s in mine) > 0, "the first replica did no work"
        assert sum(s.windows for s in theirs) > 0, "the second replica did no work"
        # First looks: provisional, or final at once for the windows already settled then.
        first = [e for e in evaluations if not e["amendments"]]
        windows = Counter((e["rule_id"], e["window_start"], e["window_end"]) for e in first)
        assert {1} == set(windows.values())  # no window evaluated twice
        assert set(self.EVERY) == {rule_id for rule_id, _, _ in windows}
        assert_contiguous(first, None, None)
        finals = Counter((e["rule_id"], e["window_start"]) for e in evaluations if e["amendments"])
        assert finals
        assert {1} == set(finals.values())  # no window settled twice
        assert sum(s.windows for s in mine + theirs) == len(first)
