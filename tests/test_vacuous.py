"""Rules with nothing in scope for ``schedule.vacuous_after`` are logged, once per such stretch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from checker.daemon.vacuous import VacuousRules

T0 = datetime(2026, 12, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def hours(watch: VacuousRules, rule_id: str, first: int, last: int, in_scope: int = 0) -> None:
    for hour in range(first, last):
        watch.saw(rule_id, (T0 + hour * HOUR, T0 + (hour + 1) * HOUR), in_scope)


def test_a_day_with_nothing_in_scope_is_logged_once_a_day() -> None:
    watch = VacuousRules(24 * HOUR)
    with capture_logs() as logs:
        hours(watch, "dead", 0, 23)
        assert [] == logs
        hours(watch, "dead", 23, 47)
    warned = [e for e in logs if e["event"] == "rule.vacuous"]
    assert [(T0.isoformat(), (T0 + 24 * HOUR).isoformat())] == [(e["since"], e["until"]) for e in warned]
    assert all(e["log_level"] == "warning" and e["rule"] == "dead" for e in warned)
    with capture_logs() as logs:
        hours(watch, "dead", 47, 48)
    assert ["rule.vacuous"] == [e["event"] for e in logs]  # the second whole day


def test_a_trace_in_scope_starts_the_count_again() -> None:
    watch = VacuousRules(24 * HOUR)
    with capture_logs() as logs:
        hours(watch, "alive", 0, 20)
        hours(watch, "alive", 20, 21, in_scope=3)
        hours(watch, "alive", 21, 44)
        hours(watch, "other", 0, 10)
    assert [] == logs
