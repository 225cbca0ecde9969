"""Bring a store's schema to the newest version, at every start.

Alembic does the versioning (``alembic_version`` table, one file per revision under
``migrations/versions``). On PostgreSQL two daemons starting together take turns through a
transaction-scoped advisory lock, so neither sees a half-migrated schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select

if TYPE_CHECKING:
    from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x62657472616365  # "betrace": one key for all schema changes


def alembic_config() -> Config:
    """Alembic's settings, pointing at the migrations shipped in the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Run every migration the store has not had yet."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

