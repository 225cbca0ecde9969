"""Grafana Tempo as a trace source: the HTTP client and rule evaluation over a window."""

from checker.tempo.client import TempoClient
from checker.tempo.errors import TempoError
from checker.tempo.run import WindowResult, evaluate_window
from checker.tempo.settings import TempoSettings

__all__ = ["TempoClient", "TempoError", "TempoSettings", "WindowResult", "evaluate_window"]
