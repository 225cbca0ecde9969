"""deploy/grafana/betrace.json: a valid dashboard whose every query names metrics the checker exports.

Grafana is not run here; the checks are the structure Grafana needs (uid, title, panels with a
data source, targets and a place on the grid) and the PromQL, checked as tests/promql.py reads it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from manifests import DASHBOARD, DASHBOARD_CONFIGMAP
from promql import exported, metric_names, unknown

BOARD: dict[str, Any] = json.loads(DASHBOARD.read_text())
PANELS = [p for p in BOARD["panels"] if p["type"] != "row"]
VARIABLES = {v["name"]: v for v in BOARD["templating"]["list"]}
GRID_WIDTH = 24


def test_the_dashboard_has_what_grafana_needs() -> None:
    assert re.fullmatch(r"[\w-]{1,40}", BOARD["uid"])
    assert BOARD["title"]
    assert isinstance(BOARD["schemaVersion"], int)
    assert len({p["id"] for p in BOARD["panels"]}) == len(BOARD["panels"])
    for panel in BOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        assert grid["h"] > 0, panel["title"]


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_every_panel_queries_the_prometheus_variable(panel: dict[str, Any]) -> None:
    source = VARIABLES[panel["datasource"]["uid"].strip("${}")]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    assert panel["description"]
    assert panel["targets"]
    assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    for target in panel["targets"]:
        assert target["datasource"] == panel["datasource"]
        assert [] == unknown(target["expr"]), target["expr"]


def test_variables_ask_for_exported_metrics_and_labels() -> None:
    series = exported()
    for variable in VARIABLES.values():
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"])
            assert found is not None, variable["name"]
            assert found.group(2) in series[found.group(1)]


def test_the_panels_cover_violations_windows_notifications_and_tempo() -> None:
    used = {name for p in PANELS for t in p["targets"] for name in metric_names(t["expr"])}
    assert {"betrace_violations_total", "betrace_control_violations_total", "betrace_checkpoint_lag_seconds",
            "betrace_evaluations_total", "betrace_notifications_total", "betrace_outbox_dead",
            "betrace_tempo_requests_total"} <= used
    grouped = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in PANELS}
    for label in ("rule", "severity", "control"):
        assert any(f"by ({label})" in expr and "violations_total" in expr for expr in grouped.values()), label


def test_violations_link_to_their_traces_through_exemplars() -> None:
    """The metrics carry no trace IDs (unbounded); their exemplars do, and Grafana links those to Tempo."""
    counters = {"betrace_violations_total", "betrace_control_violations_total"}
    violations = [t for p in PANELS if p["type"] == "timeseries" for t in p["targets"]
                  if counters & metric_names(t["expr"])]
    assert len(violations) >= 3
    assert all(t.get("exemplar") is True for t in violations)


def test_the_configmap_embeds_the_dashboard() -> None:
    configmap = yaml.safe_load(DASHBOARD_CONFIGMAP.read_text())
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"][DASHBOARD.name]) == BOARD
