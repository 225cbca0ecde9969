"""Which windows a rule evaluates next, and when it runs: pure functions of checkpoint and clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import given
from hypothesis import strategies as st

from checker.config import ScheduleSettings
from checker.daemon.windows import EPOCH, Due, RuleSchedule, Window, cron_period, due_windows, schedule_of
from checker.rules.load import load_text

if TYPE_CHECKING:
    from checker.rules.rule import Rule

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def rule(extra: str = "") -> Rule:
    text = "rules:\n  - id: r\n    condition: when { a } always { b }\n" + extra
    ruleset = load_text(text, "t.yaml")
    assert not ruleset.errors, [str(e) for e in ruleset.errors]
    return ruleset.rules[0]


def rule_errors(extra: str) -> list[str]:
    ruleset = load_text("rules:\n  - id: r\n    condition: when { a } always { b }\n" + extra, "t.yaml")
    assert not ruleset.rules
    return [str(e) for e in ruleset.errors]


def whole(moment: datetime) -> bool:
    return moment.microsecond == 0


def every(period: timedelta, delay: timedelta = timedelta(0)) -> RuleSchedule:
    return RuleSchedule(period, delay)


def spans(windows: list[Window]) -> list[timedelta]:
    return [end - start for start, end in windows]


class TestDueWindows:
    def test_contiguous_whole_second_windows_up_to_now_less_delay(self) -> None:
        now = T0 + 5 * MINUTE + 2 * MINUTE + timedelta(milliseconds=700)
        due = due_windows(T0, now, every(MINUTE, 2 * MINUTE), max_catchup=24 * HOUR)
        assert due.skipped is None
        assert due.windows == [(T0 + i * MINUTE, T0 + (i + 1) * MINUTE) for i in range(5)]

    def test_a_window_not_yet_whole_waits(self) -> None:
        now = T0 + timedelta(seconds=150, microseconds=999_999) + 2 * MINUTE
        due = due_windows(T0, now, every(MINUTE, 2 * MINUTE), max_catchup=24 * HOUR)
        assert spans(due.windows) == [MINUTE, MINUTE]
        assert due.windows[-1][1] == T0 + 2 * MINUTE
        assert due_windows(T0, T0 + timedelta(seconds=17.5), every(MINUTE), max_catchup=HOUR) == Due()

    def test_run_once_evaluates_the_tail_too(self) -> None:
        """No trigger follows ``run --once``: the part after the last grid point is a window too."""
        now = T0 + timedelta(seconds=150, microseconds=999_999) + 2 * MINUTE
        due = due_windows(T0, now, every(MINUTE, 2 * MINUTE), max_catchup=24 * HOUR, tail=True)
        assert due.windows == [(T0, T0 + MINUTE), (T0 + MINUTE, T0 + 2 * MINUTE),
                               (T0 + 2 * MINUTE, T0 + timedelta(seconds=150))]
        # The next run (a trigger's) reaches the grid again with one short window.
        later = due_windows(T0 + timedelta(seconds=150), now + MINUTE, every(MINUTE, 2 * MINUTE),
                            max_catchup=24 * HOUR)
        assert later.windows == [(T0 + timedelta(seconds=150), T0 + 3 * MINUTE)]
        on_grid = T0 + 2 * MINUTE + 2 * MINUTE
        assert due_windows(T0, on_grid, every(MINUTE, 2 * MINUTE), max_catchup=HOUR, tail=True) == Due(
            None, [(T0, T0 + MINUTE), (T0 + MINUTE, T0 + 2 * MINUTE)])

    def test_a_checkpoint_off_the_grid_gets_one_short_window_to_reach_it(self) -> None:
        off = T0 + timedelta(seconds=17)
        due = due_windows(off, T0 + 3 * MINUTE + timedelta(seconds=5), every(MINUTE), max_catchup=HOUR)
        assert due == Due(None, [(off, T0 + MINUTE), (T0 + MINUTE, T0 + 2 * MINUTE),
                                 (T0 + 2 * MINUTE, T0 + 3 * MINUTE)])

    def test_rules_started_apart_have_the_same_windows_once_on_the_grid(self) -> None:
        now = T0 + 10 * MINUTE + timedelta(seconds=3)
        ten = every(timedelta(seconds=10))
        one = due_windows(T0 + timedelta(seconds=4), now, ten, max_catchup=HOUR).windows
        two = due_windows(T0 + timedelta(minutes=7, seconds=33), now, ten, max_catchup=HOUR).windows
        assert all(end.timestamp() % 10 == 0 for _, end in one + two)
        assert two[1:] == one[-(len(two) - 1):]

    def test_cron_windows_follow_the_checkpoint(self) -> None:
        cron = RuleSchedule(5 * MINUTE, timedelta(0), "*/5 * * * *")
        off = T0 + timedelta(seconds=17)
        due = due_windows(off, off + 7 * MINUTE, cron, max_catchup=HOUR)
        assert due.windows == [(off, off + 5 * MINUTE), (off + 5 * MINUTE, off + 7 * MINUTE)]

    @pytest.mark.parametrize("after_delay", [
        timedelta(0), -SECOND, -HOUR, timedelta(milliseconds=999),
    ])
    def test_nothing_due_until_a_whole_second_past_the_checkpoint(self, after_delay: timedelta) -> None:
        delay = 2 * MINUTE
        due = due_windows(T0, T0 + delay + after_delay, every(MINUTE, delay), max_catchup=HOUR)
        assert due == Due()

    def test_backlog_beyond_max_catchup_is_skipped_explicitly(self) -> None:
        delay = 2 * MINUTE
        now = T0 + 30 * HOUR + delay
        due = due_windows(T0, now, every(HOUR, delay), max_catchup=24 * HOUR)
        assert due.skipped == (T0, T0 + 6 * HOUR)
        assert due.windows[0][0] == T0 + 6 * HOUR
        assert due.windows[-1][1] == T0 + 30 * HOUR
        assert spans(due.windows) == [HOUR] * 24

    def test_backlog_of_exactly_max_catchup_is_not_skipped(self) -> None:
        due = due_windows(T0, T0 + 24 * HOUR, every(HOUR), max_catchup=24 * HOUR)
        assert due.skipped is None
        assert len(due.windows) == 24

    def test_skip_start_is_a_whole_second(self) -> None:
        now = T0 + 10 * HOUR + timedelta(milliseconds=300)
        due = due_windows(T0, now, every(HOUR, timedelta(milliseconds=100)), max_catchup=HOUR)
        assert due.skipped == (T0, T0 + 8 * HOUR)  # max_catchup is never less than two periods
        assert due.windows == [(T0 + 8 * HOUR, T0 + 9 * HOUR), (T0 + 9 * HOUR, T0 + 10 * HOUR)]

    def test_the_skip_ends_on_the_grid(self) -> None:
        due = due_windows(T0, T0 + 3 * HOUR, every(timedelta(seconds=7)), max_catchup=timedelta(seconds=100))
        assert due.skipped is not None
        assert due.skipped[1].timestamp() % 7 == 0

    def test_a_rule_slower_than_max_catchup_never_skips_a_normal_run(self) -> None:
        weekly = every(timedelta(days=7))
        late = T0 + timedelta(days=7, seconds=1)
        assert due_windows(T0, late, weekly, max_catchup=24 * HOUR).skipped is None

    def test_fractional_max_catchup_never_skips_nothing(self) -> None:
        due = due_windows(T0, T0 + 10 * SECOND, every(MINUTE), max_catchup=timedelta(seconds=9.5))
        assert due.skipped is None or due.skipped[0] < due.skipped[1]

    def test_fractional_rule_period_still_gives_whole_second_windows(self) -> None:
        schedule = schedule_of(rule("    every: 1500ms\n"), ScheduleSettings())
        due = due_windows(T0, T0 + 10 * SECOND + schedule.delay, schedule, max_catchup=HOUR)
        assert all(whole(start) and whole(end) for start, end in due.windows)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[datetime, datetime, RuleSchedule, timedelta]:
    """Whole-second checkpoints (as the daemon keeps them) and periods; any clock and delay; cron or not."""
    checkpoint = T0 + timedelta(seconds=draw(st.integers(-10**8, 10**8)))
    period = timedelta(seconds=draw(st.integers(1, 7200)))
    max_catchup = timedelta(seconds=draw(st.integers(1, 300 * int(period.total_seconds()))))
    delay = timedelta(microseconds=draw(st.integers(0, 3 * 3600 * 10**6)))
    backlog = timedelta(microseconds=draw(st.integers(-10**9, 2 * int(max_catchup.total_seconds()) * 10**6)))
    cron = draw(st.sampled_from([None, "* * * * *"]))
    return checkpoint, checkpoint + delay + backlog, RuleSchedule(period, delay, cron), max_catchup


@given(scenarios())
def test_windows_exactly_cover_checkpoint_to_now_less_delay(
        scenario: tuple[datetime, datetime, RuleSchedule, timedelta]) -> None:
    checkpoint, now, schedule, max_catchup = scenario
    max_catchup = max(max_catchup, 2 * schedule.period)  # the floor due_windows applies
    end = (now - schedule.delay).replace(microsecond=0)
    if schedule.cron is None:  # the last grid point: a window not yet whole waits
        end -= (end - EPOCH) % schedule.period
    due = due_windows(checkpoint, now, schedule, max_catchup)
    if end <= checkpoint:
        assert due == Due()
        return
    pieces = ([due.skipped] if due.skipped else []) + due.windows
    assert pieces[0][0] == checkpoint
    assert pieces[-1][1] == end
    for (_, stop), (start, _) in itertools.pairwise(pieces):
        assert stop == start  # no gap, no overlap
    assert all(start < stop for start, stop in pieces)
    assert all(whole(start) and whole(stop) for start, stop in due.windows)
    assert all(span <= schedule.period for span in spans(due.windows))
    if schedule.cron is None:  # every window ends on the grid; only the first may be short
        assert all((stop - EPOCH) % schedule.period == timedelta(0) for _, stop in due.windows)
        assert all(span == schedule.period for span in spans(due.windows)[1:])
    evaluated = end - due.windows[0][0]
    slack = SECOND if schedule.cron else schedule.period  # the skip ends on the grid
    assert evaluated <= max_catchup + slack
    if due.skipped is None:
        assert end - checkpoint <= max_catchup
    else:
        assert evaluated >= max_catchup - slack  # nothing skipped that could have been evaluated


class TestScheduleOf:
    DEFAULTS = ScheduleSettings(every=timedelta(minutes=3), evaluation_delay=timedelta(seconds=45))

    def test_defaults_from_the_config(self) -> None:
        assert schedule_of(rule(), self.DEFAULTS) == RuleSchedule(
            timedelta(minutes=3), timedelta(seconds=45), settle=10 * MINUTE)

    def test_rule_every_wins(self) -> None:
        assert schedule_of(rule("    every: 10m\n"), self.DEFAULTS) == RuleSchedule(
            10 * MINUTE, timedelta(seconds=45), settle=10 * MINUTE)

    def test_rule_evaluation_delay_wins(self) -> None:
        assert schedule_of(rule("    evaluation_delay: 1h30m\n"), self.DEFAULTS) == RuleSchedule(
            timedelta(minutes=3), timedelta(minutes=90), settle=timedelta(minutes=90))

    def test_rule_settle_wins_and_is_never_before_the_delay(self) -> None:
        assert schedule_of(rule("    settle: 30m\n"), self.DEFAULTS).settle == 30 * MINUTE
        assert schedule_of(rule("    settle: 10s\n"), self.DEFAULTS).settle == timedelta(seconds=45)

    @pytest.mark.parametrize(("cron", "period"), [
        ("*/5 * * * *", 5 * MINUTE),
        ("0 * * * *", HOUR),
        ("* * * * *", MINUTE),
        ("0 0 * * *", 24 * HOUR),
    ])
    def test_cron_period_is_the_gap_between_firings(self, cron: str, period: timedelta) -> None:
        schedule = schedule_of(rule(f"    cron: '{cron}'\n    evaluation_delay: 5m\n"), self.DEFAULTS)
        assert schedule == RuleSchedule(period, 5 * MINUTE, cron, settle=10 * MINUTE)
        assert cron_period(cron) == period

    def test_cron_rule_keeps_the_default_delay(self) -> None:
        schedule = schedule_of(rule("    cron: '*/5 * * * *'\n"), self.DEFAULTS)
        assert schedule.delay == timedelta(seconds=45)


class TestTrigger:
    def test_cron_gives_a_utc_cron_trigger(self) -> None:
        trigger = RuleSchedule(5 * MINUTE, MINUTE, "*/5 * * * *").trigger()
        assert isinstance(trigger, CronTrigger)
        assert str(trigger.timezone) == "UTC"
        fire = trigger.get_next_fire_time(None, T0 + timedelta(minutes=1, seconds=1))
        assert fire == T0 + 5 * MINUTE

    @pytest.mark.parametrize(("period", "jitter", "expected"), [
        (MINUTE, timedelta(seconds=5), 5),
        (MINUTE, timedelta(milliseconds=200), 1),  # rounded up to a whole second
        (MINUTE, timedelta(seconds=30), 20),  # a third of the period
        (timedelta(seconds=6), timedelta(seconds=5), 2),
        (timedelta(seconds=10), timedelta(seconds=5), 3),
        (timedelta(seconds=2), timedelta(seconds=5), 0),  # a third of 2s is under a second
        (MINUTE, timedelta(0), 0),
    ])
    def test_jitter_is_capped_at_a_third_of_the_period(
            self, period: timedelta, jitter: timedelta, expected: int) -> None:
        assert every(period).spread(jitter) == expected

    def test_an_interval_fires_on_the_grid_when_a_window_becomes_due(self) -> None:
        trigger = every(10 * SECOND, timedelta(seconds=45)).trigger()
        assert isinstance(trigger, IntervalTrigger)
        assert trigger.jitter is None
        fire = trigger.get_next_fire_time(None, T0 + timedelta(seconds=1))
        assert fire == T0 + timedelta(seconds=5)  # the window ending at T0 - 40s
        assert fire is not None
        assert trigger.get_next_fire_time(fire, fire) == fire + 10 * SECOND


class TestCronInRules:
    def test_invalid_cron_value_is_rejected_naming_the_field(self) -> None:
        errors = rule_errors("    cron: '61 * * * *'\n")
        assert len(errors) == 1
        assert errors[0].startswith("t.yaml:4:11: rule r: invalid 'cron' '61 * * * *': ")
        assert "61" in errors[0].split(": ", 3)[-1]
        assert "hint: five fields" in errors[0]

    def test_wrong_number_of_fields(self) -> None:
        errors = rule_errors("    cron: '*/5 * *'\n")
        assert len(errors) == 1
        assert "invalid 'cron' '*/5 * *': needs 5 fields, got 3" in errors[0]

    def test_cron_and_every_together(self) -> None:
        errors = rule_errors("    cron: '*/5 * * * *'\n    every: 5m\n")
        assert any("a rule has 'every' or 'cron', not both" in e for e in errors)
