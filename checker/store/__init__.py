"""Persistence: rules seen, evaluations, violations, checkpoints and the outbox (SQLAlchemy Core)."""

from checker.store.outbox import OutboxPlan, OutboxRow
from checker.store.store import (
    CheckpointMoved,
    Committed,
    Outcome,
    RuleLock,
    Store,
    StoredViolation,
    StoreError,
    WindowRecord,
)

__all__ = [
    "CheckpointMoved",
    "Committed",
    "OutboxPlan",
    "OutboxRow",
    "Outcome",
    "RuleLock",
    "Store",
    "StoreError",
    "StoredViolation",
    "WindowRecord",
]
