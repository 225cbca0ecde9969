"""Signed ledger checkpoints: the ledger head signed with evidence.signing_key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from checker.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``ledger_checkpoints``."""
    op.create_table(
        "ledger_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("signed_at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("last_record", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("records", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("summary", sa.JSON()),
    )
    op.create_index("ix_ledger_checkpoints_signed_at", "ledger_checkpoints", ["signed_at"])


def downgrade() -> None:
    """Drop ``ledger_checkpoints``."""
    op.drop_index("ix_ledger_checkpoints_signed_at", table_name="ledger_checkpoints")
    op.drop_table("ledger_checkpoints")
