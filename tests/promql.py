"""What the checker exports and what PromQL expressions ask for, so alerts and panels can be checked.

Not a PromQL parser: enough of the syntax is removed (strings, label matchers, ranges, grouping
clauses) that the identifiers left are functions (followed by a parenthesis), keywords or metrics.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from prometheus_client.metrics import MetricWrapperBase

from checker.daemon.metrics import Metrics

SCRAPE_LABELS = frozenset({"job", "instance"})  # Prometheus adds these to every series
OTHER_METRICS = frozenset({"up"})  # Prometheus's own, per scrape target
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                      "unless", "offset", "inf", "nan"})
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"), "gauge": ("",)}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER_NAME = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()")


def exported() -> dict[str, frozenset[str]]:
    """Every series name ``/metrics`` can show, suffixes included, with its labels."""
    now = datetime.now(UTC)
    metrics = Metrics(lambda: {"rule": now}, lambda: {"rule": now})
    series: dict[str, frozenset[str]] = {}
    for collector in metrics.registry._collector_to_names:
        declared = collector._labelnames if isinstance(collector, MetricWrapperBase) else None
        for family in collector.collect():
            labels = frozenset(declared if declared is not None
                               else (key for sample in family.samples for key in sample.labels))
            for suffix in SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                series[family.name + suffix] = labels | extra
    return series


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """The metrics an expression selects."""
    text = _MATCHERS.sub("", _without_strings(expr))
    text = _GROUPING.sub("", re.sub(r"\[[^\]]*\]", "", text))
    text = re.sub(r"\boffset\s+\S+", "", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in KEYWORDS}


def label_names(expr: str) -> set[str]:
    """The labels an expression matches on or groups by."""
    text = _without_strings(expr)
    matched = {name for block in _MATCHERS.findall(text) for name in _MATCHER_NAME.findall(block)}
    grouped = {name.strip() for _, block in _GROUPING.findall(text) for name in block.split(",")}
    return (matched | grouped) - {""}


def unknown(expr: str, series: dict[str, frozenset[str]] | None = None) -> list[str]:
    """Metrics and labels in ``expr`` that the checker does not export; empty when all are real."""
    series = exported() if series is None else series
    names = metric_names(expr)
    problems = [f"metric {name}" for name in sorted(names - set(series) - OTHER_METRICS)]
    known = SCRAPE_LABELS.union(*(series.get(name, frozenset()) for name in names))
    problems += [f"label {name}" for name in sorted(label_names(expr) - known)]
    return problems
