"""Settled verdicts: a window's provisional and final passes, and each violation's status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Rows written before this revision were the only verdict on their window: their evaluations
read as ``final`` and their violations as ``confirmed``, and the ledger hashes them as before
(the new fields enter a record's hash only when they differ from those defaults).
"""

import sqlalchemy as sa
from alembic import op

from checker.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the verdict columns."""
    with op.batch_alter_table("evaluations") as table:
        table.add_column(sa.Column("verdict", sa.String(16), nullable=False, server_default="final"))
        table.add_column(sa.Column("amendments", sa.JSON()))
        table.add_column(sa.Column("judged", sa.JSON()))
    with op.batch_alter_table("violations") as table:
        table.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="confirmed"))
        table.add_column(sa.Column("retraction_reason", sa.Text()))
        table.add_column(sa.Column("amended_at", UTCDateTime()))


def downgrade() -> None:
    """Drop the verdict columns."""
    with op.batch_alter_table("violations") as table:
        table.drop_column("amended_at")
        table.drop_column("retraction_reason")
        table.drop_column("status")
    with op.batch_alter_table("evaluations") as table:
        table.drop_column("judged")
        table.drop_column("amendments")
        table.drop_column("verdict")
