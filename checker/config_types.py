"""Building blocks of the settings: durations and sizes as users write them, strict nested blocks."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path  # noqa: TC003  (pydantic reads the annotations at run time)
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
)

from checker.redact import basic_auth_token, header_secrets
from checker.rules.durations import (
    DURATION_HINT,
    DURATION_PATTERN,
    MAX_DURATION_NS,
    MAX_DURATION_TEXT,
    duration_text,
    parse_timedelta,
)

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


# The editor schema (``checker.schema``) says what ``_duration`` reads, not pydantic's ISO 8601, and
# the yaml-language-server shows a pattern's patternErrorMessage instead of the bare pattern.
Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_not_negative), WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": DURATION_PATTERN, "patternErrorMessage": DURATION_HINT},
              {"type": "number", "minimum": 0}],
    "description": "a duration such as 30s, 1m or 1h30m (units ns us µs ms s m h d), or a number of seconds",
})]

# ByteSize's units (b, kb, kib, kbit, kibit, ..., in any case), for editors: pydantic's own pattern
# matches any word after the number.
SIZE_HINT = "write a size such as 64MiB, 50MB or 1GiB"
SIZE_PATTERN = r"^\s*\d*\.?\d+\s*(?:[KkMmGgTtPpEe](?:[Ii]?[Bb](?:[Ii][Tt])?)?|[Bb](?:[Ii][Tt])?)?$"
Size = Annotated[ByteSize, WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": SIZE_PATTERN, "patternErrorMessage": SIZE_HINT},
              {"type": "integer", "minimum": 0}],
    "description": "a size such as 64MiB or 50MB, or a number of bytes",
})]


def setting_text(value: timedelta | ByteSize) -> str:
    """A duration or size as the config and the command line take it (``30s``, ``64MiB``), for help texts."""
    if isinstance(value, timedelta):
        return duration_text(value)
    return value.human_readable(separator="").replace(".0", "")


class Section(BaseModel):
    """A nested block of the config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpAuth(Section):
    """Credentials and certificate checks of an HTTP client: Tempo and Alertmanager use the same keys."""

    username: str | None = None
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    ca_bundle: Path | None = None
    insecure: bool = False

    def auth_secrets(self) -> list[str]:
        """The password (also in the base64 form a Basic header carries), the token, auth headers."""
        password = self.password.get_secret_value() if self.password else None
        token = self.bearer_token.get_secret_value() if self.bearer_token else None
        basic = basic_auth_token(self.username, password or "") if self.username else None
        return [secret for secret in (password, token, basic, *header_secrets(self.headers)) if secret]
