"""Building blocks of the settings: durations as users write them, strict nested blocks."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from checker.rules.fields import DURATION_HINT, duration_ns


def _duration(value: Any) -> Any:
    """``1m``, ``1h30m`` or a number of seconds; anything else is left to pydantic's reading."""
    if isinstance(value, str):
        nanos = duration_ns(value.strip())
        if nanos is None:
            raise ValueError(f"not a duration: {DURATION_HINT}")
        return timedelta(microseconds=nanos / 1000)
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Section(BaseModel):
    """A nested block of the config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
