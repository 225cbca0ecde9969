"""Building blocks of the settings: durations as users write them, strict nested blocks."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from checker.rules.durations import DURATION_HINT, MAX_DURATION_NS, MAX_DURATION_TEXT, parse_timedelta

MAX_SECONDS = MAX_DURATION_NS / 1e9


def _duration(value: Any) -> Any:
    """``1m``, ``1h30m`` or a number of seconds (also as text, as environment variables are)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            parsed = parse_timedelta(text)
            if parsed is None:
                raise ValueError(f"not a duration: {DURATION_HINT}") from None
            return parsed
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("not a finite number of seconds")
        if abs(value) > MAX_SECONDS:  # beyond any schedule, and soon beyond timedelta
            raise ValueError(f"{value:g}s is longer than the limit of {MAX_DURATION_TEXT}")
        return timedelta(seconds=value)  # a negative one is refused by _not_negative
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_not_negative)]


class Section(BaseModel):
    """A nested block of the config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
