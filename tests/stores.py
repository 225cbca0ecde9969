"""Store URLs for tests: a SQLite file, and a fresh schema on the PostgreSQL at 127.0.0.1:5432.

PostgreSQL tests skip with a reason where no server answers (a laptop); CI here has one.
``BETRACE_TEST_POSTGRES`` points them at another server.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

POSTGRES = os.environ.get("BETRACE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_problem() -> str | None:
    try:
        with psycopg.connect(POSTGRES, connect_timeout=3) as connection:
            connection.execute("select 1")
    except psycopg.Error as err:
        return f"no PostgreSQL at {POSTGRES} ({str(err).strip().splitlines()[0]}); set BETRACE_TEST_POSTGRES"
    return None


POSTGRES_PROBLEM = _postgres_problem()
needs_postgres = pytest.mark.skipif(POSTGRES_PROBLEM is not None, reason=POSTGRES_PROBLEM or "")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL whose tables live in a schema of their own, dropped afterwards."""
    schema = f"betrace_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f'create schema "{schema}"')
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f'drop schema "{schema}" cascade')


@contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """``sqlite`` or ``postgres``."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'betrace.db'}"
        return
    if POSTGRES_PROBLEM is not None:
        pytest.skip(POSTGRES_PROBLEM)
    with postgres_schema() as url:
        yield url


STORE_KINDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.external_service)]
