"""Persistence: rules seen, evaluations, violations, checkpoints and the outbox (SQLAlchemy Core)."""

from checker.store.errors import CheckpointMoved, StoreError
from checker.store.locks import RuleLock
from checker.store.outbox import OutboxEntry, OutboxPolicy, OutboxRow, OutboxWrite, SlackPost
from checker.store.store import (
    Amendment,
    Committed,
    Outcome,
    ProvisionalWindow,
    Store,
    StoredViolation,
    WindowRecord,
)

__all__ = [
    "Amendment",
    "CheckpointMoved",
    "Committed",
    "OutboxEntry",
    "OutboxPolicy",
    "OutboxRow",
    "OutboxWrite",
    "Outcome",
    "ProvisionalWindow",
    "RuleLock",
    "SlackPost",
    "Store",
    "StoreError",
    "StoredViolation",
    "WindowRecord",
]
