"""Times and windows given on the command line: RFC 3339 or unix seconds, and durations."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from checker.errors import UsageError
from checker.rules.durations import DURATION_HINT, parse_ns
from checker.rules.errors import DurationTooLongError

# Tempo reads start/end as uint32 seconds: a larger number is another unit, or no time at all.
MAX_UNIX_SECONDS = 2**32
_FINER_UNITS = (("milliseconds", 10**3), ("microseconds", 10**6), ("nanoseconds", 10**9))


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` in seconds; None for a date, garbage (a superscript two) or a negative value.

    A peer's header is input like any other: it must never raise.
    """
    text = (value or "").strip()
    if not text.isascii():
        return None
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_time(text: str) -> float:
    """Unix seconds from ``1795729000``, ``1795729000.5`` or ``2026-11-27T10:00:00Z``."""
    try:
        return _unix_seconds(text, float(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a time: use RFC 3339 "
                        "(2026-11-27T10:00:00Z) or unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _unix_seconds(text: str, value: float) -> float:
    """``value`` when it can be unix seconds; a number in ms or ns is named as such."""
    if math.isfinite(value) and 0 <= value < MAX_UNIX_SECONDS:
        return value
    for unit, per_second in _FINER_UNITS:
        if 0 <= value < MAX_UNIX_SECONDS * per_second:
            raise UsageError(f"{text} looks like unix {unit}, not seconds",
                             hint=f"give unix seconds ({value / per_second:.0f}) or RFC 3339")
    raise UsageError(f"{text} is not a time: use RFC 3339 (2026-11-27T10:00:00Z) or unix seconds")


def duration_seconds(text: str) -> float:
    """Seconds from ``15m``, ``1h30m``, ``30s``: a command-line duration, refused as a usage error."""
    try:
        nanos = parse_ns(text)
    except DurationTooLongError as err:
        raise UsageError(str(err), hint=DURATION_HINT) from None
    if nanos is None:
        raise UsageError(f"{text!r} is not a duration: {DURATION_HINT}")
    return nanos / 1e9


def window(now: float, cutoff: float, *, since: str | None, start: str | None,
           end: str | None) -> tuple[int, int, bool]:
    """Whole-second [start, end] to evaluate, and whether ``end`` was clamped.

    Tempo silently hides the newest ``cutoff`` seconds (query_end_cutoff), so a window
    reaching into them is cut back rather than reported as evaluated.
    """
    latest = math.floor(now - cutoff)
    if since is not None:
        length = math.ceil(duration_seconds(since))
        if length <= 0:
            raise UsageError(f"--since {since} is an empty window")
        return latest - length, latest, False
    if start is None or end is None:
        raise UsageError("give --since, or both --start and --end")
    first, last = math.floor(parse_time(start)), math.ceil(parse_time(end))
    clamped = last > latest
    last = min(last, latest)
    if last <= first:
        raise UsageError(f"the window {start} .. {end} is empty"
                        + (" once Tempo's query_end_cutoff is applied" if clamped else ""))
    return first, last, clamped
