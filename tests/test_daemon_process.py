"""`betrace run` as users run it: a process, signals, kill -9, health and metrics, hot reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from daemon_kit import (
    LAST_TRACE,
    RULES_D,
    assert_contiguous,
    dataset,
    expected_pairs,
    stored_pairs,
    write_settings,
)
from recordings import needs_recordings
from tempo_double import Fault, TempoDouble

from checker.config import load_settings
from checker.daemon.factory import open_daemon
from checker.daemon.service import install_signals
from checker.rules.load import load_paths
from checker.store import Store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

pytestmark = needs_recordings
ROOT = RULES_D.parent
SECRET = "hunter2-do-not-log"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def betrace(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "checker", *args], cwd=ROOT, text=True,  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def until(condition: Callable[[], Awaitable[bool]], within: float = 20.0,
                what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def few_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "sre.yaml").write_text((RULES_D / "sre.yaml").read_text())
    return rules


def recent_dataset() -> dict[str, Any]:
    """The dataset moved so that its last trace started two minutes ago."""
    return dataset(int(time.time()) - LAST_TRACE - 120)


class TestKill:
    def test_kill_9_mid_run_then_restart_skips_and_duplicates_nothing(self, tmp_path: Path) -> None:
        data = recent_dataset()
        rules = few_rules(tmp_path)
        db = tmp_path / "kill.db"
        with TempoDouble() as tempo:
            tempo.push(data)
            # Slow trace fetches keep the first run busy long enough to be killed in the middle.
            tempo.inject(Fault(route="trace", kind="timeout", delay=0.4, times=10_000))
            path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{db}", rules_dir=rules,
                                  schedule__every="1m", schedule__initial_lookback="10m")
            first = betrace("run", "--once", "--config", str(path))
            store = Store.open(f"sqlite:///{db}")
            try:
                wait_for(lambda: len(store.evaluations()) >= 4, what="four committed windows")
                first.kill()
                first.wait(timeout=10)
                assert -signal.SIGKILL == first.returncode
                before = len(store.evaluations())
                tempo.clear_faults()
                second = betrace("run", "--once", "--config", str(path))
                _out, err = second.communicate(timeout=120)
                assert second.returncode in {0, 1}, err
                evaluations = store.evaluations()
                assert len(evaluations) > before
                windows = [(e["rule_id"], e["window_start"]) for e in evaluations]
                assert len(windows) == len(set(windows)), "a window was evaluated twice"
                assert_contiguous(evaluations, None, None)
                for rule_id in {e["rule_id"] for e in evaluations}:
                    assert store.checkpoint(rule_id) == max(e["window_end"] for e in evaluations
                                                            if e["rule_id"] == rule_id)
                pairs = stored_pairs(store)
                assert len(pairs) == len(set(pairs))
                assert expected_pairs(data, tmp_path, rules) == set(pairs)
            finally:
                store.close()


class TestProcess:
    def test_serves_health_logs_json_without_secrets_and_stops_on_sigterm(self, tmp_path: Path) -> None:
        port = free_port()
        with TempoDouble() as tempo:
            tempo.push(recent_dataset())
            path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'p.db'}",
                                  rules_dir=few_rules(tmp_path), http__listen=f"127.0.0.1:{port}",
                                  schedule__every="2s")
            process = betrace("run", "--config", str(path), env={"BETRACE_TEMPO__PASSWORD": SECRET,
                                                                  "BETRACE_TEMPO__USERNAME": "checker"})
            base = f"http://127.0.0.1:{port}"

            def healthy() -> bool:
                try:
                    return httpx.get(f"{base}/healthz").status_code == 200
                except httpx.TransportError:
                    assert process.poll() is None, process.communicate()[1]
                    return False

            try:
                wait_for(healthy, what="/healthz")
                wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
                wait_for(lambda: "betrace_evaluations_total{" in httpx.get(f"{base}/metrics").text,
                         what="an evaluation in the metrics")
            finally:
                process.send_signal(signal.SIGTERM)
                _out, err = process.communicate(timeout=40)
        assert 0 == process.returncode, err
        assert all(line.startswith("{") for line in err.splitlines()), err
        events = [json.loads(line) for line in err.splitlines()]
        names = [e["event"] for e in events]
        assert "daemon.started" in names
        assert "daemon.stopped" == names[-1]
        evaluated = [e for e in events if e["event"] == "window.evaluated"]
        assert evaluated
        assert all({"rule", "window_start", "window_end"} <= set(e) for e in evaluated)
        assert SECRET not in err

    def test_invalid_config_is_exit_2_listing_every_problem(self, tmp_path: Path) -> None:
        path = tmp_path / "betrace.yaml"
        path.write_text("tempo: {url: localhost, search_limit: 0}\nschedule: {every: never}\n")
        process = betrace("run", "--config", str(path))
        _out, err = process.communicate(timeout=30)
        assert 2 == process.returncode
        for key in ("tempo.url", "tempo.search_limit", "schedule.every"):
            assert key in err


class TestLive:
    """An in-process daemon on the real clock and scheduler."""

    def test_health_metrics_and_a_new_violation_within_one_tick(self, tmp_path: Path) -> None:
        every = 2.0
        with TempoDouble() as tempo:
            config = load_settings(write_settings(
                tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'live.db'}",
                rules_dir=few_rules(tmp_path), schedule__every=f"{every:g}s",
                schedule__initial_lookback="1m"))

            async def scenario() -> float:
                daemon = await open_daemon(config)
                stop = asyncio.Event()
                serving = asyncio.create_task(daemon.serve(stop))
                try:
                    rules = len(load_paths([config.rules_dir]).rules)
                    await until(lambda: asyncio.sleep(0, len(daemon.runner.checkpoints) == rules),
                                what="first runs")
                    assert daemon.http is not None
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http.port}") as http:
                        assert 200 == (await http.get("/healthz")).status_code
                        ready = await http.get("/readyz")
                        assert 200 == ready.status_code, ready.text
                        assert {"rules": "ok", "store": "ok", "tempo": "ok"} == ready.json()["checks"]
                        # A violating trace that starts now.
                        data = dataset(int(time.time()) - 1795729046)
                        pushed = time.monotonic()
                        tempo.push(data)

                        async def found() -> bool:
                            violations = await asyncio.to_thread(daemon.store.violations)
                            return any(v.violation.rule_id == "sre-slow-database-query" for v in violations)

                        await until(found, within=3 * every + 5, what="the new violation")
                        elapsed = time.monotonic() - pushed
                        metrics = (await http.get("/metrics")).text
                    for name in ('betrace_evaluations_total{outcome="ok",rule="sre-retries-bounded"}',
                                 "betrace_evaluation_duration_seconds_bucket",
                                 'betrace_tempo_requests_total{route="search",status="200"}',
                                 'betrace_checkpoint_lag_seconds{rule="sre-slow-database-query"}',
                                 f"betrace_rules_loaded {rules:.1f}", "betrace_rule_load_errors 0.0",
                                 'betrace_violations_total{rule="sre-slow-database-query",severity='):
                        assert name in metrics, name
                    return elapsed
                finally:
                    stop.set()
                    await serving
                    await daemon.close()

            elapsed = asyncio.run(scenario())
        # Found by the first tick after the trace's second is over: at most one period plus a second.
        assert elapsed < every + 1 + 1.5

    def test_readyz_names_what_is_not_ready(self, tmp_path: Path) -> None:
        rules = tmp_path / "empty"
        rules.mkdir()
        config = load_settings(write_settings(tmp_path, tempo_url="http://127.0.0.1:9",
                                              store=f"sqlite:///{tmp_path / 'r.db'}", rules_dir=rules))

        async def scenario() -> httpx.Response:
            daemon = await open_daemon(config)
            stop = asyncio.Event()
            serving = asyncio.create_task(daemon.serve(stop))
            try:
                await until(lambda: asyncio.sleep(0, daemon.http is not None and daemon.http.port != 0),
                            what="listening")
                assert daemon.http is not None
                async with httpx.AsyncClient() as http:
                    return await http.get(f"http://127.0.0.1:{daemon.http.port}/readyz")
            finally:
                stop.set()
                await serving
                await daemon.close()

        response = asyncio.run(scenario())
        assert 503 == response.status_code
        checks = response.json()["checks"]
        assert checks["store"] == "ok"
        assert checks["rules"].startswith("no rules loaded")
        assert "cannot connect" in checks["tempo"]

    def test_hot_reload_add_break_fix_delete(self, tmp_path: Path) -> None:
        rules = few_rules(tmp_path)
        extra = rules / "extra.yaml"
        good = "rules:\n  - id: extra\n    condition: when {{ pii.access }} always {{ {clear} }}\n"
        with TempoDouble() as tempo:
            config = load_settings(write_settings(
                tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'hot.db'}", rules_dir=rules,
                schedule__every="1s", schedule__initial_lookback="5s"))

            async def scenario() -> None:
                daemon = await open_daemon(config)
                stop = asyncio.Event()
                serving = asyncio.create_task(daemon.serve(stop))
                scheduler = daemon.scheduler

                def versions() -> list[str]:
                    return [e["rule_version"] for e in daemon.store.evaluations("extra")]

                async def scheduled(rule_id: str) -> bool:
                    return scheduler is not None and scheduler.get_job(rule_id) is not None

                try:
                    await until(lambda: asyncio.sleep(0, daemon.scheduler is not None), what="scheduler")
                    scheduler = daemon.scheduler
                    await asyncio.sleep(0.3)  # the watcher is up
                    extra.write_text(good.format(clear="audit.log"))
                    await until(lambda: scheduled("extra"), what="the added rule scheduled")
                    first = daemon.live.rules["extra"].version
                    await until(lambda: asyncio.sleep(0, len(versions()) > 0), what="the new rule evaluated")

                    extra.write_text(good.format(clear="audit.log and and"))
                    await until(lambda: asyncio.sleep(0, daemon.metrics.rule_load_errors._value.get() == 1),
                                what="the broken file reported")
                    assert first == daemon.live.rules["extra"].version
                    assert await scheduled("extra")

                    extra.write_text(good.format(clear="audit.log or audit.event"))
                    await until(lambda: asyncio.sleep(0, daemon.live.rules["extra"].version != first
                                                      and daemon.metrics.rule_load_errors._value.get() == 0),
                                what="the fixed, changed rule")
                    second = daemon.live.rules["extra"].version
                    checkpoint = daemon.store.checkpoint("extra")
                    await until(lambda: asyncio.sleep(0, second in versions()), within=10,
                                what="the new version evaluated")
                    evaluation = next(e for e in daemon.store.evaluations("extra")
                                      if e["rule_version"] == second)
                    assert checkpoint is not None
                    assert evaluation["window_start"] >= checkpoint  # the checkpoint carried on

                    extra.unlink()
                    # The rules are re-read in a thread, the job dropped back on the loop: wait for both.
                    await until(lambda: asyncio.sleep(0, "extra" not in daemon.live.rules
                                                      and scheduler.get_job("extra") is None),
                                what="removal")
                    with daemon.store.engine.connect() as connection:
                        recorded = {row[0] for row in connection.exec_driver_sql(
                            "select version from rules where rule_id = 'extra'")}
                    assert {first, second} == recorded

                    # SIGHUP reloads too.
                    install_signals(daemon, stop)
                    reloads = daemon.metrics.reloads.labels("ok")._value.get()
                    os.kill(os.getpid(), signal.SIGHUP)
                    await until(lambda: asyncio.sleep(
                        0, daemon.metrics.reloads.labels("ok")._value.get() > reloads), what="SIGHUP reload")
                finally:
                    stop.set()
                    await serving
                    await daemon.close()

            asyncio.run(scenario())
            assert datetime.now(UTC)
