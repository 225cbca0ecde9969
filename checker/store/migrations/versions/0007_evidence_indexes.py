"""Indexes for evidence reports over long periods: the settling passes and the failed attempts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Both are partial, so they stay small beside the table and cost the hot path (one append per
window) little: a report reads final passes over provisional windows and failed or skipped
attempts without scanning every record.
"""

import sqlalchemy as sa
from alembic import op

from checker.store.schema import ATTEMPTS as ATTEMPTS_TEXT
from checker.store.schema import SETTLING as SETTLING_TEXT

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SETTLING = sa.text(SETTLING_TEXT)
ATTEMPTS = sa.text(ATTEMPTS_TEXT)


def upgrade() -> None:
    """Create ``ix_evaluations_settling`` and ``ix_evaluations_attempts``."""
    op.create_index("ix_evaluations_settling", "evaluations", ["rule_id", "window_start"],
                    postgresql_where=SETTLING, sqlite_where=SETTLING)
    op.create_index("ix_evaluations_attempts", "evaluations", ["rule_id", "window_start"],
                    postgresql_where=ATTEMPTS, sqlite_where=ATTEMPTS)


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_evaluations_attempts", table_name="evaluations")
    op.drop_index("ix_evaluations_settling", table_name="evaluations")
