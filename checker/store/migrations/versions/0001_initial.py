"""The first schema: rules, evaluations, violations, checkpoints, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from checker.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "rules",
        sa.Column("rule_id", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("frameworks", sa.JSON(), nullable=False),
        sa.Column("controls", sa.JSON(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("rule_version", sa.String(64), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("scope_size", sa.Integer()),
        sa.Column("candidates", sa.Integer(), nullable=False),
        sa.Column("violations", sa.Integer(), nullable=False),
        sa.Column("new_violations", sa.Integer(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("checker_version", sa.String(40), nullable=False),
    )
    op.create_index("ix_evaluations_rule_window", "evaluations", ["rule_id", "window_start"])
    op.create_table(
        "violations",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("rule_version", sa.String(64), nullable=False),
        sa.Column("evaluation_id", ID, sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("found_at", UTCDateTime(), nullable=False),
        sa.Column("trace_start", UTCDateTime()),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.UniqueConstraint("rule_id", "trace_id", name="uq_violations_rule_trace"),
    )
    op.create_index("ix_violations_found_at", "violations", ["found_at"])
    op.create_table(
        "checkpoints",
        sa.Column("rule_id", sa.String(200), primary_key=True),
        sa.Column("position", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("evaluation_id", ID, sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("dead", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("ix_outbox_due", "outbox", ["dead", "next_attempt_at"])


def downgrade() -> None:
    """Drop every table."""
    for table in ("outbox", "checkpoints", "violations", "evaluations", "rules"):
        op.drop_table(table)
