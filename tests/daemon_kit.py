"""Helpers for daemon tests: the recorded dataset moved in time, settings files, a clock."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from recordings import RECORDINGS

from checker.config import Settings, load_settings
from checker.engine import Scanner
from checker.rules.load import load_paths
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from checker.store import Store

ROOT = Path(__file__).resolve().parents[1]
RULES_D = ROOT / "rules.d"
# Every trace of the recorded dataset starts inside this span (unix seconds).
FIRST_TRACE, LAST_TRACE = 1795728992, 1795729050


def dataset(shift_seconds: int = 0) -> dict[str, Any]:
    """The recorded dataset, every ``*UnixNano`` time moved by ``shift_seconds``."""
    assert RECORDINGS is not None
    data = json.loads((RECORDINGS / "dataset.otlp.json").read_text())
    return _shift(copy.deepcopy(data), shift_seconds * 10**9) if shift_seconds else data


def _shift(node: Any, nanos: int) -> Any:
    if isinstance(node, dict):
        return {k: str(int(v) + nanos) if k.endswith("UnixNano") and v else _shift(v, nanos)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_shift(item, nanos) for item in node]
    return node


def expected_pairs(data: dict[str, Any], tmp_path: Path, rules_dir: Path = RULES_D) -> set[tuple[str, str]]:
    """(rule, trace) violations that the local scanner finds in ``data``: the ground truth."""
    path = tmp_path / "expected.otlp.json"
    path.write_text(json.dumps(data))
    rules = load_paths([rules_dir]).rules
    return {(v.rule_id, v.trace_id) for v in Scanner(rules).scan(read_traces([path]))}


def stored_pairs(store: Store) -> list[tuple[str, str]]:
    return [(v.violation.rule_id, v.violation.trace_id) for v in store.violations()]


def write_settings(tmp_path: Path, *, tempo_url: str, store: str, rules_dir: Path = RULES_D,
                   **overrides: Any) -> Path:
    """A betrace.yaml for tests: no query_end_cutoff (the double has none), no retries, no jitter."""
    config: dict[str, Any] = {
        "rules_dir": str(rules_dir), "store": store,
        "tempo": {"url": tempo_url, "query_end_cutoff": "0s", "retries": 0},
        "schedule": {"every": "5m", "evaluation_delay": "0s", "initial_lookback": "15m", "jitter": "0s"},
        "http": {"listen": "127.0.0.1:0"},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            config[section][name] = value
        else:
            config[section] = value
    path = tmp_path / "betrace.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def settings(tmp_path: Path, **kwargs: Any) -> Settings:
    return load_settings(write_settings(tmp_path, **kwargs))


@dataclass
class Clock:
    """A settable clock for the daemon."""

    now: datetime

    @classmethod
    def at(cls, unix: float) -> Clock:
        return cls(datetime.fromtimestamp(unix, UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def advancing(evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluations that moved a checkpoint (all but failed ones)."""
    return [e for e in evaluations if e["outcome"] != "failed"]


def assert_contiguous(evaluations: list[dict[str, Any]], start: datetime | None,
                      end: datetime | None) -> None:
    """Per rule, the advancing windows tile [start, end) exactly, in the order they were written.

    ``None`` for ``start``/``end``: from each rule's first window / to its last.
    """
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for evaluation in advancing(evaluations):
        by_rule.setdefault(evaluation["rule_id"], []).append(evaluation)
    assert by_rule
    for rule_id, rows in by_rule.items():
        position = rows[0]["window_start"] if start is None else start
        for row in rows:
            assert position == row["window_start"], (rule_id, row)
            assert row["window_end"] > row["window_start"]
            position = row["window_end"]
        assert position == (end or position), rule_id
