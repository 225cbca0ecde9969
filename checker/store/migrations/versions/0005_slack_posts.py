"""Slack posts: where each violations message went on a bot-token route, for retractions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Messages posted before this revision are unknown: their retractions go out as new messages.
"""

import sqlalchemy as sa
from alembic import op

from checker.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``slack_posts``."""
    op.create_table(
        "slack_posts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("trace_ids", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("blocks", sa.JSON(), nullable=False),
        sa.Column("withdrawn", sa.JSON(), nullable=False),
        sa.Column("posted_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_slack_posts_rule_route", "slack_posts", ["rule_id", "route", "posted_at"])


def downgrade() -> None:
    """Drop ``slack_posts``."""
    op.drop_index("ix_slack_posts_rule_route", table_name="slack_posts")
    op.drop_table("slack_posts")
