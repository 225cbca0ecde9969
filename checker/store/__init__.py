"""Persistence: rules seen, evaluations, violations, checkpoints and the outbox (SQLAlchemy Core)."""

from checker.store.errors import CheckpointMoved, StoreError
from checker.store.outbox import OutboxEntry, OutboxPolicy, OutboxRow, OutboxWrite
from checker.store.store import Committed, Outcome, RuleLock, Store, StoredViolation, WindowRecord

__all__ = [
    "CheckpointMoved",
    "Committed",
    "OutboxEntry",
    "OutboxPolicy",
    "OutboxRow",
    "OutboxWrite",
    "Outcome",
    "RuleLock",
    "Store",
    "StoreError",
    "StoredViolation",
    "WindowRecord",
]
