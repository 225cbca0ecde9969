"""The daemon against the Tempo double over real HTTP: windows, checkpoints, catch-up, locks."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from daemon_kit import (
    FIRST_TRACE,
    LAST_TRACE,
    RULES_D,
    Clock,
    advancing,
    assert_contiguous,
    dataset,
    expected_pairs,
    settings,
    stored_pairs,
    write_settings,
)
from recordings import needs_recordings
from stores import STORE_KINDS, postgres_schema, store_url
from tempo_double import Fault, TempoDouble

from checker.cli import main
from checker.config import load_settings
from checker.daemon.factory import once_exit_code, open_daemon
from checker.errors import UsageError
from checker.store import Store

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from checker.config import Settings
    from checker.daemon.service import Daemon

pytestmark = needs_recordings
END = LAST_TRACE + 150  # the clock of most tests: on the 5m grid, 2.5 minutes after the last trace started
LOOKBACK = timedelta(minutes=15)


@pytest.fixture
def tempo() -> Iterator[TempoDouble]:
    with TempoDouble() as double:
        double.push(dataset())
        yield double


@pytest.fixture
def few_rules(tmp_path: Path) -> Path:
    """Three starter rules (the SRE file): enough for catch-up tests, and quick."""
    rules = tmp_path / "few-rules"
    rules.mkdir()
    (rules / "sre.yaml").write_text((RULES_D / "sre.yaml").read_text())
    return rules


@pytest.fixture(params=STORE_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as opened:
        yield opened


async def run_once(config: Settings, clock: Clock) -> tuple[int, Daemon]:
    daemon = await open_daemon(config, clock=clock)
    try:
        return once_exit_code(await daemon.run_once()), daemon
    finally:
        await daemon.close()


class TestRunOnce:
    def test_records_exactly_what_a_local_scan_finds(self, tempo: TempoDouble, url: str,
                                                     tmp_path: Path) -> None:
        config = settings(tmp_path, tempo_url=tempo.url, store=url)
        clock = Clock.at(END)
        code, daemon = asyncio.run(run_once(config, clock))
        assert 1 == code
        store = Store.open(url)
        try:
            pairs = stored_pairs(store)
            assert expected_pairs(dataset(), tmp_path) == set(pairs)
            assert len(pairs) == len(set(pairs))
            start = clock.now.replace(microsecond=0) - LOOKBACK
            assert_contiguous(store.evaluations(), start, clock.now.replace(microsecond=0))
            assert len(daemon.live.rules) * 3 == len(store.evaluations())  # 15m in 5m windows
            assert all(e["outcome"] in {"ok", "violations"} for e in store.evaluations())
            assert all(e["plan"].startswith("S1 ") for e in store.evaluations())
            # Nothing is due a second time: no new windows, no new violations, exit 0.
            assert 0 == asyncio.run(run_once(config, clock))[0]
            assert len(daemon.live.rules) * 3 == len(store.evaluations())
            # A minute later, run --once (which no trigger follows) evaluates the minute since,
            # short of the grid; four minutes later a short window reaches the grid again.
            clock.advance(minutes=1)
            assert 0 == asyncio.run(run_once(config, clock))[0]
            assert len(daemon.live.rules) * 4 == len(store.evaluations())
            clock.advance(minutes=4)
            assert 0 == asyncio.run(run_once(config, clock))[0]
            assert len(daemon.live.rules) * 5 == len(store.evaluations())
            ends = sorted({e["window_end"] for e in store.evaluations()})[-2:]
            assert [end.timestamp() % 300 for end in ends] == [60, 0]
        finally:
            store.close()

    def test_in_scope_traces_are_counted_per_rule(self, tempo: TempoDouble, tmp_path: Path) -> None:
        config = settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'm.db'}")
        _code, daemon = asyncio.run(run_once(config, Clock.at(END)))
        store = Store.open(config.store)
        try:
            for rule_id in daemon.live.rules:
                recorded = sum(e["scope_size"] or 0 for e in store.evaluations(rule_id))
                counted = daemon.metrics.registry.get_sample_value(
                    "betrace_rule_in_scope_traces_total", {"rule": rule_id}) or 0
                assert recorded == counted, rule_id
            assert any(e["scope_size"] for e in store.evaluations())  # something was in scope
        finally:
            store.close()

    def test_a_trace_is_judged_in_one_window_only(self, tempo: TempoDouble, tmp_path: Path,
                                                  few_rules: Path) -> None:
        config = settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'b.db'}",
                          rules_dir=few_rules, schedule__every="30s")
        asyncio.run(run_once(config, Clock.at(END)))
        store = Store.open(config.store)
        try:
            evaluations = store.evaluations()
            assert sum(e["violations"] for e in evaluations) == sum(e["new_violations"] for e in evaluations)
            assert sum(e["new_violations"] for e in evaluations) == len(store.violations())
        finally:
            store.close()

    def test_cli_exit_codes_and_violations_command(self, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        # The CLI runs on the real clock: the dataset is moved to end two minutes before the last
        # whole 5m window.
        moved = dataset(int(time.time()) // 300 * 300 - LAST_TRACE - 120)
        with TempoDouble() as tempo:
            tempo.push(moved)
            path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'c.db'}",
                                  schedule__initial_lookback="10m")
            assert 1 == main(["run", "--once", "--config", str(path)])
        capsys.readouterr()
        assert 0 == main(["violations", "--config", str(path), "--format", "json"])
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert expected_pairs(moved, tmp_path) == {(r["rule_id"], r["trace_id"]) for r in rows}
        scan_fields = {"rule_id", "rule_name", "severity", "trace_id", "reason", "frameworks", "controls",
                       "trigger_spans", "missing", "forbidden", "root_service", "root_name",
                       "start_time_unix_nano", "end_time_unix_nano", "labels"}
        stored_fields = scan_fields | {"status", "found_at", "evaluation_id", "notifications"}
        assert all(stored_fields == set(r) for r in rows)

        assert 0 == main(["violations", "--config", str(path), "--rule", "sre-slow-database-query",
                          "--format", "csv"])
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("found_at,severity,rule_id,rule_name,trace_id,reason")
        assert 1 < len(lines)
        assert all(",sre-slow-database-query," in line for line in lines[1:])

        assert 0 == main(["violations", "--config", str(path), "--since", "1h"])
        table = capsys.readouterr()
        assert table.out.startswith("STATUS      SEVERITY")
        assert f"{len(rows)} violations" in table.err
        monkeypatch.setenv("BETRACE_STORE", f"sqlite:///{tmp_path / 'c.db'}")
        assert 0 == main(["violations", "--config", str(path), "--since", "0s", "--format", "json"])
        assert "" == capsys.readouterr().out

    def test_tempo_down_is_exit_3_and_moves_nothing(self, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9",
                              store=f"sqlite:///{tmp_path / 'd.db'}")
        assert 3 == main(["run", "--once", "--config", str(path)])
        assert "failed: http://127.0.0.1:9/api/search: cannot connect" in capsys.readouterr().err
        store = Store.open(f"sqlite:///{tmp_path / 'd.db'}")
        try:
            assert {"failed"} == {e["outcome"] for e in store.evaluations()}
            first = store.evaluations()[0]
            assert store.checkpoint(first["rule_id"]) == first["window_start"]
        finally:
            store.close()


class TestCatchUp:
    def test_tempo_failing_for_several_ticks_then_back(self, tempo: TempoDouble, tmp_path: Path,
                                                       few_rules: Path) -> None:
        config = settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'e.db'}",
                          rules_dir=few_rules, schedule__every="1m", schedule__initial_lookback="5m")
        clock = Clock.at(FIRST_TRACE - 32)  # on the minute

        async def scenario() -> Daemon:
            daemon = await open_daemon(config, clock=clock)
            tempo.inject(Fault(route="search", status=503, times=10_000))
            for _ in range(4):
                summaries = await daemon.run_once()
                assert all(s.failed and "503" in s.failed for s in summaries)
                clock.advance(minutes=1)
            tempo.clear_faults()
            clock.advance(minutes=2)
            assert not any(s.failed for s in await daemon.run_once())
            await daemon.close()
            return daemon

        daemon = asyncio.run(scenario())
        store = Store.open(config.store)
        try:
            evaluations = store.evaluations()
            start = Clock.at(FIRST_TRACE - 32).now - timedelta(minutes=5)
            assert_contiguous(evaluations, start, clock.now)
            failed = [e for e in evaluations if e["outcome"] == "failed"]
            assert len(daemon.live.rules) * 4 == len(failed)
            assert all(e["window_start"] == start for e in failed)  # always the first window again
            # 5m lookback + 4 failing minutes + 2: eleven 1-minute windows per rule, each once.
            assert len(daemon.live.rules) * 11 == len(advancing(evaluations))
            assert expected_pairs(dataset(), tmp_path, few_rules) == set(stored_pairs(store))
        finally:
            store.close()

    def test_a_backlog_beyond_max_catchup_is_recorded_as_skipped(self, tempo: TempoDouble,
                                                                 tmp_path: Path, few_rules: Path) -> None:
        config = settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'f.db'}",
                          rules_dir=few_rules,
                          schedule__max_catchup="10m", schedule__initial_lookback="1m")
        clock = Clock.at(END - 86_400)
        asyncio.run(run_once(config, clock))
        clock.now = Clock.at(END).now
        asyncio.run(run_once(config, clock))
        store = Store.open(config.store)
        try:
            recorded = store.evaluations("sre-slow-database-query")
            # The first window was provisional: the second run settled it before the backlog.
            assert ["provisional", "final"] == [e["verdict"] for e in recorded[:2]]
            assert recorded[1]["amendments"] is not None
            evaluations = [e for e in recorded if e["amendments"] is None]
            assert ["ok", "skipped", "ok", "violations"] == [e["outcome"] for e in evaluations]
            skipped = evaluations[1]
            assert clock.now - timedelta(minutes=10) == skipped["window_end"]
            assert "max_catchup" in skipped["error"]
            assert_contiguous(evaluations, Clock.at(END - 86_400 - 60).now, clock.now)
        finally:
            store.close()

    def test_per_rule_schedule_overrides(self, tempo: TempoDouble, tmp_path: Path) -> None:
        rules = tmp_path / "rules.d"
        rules.mkdir()
        (rules / "r.yaml").write_text(
            "rules:\n"
            "  - {id: slow, condition: 'never { db.query.where(span:duration > 1s) }', every: 2m,\n"
            "     evaluation_delay: 3m}\n"
            "  - {id: cron, condition: 'never { db.query }', cron: '*/10 * * * *'}\n")
        config = settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'g.db'}",
                          rules_dir=rules, schedule__initial_lookback="20m")
        clock = Clock.at(END)
        asyncio.run(run_once(config, clock))
        store = Store.open(config.store)
        try:
            slow = store.evaluations("slow")
            assert all(e["window_end"] - e["window_start"] <= timedelta(minutes=2) for e in slow)
            # Up to now - 3m: 16 minutes in 2-minute windows on the grid, and run --once's tail.
            assert clock.now - timedelta(minutes=3) == slow[-1]["window_end"]
            assert 9 == len(slow)
            cron = store.evaluations("cron")
            assert [timedelta(minutes=10), timedelta(minutes=10)] == [
                e["window_end"] - e["window_start"] for e in cron]
        finally:
            store.close()


@pytest.mark.external_service
class TestTwoDaemons:
    def test_two_daemons_on_one_postgres_never_evaluate_a_window_twice(self, tempo: TempoDouble,
                                                                       tmp_path: Path,
                                                                       few_rules: Path) -> None:
        # Slow answers make the two daemons' runs overlap.
        tempo.inject(Fault(route="trace", kind="timeout", delay=0.05, times=10_000))
        with postgres_schema() as url:
            config = settings(tmp_path, tempo_url=tempo.url, store=url, rules_dir=few_rules,
                              schedule__every="1m")
            clock = Clock.at(END - 300)

            async def scenario() -> list[list[bool]]:
                one = await open_daemon(config, clock=clock)
                two = await open_daemon(config, clock=clock)
                busy = []
                for _ in range(6):
                    first, second = await asyncio.gather(one.run_once(), two.run_once())
                    busy.append([s.busy for s in first + second])
                    clock.advance(minutes=1)
                await one.close()
                await two.close()
                return busy

            busy = asyncio.run(scenario())
            store = Store.open(url)
            try:
                recorded = store.evaluations()
                # Each pass over a window commits once: the first pass, and a final pass (amendment).
                windows = [(e["rule_id"], e["window_start"], e["amendments"] is None) for e in recorded]
                assert len(windows) == len(set(windows))
                evaluations = [e for e in recorded if e["amendments"] is None]
                last_run = clock.now - timedelta(minutes=1)
                assert_contiguous(evaluations, Clock.at(END - 300).now - LOOKBACK, last_run)
                pairs = stored_pairs(store)
                assert len(pairs) == len(set(pairs))
                assert expected_pairs(dataset(), tmp_path, few_rules) == set(pairs)
                assert any(any(round_) for round_ in busy), "the daemons never competed for a rule"
            finally:
                store.close()


def test_an_internal_error_is_recorded_as_failed_and_retried(tempo: TempoDouble, tmp_path: Path,
                                                             few_rules: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'i.db'}",
                      rules_dir=few_rules)

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr("checker.daemon.judge.evaluate_window", broken)
    assert 3 == asyncio.run(run_once(config, Clock.at(END)))[0]
    monkeypatch.undo()
    assert 1 == asyncio.run(run_once(config, Clock.at(END)))[0]
    store = Store.open(config.store)
    try:
        outcomes = [e["outcome"] for e in store.evaluations("sre-slow-database-query")]
        assert "failed" == outcomes[0]
        assert "internal error: KeyError" in store.evaluations("sre-slow-database-query")[0]["error"]
        assert 3 == len(advancing(store.evaluations("sre-slow-database-query")))
    finally:
        store.close()


@pytest.mark.external_service
def test_many_rules_at_once_on_postgres(tempo: TempoDouble, tmp_path: Path) -> None:
    """Each running rule holds a lock connection: 20 at once must not starve the commits."""
    rules = tmp_path / "many"
    rules.mkdir()
    text = "rules:\n" + "".join(
        f"  - id: rule-{n}\n"
        "    condition: when { db.query } never { db.query.where(span:duration > 1s) }\n"
        for n in range(20))
    (rules / "many.yaml").write_text(text)
    with postgres_schema() as url:
        config = settings(tmp_path, tempo_url=tempo.url, store=url, rules_dir=rules,
                          schedule__parallel_rules=30, schedule__every="1m")
        code, _daemon = asyncio.run(run_once(config, Clock.at(END)))
        assert code in {0, 1}
        store = Store.open(url)
        try:
            assert 20 * 15 == len(advancing(store.evaluations()))
        finally:
            store.close()


def test_exit_codes_for_broken_rules_bad_store_and_taken_port(tmp_path: Path, tempo: TempoDouble,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "broken"
    rules.mkdir()
    (rules / "bad.yaml").write_text("rules:\n  - id: bad\n    condition: when { a } always {\n")
    path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'x.db'}",
                          rules_dir=rules)
    assert 2 == main(["run", "--once", "--config", str(path)])
    path = write_settings(tmp_path, tempo_url=tempo.url, store="postgresql://u:pw9@h:port/db")
    assert 2 == main(["run", "--once", "--config", str(path)])
    assert "pw9" not in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'y.db'}",
                              http__listen=f"127.0.0.1:{port}")

        async def serve() -> None:
            daemon = await open_daemon(load_settings(path))
            try:
                await daemon.serve(asyncio.Event())
            finally:
                await daemon.close()

        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(serve())
