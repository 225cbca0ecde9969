"""Grafana Tempo as a trace source: the HTTP client and rule evaluation over a window."""

from checker.tempo.client import TempoClient, TempoError
from checker.tempo.run import WindowResult, evaluate_window
from checker.tempo.settings import TempoSettings

__all__ = ["TempoClient", "TempoError", "TempoSettings", "WindowResult", "evaluate_window"]
