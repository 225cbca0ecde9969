"""The ledger: evaluations are hash-chained, and backfilled ones are marked.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from checker.store import ledger

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add backfill, prev_hash and hash; chain the evaluations recorded before."""
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("backfill", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("prev_hash", sa.String(64)))
        batch.add_column(sa.Column("hash", sa.String(64)))
    connection = op.get_bind()
    ids = [row[0] for row in connection.execute(sa.text("select id from evaluations order by id"))]
    for evaluation_id in ids:
        ledger.append(connection, evaluation_id)


def downgrade() -> None:
    """Drop the ledger columns."""
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("backfill")
