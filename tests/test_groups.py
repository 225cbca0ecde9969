"""Which rules are evaluated together, and which a replica locks together: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from checker.daemon.groups import rotated, shards, together
from checker.daemon.windows import RuleSchedule

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TEN = RuleSchedule(timedelta(seconds=10), timedelta(seconds=30))
MINUTE = RuleSchedule(timedelta(minutes=1), timedelta(seconds=30))
CRON = RuleSchedule(timedelta(minutes=5), timedelta(seconds=30), "*/5 * * * *")


def window(start: int, end: int) -> tuple[datetime, datetime]:
    return T0 + timedelta(seconds=start), T0 + timedelta(seconds=end)


class TestShards:
    """Rules with one schedule share a shard, cut to a size; every replica cuts them alike."""

    def test_one_shard_per_schedule_sorted(self) -> None:
        schedules = {"b": TEN, "a": MINUTE, "c": TEN, "d": CRON}
        assert [["b", "c"], ["a"], ["d"]] == shards(schedules, 10)

    def test_a_large_schedule_class_is_cut_to_the_size(self) -> None:
        schedules = {f"r{n:02}": TEN for n in range(7)}
        assert [["r00", "r01", "r02"], ["r03", "r04", "r05"], ["r06"]] == shards(schedules, 3)

    def test_the_same_rules_give_the_same_shards_whatever_their_order(self) -> None:
        forward = {f"r{n}": (TEN if n % 2 else MINUTE) for n in range(9)}
        backward = dict(reversed(forward.items()))
        assert shards(forward, 2) == shards(backward, 2)

    def test_no_rules(self) -> None:
        assert [] == shards({}, 5)


class TestTogether:
    """Identical next windows share an evaluation; the oldest window goes first."""

    def test_identical_windows_are_one_group(self) -> None:
        heads = {"a": window(0, 10), "b": window(0, 10), "c": window(10, 20), "d": window(0, 60)}
        expected = [(window(0, 10), ["a", "b"]), (window(0, 60), ["d"]), (window(10, 20), ["c"])]
        assert expected == together(heads)

    def test_a_rule_behind_goes_alone_first(self) -> None:
        heads = {"late": window(-30, -20), "a": window(0, 10), "b": window(0, 10)}
        assert (window(-30, -20), ["late"]) == together(heads)[0]

    def test_nothing_due(self) -> None:
        assert [] == together({})


class TestRotated:
    def test_each_turn_starts_one_further(self) -> None:
        items = [1, 2, 3]
        assert [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3]] == [rotated(items, t) for t in range(4)]

    def test_empty(self) -> None:
        assert [] == rotated([], 7)
