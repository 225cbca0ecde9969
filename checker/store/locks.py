"""Named locks between workers: which replica (or ``run --once`` beside a daemon) runs a rule.

On PostgreSQL they are session advisory locks, held on a connection of their own (never one
from the pool commits use), so a crashed holder loses them with its session. Advisory locks
are shared by a whole database, so their keys name the store's schema too: two stores in one
database (two deployments, or test runs) never wait for each other's rules. On SQLite they are
``flock``s on files in ``<database>.locks/`` beside the database, dropped when the holder dies.
A replica takes the locks of a group of rules at once, on one connection, and runs the rules it
got; the others are left to whoever holds them.
"""

from __future__ import annotations

import fcntl
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import structlog
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection, Engine

log = structlog.get_logger(__name__)


class RuleLock(Protocol):
    """Held while one worker evaluates one rule (or a group of them)."""

    def release(self) -> None:
        """Let other workers evaluate the rule."""


@dataclass(frozen=True)
class HeldLocks:
    """What ``try_lock_many`` got: the names it holds, and how to let them go."""

    held: frozenset[str]
    lock: RuleLock

    def release(self) -> None:
        """Let other workers take every name held."""
        self.lock.release()


class _AdvisoryLocks:
    """Advisory locks on one connection: closing it ends the session, and the locks with it."""

    def __init__(self, connection: Connection, keys: list[int]) -> None:
        self._connection = connection
        self._keys = keys

    def release(self) -> None:
        try:
            for key in self._keys:
                self._connection.execute(select(func.pg_advisory_unlock(key)))
        except SQLAlchemyError as err:  # a broken connection: closing it ends the session and the locks
            log.warning("store.unlock_failed", error=str(err).splitlines()[0],
                        detail="the locks end with the connection, closed now")
        finally:
            self._connection.close()


class _FileLocks:
    """Exclusive ``flock``s on files beside the SQLite database."""

    def __init__(self, handles: list[IO[bytes]]) -> None:
        self._handles = handles

    def release(self) -> None:
        for handle in self._handles:
            try:
                fcntl.flock(handle, fcntl.LOCK_UN)
            finally:
                handle.close()


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key per name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Locks:
    """The store's locks; any string names one (a rule, a notification route)."""

    def __init__(self, engine: Engine) -> None:
        postgres = engine.dialect.name == "postgresql"
        # A lock holds its connection for a whole run: never take those from the shared pool,
        # which commits need (many rules running at once would exhaust it).
        self._engine = create_engine(engine.url, poolclass=NullPool) if postgres else None
        database = engine.url.database
        # An in-memory SQLite store has one process by construction: nothing to lock.
        self._directory = None if postgres or not database or database == ":memory:" else Path(
            f"{database}.locks")

    def close(self) -> None:
        """Close the lock engine (held locks end with their connections)."""
        if self._engine is not None:
            self._engine.dispose()

    def try_lock(self, name: str) -> RuleLock | None:
        """The named lock, or None when another worker holds it."""
        locks = self.try_lock_many([name])
        if name in locks.held:
            return locks
        locks.release()
        return None

    def try_lock_many(self, names: Sequence[str]) -> HeldLocks:
        """As many of the names' locks as are free now, on one connection (PostgreSQL)."""
        if self._engine is None:
            return self._file_locks(names)
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        held: dict[str, int] = {}
        try:
            schema = connection.scalar(select(func.current_schema()))
            for name in names:
                key = lock_key(f"{schema}/{name}")
                if connection.scalar(select(func.pg_try_advisory_lock(key))):
                    held[name] = key
        except BaseException:
            connection.close()  # the session's locks end with it
            raise
        return HeldLocks(frozenset(held), _AdvisoryLocks(connection, list(held.values())))

    def _file_locks(self, names: Sequence[str]) -> HeldLocks:
        if self._directory is None:
            return HeldLocks(frozenset(names), _FileLocks([]))
        self._directory.mkdir(exist_ok=True)
        held: dict[str, IO[bytes]] = {}
        try:
            for name in names:
                handle = (self._directory / f"{lock_key(name) & 0xFFFFFFFFFFFFFFFF:016x}").open("a+b")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                held[name] = handle
        except BaseException:
            _FileLocks(list(held.values())).release()
            raise
        return HeldLocks(frozenset(held), _FileLocks(list(held.values())))
