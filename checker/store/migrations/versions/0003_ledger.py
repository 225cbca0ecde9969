"""The ledger: evaluations are hash-chained, and backfilled ones are marked.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from checker.store import ledger
from checker.store.schema import UTCDateTime

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
    op.create_index("ix_violations_evaluation_id", "violations", ["evaluation_id"])
    _chain(op.get_bind())


def _chain(connection: sa.Connection) -> None:
    """Chain the evaluations written before the ledger, in one pass (tables as of this revision)."""
    traces: dict[int, list[str]] = {}
    found = connection.execute(sa.text("select evaluation_id, trace_id from violations"))
    for evaluation_id, trace_id in found:
        traces.setdefault(evaluation_id, []).append(trace_id)
    evaluations = sa.table("evaluations", *(sa.column(name) for name in ("id", "prev_hash", "hash")))
    prev = ledger.GENESIS
    query = sa.text("select * from evaluations order by id").columns(
        window_start=UTCDateTime(), window_end=UTCDateTime(), started_at=UTCDateTime(), backfill=sa.Boolean())
    for row in connection.execute(query).mappings().all():
        digest = ledger.link(prev, ledger.canonical(dict(row), traces.get(row["id"], [])))
        connection.execute(evaluations.update().where(evaluations.c.id == row["id"])
                           .values(prev_hash=prev, hash=digest))
        prev = digest


def downgrade() -> None:
    """Drop the ledger columns."""
    op.drop_index("ix_violations_evaluation_id", "violations")
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("backfill")
