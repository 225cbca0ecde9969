"""Per rule and route: when the last message went out (realert) and whether it is firing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from checker.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add alert_state."""
    op.create_table(
        "alert_state",
        sa.Column("rule_id", sa.String(200), primary_key=True),
        sa.Column("route", sa.String(200), primary_key=True),
        sa.Column("last_sent_at", UTCDateTime()),
        sa.Column("firing", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    """Drop alert_state."""
    op.drop_table("alert_state")
