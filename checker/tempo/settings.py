"""Tempo's settings: one model, read from the daemon's config file or built by ``scan --tempo``.

Each default lives here once; the client, the config loader and the CLI all read it.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from pydantic import ByteSize, Field, field_validator

from checker.config_types import Duration, HttpAuth, Size
from checker.redact import url_secrets

MAX_SEARCH_LIMIT = 262_144  # Tempo's default max_result_limit
MIB = 1024 * 1024


class TempoSettings(HttpAuth):
    """Where Tempo is and how to talk to it (see ``scan --tempo`` for the meaning of each)."""

    url: str = "http://localhost:3200"
    tenant: str | None = None
    search_limit: int = Field(1000, gt=0, le=MAX_SEARCH_LIMIT)
    timeout: Duration = timedelta(seconds=30)
    max_search_bytes: Size = Field(ByteSize(64 * MIB), gt=0)
    max_trace_bytes: Size = Field(ByteSize(50 * MIB), gt=0)
    retries: int = Field(5, ge=0)
    concurrency: int = Field(8, gt=0)
    query_end_cutoff: Duration = timedelta(seconds=30)
    trace_margin: Duration = timedelta(minutes=10)
    # The daemon's kept answers of margin searches (``SearchCache``); 0 asks Tempo every time.
    search_cache: Size = Field(ByteSize(64 * MIB), ge=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as err:
            raise ValueError(f"is not a URL ({err}), e.g. http://localhost:3200") from None
        if not url.host or "%" in url.host or not 0 < (url.port or 80) < 65536:
            raise ValueError("needs a host and a port from 1 to 65535, e.g. http://localhost:3200")
        if url.query or url.fragment:
            raise ValueError("must not have a query (?...) or fragment (#...): paths are added to it")
        return value

    @field_validator("timeout")
    @classmethod
    def _some_time(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be more than 0s")
        return value

    def secrets(self) -> list[str]:
        """Credentials sent to Tempo, also in the base64 form a Basic header carries."""
        return [*self.auth_secrets(), *url_secrets(self.url)]

    @property
    def verify(self) -> bool | str:
        """What httpx checks the server's certificate against: off, a CA bundle, or the system's."""
        return False if self.insecure else (str(self.ca_bundle) if self.ca_bundle else True)
