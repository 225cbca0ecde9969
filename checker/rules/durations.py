"""Durations as people write them (``500ms``, ``1h30m``, ``3650d``): one parser for every caller.

Rule conditions, rule fields (``every``, example spans), the config and the CLI all read
durations here, so a unit that works in one place works in all of them. The units are the
union of what the condition language and the YAML fields each accepted when they had parsers
of their own (``µs`` from the one, ``d`` from the other): nothing that parsed stops parsing.
The grammar's DURATION terminal is built from ``UNITS_NS`` (``parse.parser``).
"""

from __future__ import annotations

import re
from datetime import timedelta

from checker.rules.errors import DurationTooLongError

UNITS_NS: dict[str, int] = {
    "ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
    "h": 3600 * 10**9, "d": 86400 * 10**9,
}
# Longest first, so that "5ms" is five milliseconds and never five minutes and an "s".
UNIT_PATTERN = "|".join(sorted(UNITS_NS, key=len, reverse=True))
_PART = re.compile(rf"(\d+(?:\.\d+)?)({UNIT_PATTERN})")
# What ``parse_ns`` accepts, as a whole-string pattern in the dialect JSON Schema uses (ECMA 262),
# so that editors flag a bad duration as it is typed (``checker.schema``).
DURATION_PATTERN = rf"^(?:\d+(?:\.\d+)?(?:{UNIT_PATTERN}))+$"

# Longer durations only come from typos, and overflow datetime arithmetic (now - lookback).
MAX_DURATION_NS = 3650 * UNITS_NS["d"]
MAX_DURATION_TEXT = "3650d (ten years)"
DURATION_HINT = "write a duration such as 30s, 1m, 2h or 1h30m"


def parse_ns(text: str) -> int | None:
    """``1m30s`` → nanoseconds; None when it is not a duration (a sign is the caller's business).

    :raises DurationTooLongError: beyond ten years.
    """
    parts = _PART.findall(text)
    if not parts or "".join(a + u for a, u in parts) != text:
        return None
    # float first: it saturates to inf instead of overflowing, so the bound is checked safely.
    if sum(float(amount) * UNITS_NS[unit] for amount, unit in parts) > MAX_DURATION_NS:
        raise DurationTooLongError(f"{text} is longer than the limit of {MAX_DURATION_TEXT}")
    return sum(round(float(amount) * UNITS_NS[unit]) for amount, unit in parts)


def parse_timedelta(text: str) -> timedelta | None:
    """``1m30s`` → a timedelta, for schedules and settings; None when it is not a duration.

    :raises DurationTooLongError: beyond ten years.
    """
    nanos = parse_ns(text)
    return None if nanos is None else timedelta(microseconds=nanos / 1000)


def duration_text(value: timedelta) -> str:
    """``30s``, ``10m``, ``1h30m``: a duration as a user writes it, for messages."""
    seconds = value.total_seconds()
    if seconds != int(seconds) or not seconds:
        return f"{seconds:g}s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
