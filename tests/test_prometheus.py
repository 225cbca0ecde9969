"""The checker as Prometheus sees it: the alert rules and ``/metrics`` pass promtool.

promtool is Prometheus's own linter and rule tester (Debian's ``prometheus`` package ships it);
the tests that run it skip without it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import TYPE_CHECKING

import httpx
import pytest
from daemon_kit import LAST_TRACE, Clock, dataset, settings
from manifests import RULES
from promql import exported
from recordings import needs_recordings
from tempo_double import TempoDouble

from checker.daemon.factory import open_daemon
from checker.daemon.http import HttpServer, application

if TYPE_CHECKING:
    from pathlib import Path

    from checker.daemon.metrics import Metrics

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool (Debian's prometheus package); .ci/run installs it")


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


async def scrape(metrics: Metrics, accept: str = "*/*") -> httpx.Response:
    """``/metrics`` over HTTP, as Prometheus gets it."""
    server = HttpServer(application(metrics.registry, []), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient() as http:
            return await http.get(f"http://127.0.0.1:{server.port}/metrics", headers={"Accept": accept})
    finally:
        await server.stop()


async def daemon_metrics(tmp_path: Path, tempo_url: str) -> Metrics:
    """The metrics of a daemon that judged the recorded traces once and notified on a log route."""
    config = settings(tmp_path, tempo_url=tempo_url, store=f"sqlite:///{tmp_path / 'p.db'}",
                      notifiers={"console": {"type": "log"}}, default_notifiers=["console"])
    daemon = await open_daemon(config, clock=Clock.at(LAST_TRACE + 150))
    try:
        await daemon.run_once()
    finally:
        await daemon.close()
    return daemon.metrics


@needs_recordings
@needs_promtool
def test_metrics_pass_promtool_check_with_every_family_present(tmp_path: Path) -> None:
    with TempoDouble() as tempo:
        tempo.push(dataset())
        metrics = asyncio.run(daemon_metrics(tmp_path, tempo.url))
    metrics.amendments.labels("sre-retries-bounded", "late")  # final passes come later, after settle
    response = asyncio.run(scrape(metrics))
    assert response.headers["Content-Type"].startswith("text/plain;")
    text = response.text
    promtool("check", "metrics", stdin=text)  # a lint finding is printed, with a non-zero exit
    families = {name for name in exported() if not name.endswith("_created")}
    assert [] == sorted(name for name in families if f"\n{name}" not in text)
