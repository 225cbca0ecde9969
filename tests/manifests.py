"""Kubernetes manifests that embed a file from deploy/, rendered from it so the two cannot drift.

The embedded file is the source (Prometheus, compose and promtool read it as it is); the manifest
is written by ``pytest tests/test_deploy.py --update-golden`` and checked equal otherwise.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "betrace-rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "betrace.json"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "prometheus-rules.yaml"
DASHBOARD_CONFIGMAP = DEPLOY / "kubernetes" / "grafana-dashboard.yaml"


def _generated_from(source: Path) -> str:
    return (f"# Generated from deploy/{source.relative_to(DEPLOY)} by `pytest tests/test_deploy.py "
            "--update-golden`:\n# edit that file, not this one (the test fails while they differ).\n")


def _without_comment_header(text: str) -> str:
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def prometheus_rule() -> str:
    """The ServiceMonitor and PrometheusRule (Prometheus Operator), the rule groups as in RULES."""
    return (_generated_from(RULES)
            + "# Without the operator: scrape the `betrace` Service's port `http` at /metrics as job\n"
              '# "betrace" and load deploy/prometheus/betrace-rules.yaml as a rule file.\n'
              "apiVersion: monitoring.coreos.com/v1\n"
              "kind: ServiceMonitor\n"
              "metadata:\n"
              "  name: betrace\n"
              "  labels: { app.kubernetes.io/name: betrace }\n"
              "spec:\n"
              '  jobLabel: app.kubernetes.io/name        # job="betrace", as the alerts expect\n'
              "  selector:\n"
              "    matchLabels: { app.kubernetes.io/name: betrace }\n"
              "  endpoints:\n"
              "    - { port: http, path: /metrics, interval: 30s }\n"
              "---\n"
              "apiVersion: monitoring.coreos.com/v1\n"
              "kind: PrometheusRule\n"
              "metadata:\n"
              "  name: betrace\n"
              "  labels: { app.kubernetes.io/name: betrace }\n"
              "spec:\n"
            + textwrap.indent(_without_comment_header(RULES.read_text()), "  "))


def dashboard_configmap() -> str:
    """The dashboard as a ConfigMap that Grafana's dashboard sidecar (kube-prometheus-stack) loads."""
    return (_generated_from(DASHBOARD)
            + "# Grafana's sidecar loads ConfigMaps labelled grafana_dashboard; or import the JSON.\n"
              "apiVersion: v1\n"
              "kind: ConfigMap\n"
              "metadata:\n"
              "  name: betrace-dashboard\n"
              '  labels: { app.kubernetes.io/name: betrace, grafana_dashboard: "1" }\n'
              "data:\n"
              "  betrace.json: |\n"
            + textwrap.indent(DASHBOARD.read_text(), "    "))


GENERATED = {PROMETHEUS_RULE: prometheus_rule, DASHBOARD_CONFIGMAP: dashboard_configmap}
