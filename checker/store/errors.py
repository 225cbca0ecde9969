"""Everything the store raises."""

from __future__ import annotations

from checker.errors import CheckerError


class StoreError(CheckerError):
    """The store cannot be opened or written; the message names the database, never a password."""


class CheckpointMoved(StoreError):  # noqa: N818  (a condition, not a failure of the store)
    """Another worker committed this window first; nothing was written."""
