"""Everything the Tempo client raises: one module, as httpx keeps its ``_exceptions``."""

from __future__ import annotations

from checker.errors import TraceSourceError


class TempoError(TraceSourceError):
    """Tempo could not be reached or answered something unusable.

    ``retryable`` says whether trying again later may help.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 retryable: bool = False, hint: str | None = None,
                 retry_after: float | None = None) -> None:
        detail = f"{url}" + (f" answered {status}" if status is not None else "")
        super().__init__(f"{detail}: {message}", hint=hint)
        self.url = url
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class AnswerTooLargeError(TempoError):
    """A search answer over ``tempo.max_search_bytes``: fewer traces per page may still fit."""


class UnprovenAnswerError(ValueError):
    """A 200 answer that is not what Tempo sends: retried, then reported."""
