"""Which rules are evaluated together: pure functions of their schedules and next windows.

Rules whose next windows are identical share one evaluation (their searches deduplicated, each
candidate fetched once). Rules with one schedule have the same windows (``windows``: the epoch
grid of the period), so they are also the unit of work between replicas: a *shard* is such a
set of rules, cut to at most ``size``, and each replica takes whole shards, in a turn that
differs from run to run so that two replicas start on different shards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Hashable, Mapping

    from checker.daemon.windows import RuleSchedule

# The most rules in a shard: big enough that rules sharing a scope search it once, small enough
# that a hundred rules of one schedule still make shards for two replicas to share.
SHARD_SIZE = 25
T = TypeVar("T")
K = TypeVar("K", bound="Hashable")


def shards(schedules: Mapping[str, RuleSchedule], size: int = SHARD_SIZE) -> list[list[str]]:
    """The rules cut into shards: one schedule per shard, at most ``size`` rules, all sorted.

    Deterministic, so replicas that load the same rules agree on the shards and never take
    parts of one another's.
    """
    classes: dict[RuleSchedule, list[str]] = {}
    for rule_id in sorted(schedules):
        classes.setdefault(schedules[rule_id], []).append(rule_id)
    ordered = sorted(classes.items(), key=lambda item: (
        item[0].period, item[0].delay, item[0].settle, item[0].cron or ""))
    return [ids[i:i + size] for _, ids in ordered for i in range(0, len(ids), size)]


def together(heads: Mapping[str, K]) -> list[tuple[K, list[str]]]:
    """The rules whose next piece of work (a window, a batch span) is identical.

    In the order of that piece, oldest first; each list of rule IDs sorted.
    """
    same: dict[K, list[str]] = {}
    for rule_id in sorted(heads):
        same.setdefault(heads[rule_id], []).append(rule_id)
    return sorted(same.items(), key=lambda item: item[0])  # type: ignore[arg-type,return-value]


def rotated(items: list[T], turn: int) -> list[T]:
    """``items`` starting at ``turn`` (modulo their number), wrapping around."""
    if not items:
        return []
    start = turn % len(items)
    return items[start:] + items[:start]
