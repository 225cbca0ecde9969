"""The checker as Prometheus sees it: alerts, compose config, dashboard queries, ``/metrics`` pass promtool.

promtool is Prometheus's own linter and rule tester (Debian's ``prometheus`` package ships it);
the tests that run it skip without it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml
from daemon_kit import LAST_TRACE, Clock, dataset, settings
from manifests import DASHBOARD, DEPLOY, RULES
from promql import exported
from recordings import needs_recordings
from tempo_double import TempoDouble

from checker.daemon.factory import open_daemon
from checker.daemon.http import HttpServer, application
from checker.daemon.metrics import Metrics
from checker.engine.violation import Violation

if TYPE_CHECKING:
    from pathlib import Path


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool (Debian's prometheus package); .ci/run installs it")


# What Prometheus 2 sends when it scrapes.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def promtool(*args: str, stdin: str | None = None) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True,  # noqa: S603
                          check=False, cwd=RULES.parent, timeout=60)
    assert 0 == done.returncode, done.stdout + done.stderr
    return done.stdout + done.stderr


@needs_promtool
def test_the_rules_pass_promtool_check() -> None:
    assert "SUCCESS" in promtool("check", "rules", RULES.name)


@needs_promtool
def test_the_alerts_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "betrace-rules.test.yaml")


@needs_promtool
def test_the_compose_prometheus_config_passes_promtool_check(tmp_path: Path) -> None:
    """With the rule file where compose mounts it from: promtool checks the rules it names too."""
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yaml").read_text())
    assert [RULES.name] == [PurePosixPath(path).name for path in config["rule_files"]]
    config["rule_files"] = [str(RULES)]
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump(config))
    assert "SUCCESS" in promtool("check", "config", str(tmp_path / "prometheus.yaml"))


# Grafana's variables as Prometheus would get them after Grafana replaced them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "6h", "$rule": ".*"}


@needs_promtool
def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Each panel query, as a recording rule: promtool check rules parses it."""
    exprs = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
             for target in panel.get("targets", [])]
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(variable, value) for expr in exprs]
    assert not [expr for expr in exprs if "$" in expr]
    rules = [{"record": f"dashboard:query{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(path))


async def scrape(metrics: Metrics, accept: str = "*/*") -> httpx.Response:
    """``/metrics`` over HTTP, as Prometheus gets it."""
    server = HttpServer(application(metrics.registry, []), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient() as http:
            return await http.get(f"http://127.0.0.1:{server.port}/metrics", headers={"Accept": accept})
    finally:
        await server.stop()


def test_a_violation_counts_once_per_rule_and_once_per_control_of_its_rule() -> None:
    metrics = Metrics(dict)
    for n, controls in enumerate([("SOC2:CC6.1", "GDPR:Art.32"), ("SOC2:CC6.1",), ()]):
        metrics.violation(Violation(rule_id="r", rule_name="R", severity="high", trace_id=f"{n:032x}",
                                    reason="", frameworks=(), controls=controls, trigger_spans=(),
                                    missing=(), forbidden=()))
    value = metrics.registry.get_sample_value
    assert 3 == value("betrace_violations_total", {"rule": "r", "severity": "high"})
    assert 2 == value("betrace_control_violations_total", {"control": "SOC2:CC6.1"})
    assert 1 == value("betrace_control_violations_total", {"control": "GDPR:Art.32"})
    text = asyncio.run(scrape(metrics, PROMETHEUS_ACCEPT)).text
    assert f'betrace_violations_total{{rule="r",severity="high"}} 3.0 # {{trace_id="{2:032x}"}} 1.0' in text
    assert f'betrace_control_violations_total{{control="GDPR:Art.32"}} 1.0 # {{trace_id="{0:032x}"}}' in text


@dataclass
class Judged:
    """A daemon's metrics after it judged the recorded traces once, and the violations it recorded."""

    metrics: Metrics
    violations: list[Violation]


async def judge_once(directory: Path, tempo_url: str) -> Judged:
    config = settings(directory, tempo_url=tempo_url, store=f"sqlite:///{directory / 'p.db'}",
                      notifiers={"console": {"type": "log"}}, default_notifiers=["console"])
    daemon = await open_daemon(config, clock=Clock.at(LAST_TRACE + 150))
    try:
        await daemon.run_once()
        return Judged(daemon.metrics, [v.violation for v in daemon.store.violations()])
    finally:
        await daemon.close()


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Judged:
    with TempoDouble() as tempo:
        tempo.push(dataset())
        found = asyncio.run(judge_once(tmp_path_factory.mktemp("judged"), tempo.url))
    found.metrics.amendments.labels("sre-retries-bounded", "late")  # final passes come later, after settle
    return found


@needs_recordings
@needs_promtool
def test_metrics_pass_promtool_check_with_every_family_present(judged: Judged) -> None:
    response = asyncio.run(scrape(judged.metrics))
    assert response.headers["Content-Type"].startswith("text/plain;")
    text = response.text
    promtool("check", "metrics", stdin=text)  # a lint finding is printed, with a non-zero exit
    families = {name for name in exported() if not name.endswith("_created")}
    assert [] == sorted(name for name in families if f"\n{name}" not in text)


@needs_recordings
def test_violations_are_counted_by_control_with_the_trace_as_exemplar(judged: Judged) -> None:
    controls = Counter(control for v in judged.violations for control in v.controls)
    assert len(controls) > 1
    for control, count in controls.items():
        assert count == judged.metrics.registry.get_sample_value(
            "betrace_control_violations_total", {"control": control})
    # Prometheus asks for OpenMetrics; the latest violating trace of each series is its exemplar.
    response = asyncio.run(scrape(judged.metrics, PROMETHEUS_ACCEPT))
    assert response.headers["Content-Type"].startswith("application/openmetrics-text;")
    exemplars = re.findall(r'^betrace_(?:control_)?violations_total\{.*\} \S+ # \{trace_id="(\w+)"\}',
                           response.text, re.MULTILINE)
    assert len(exemplars) >= len(controls)
    assert set(exemplars) <= {v.trace_id for v in judged.violations}
