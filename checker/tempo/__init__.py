"""Grafana Tempo as a trace source: the HTTP client and rule evaluation over a window."""

from checker.tempo.client import TempoClient, TempoConfig, TempoError
from checker.tempo.run import WindowResult, evaluate_window

__all__ = ["TempoClient", "TempoConfig", "TempoError", "WindowResult", "evaluate_window"]
