"""The notary: signs the ledger head with ``evidence.signing_key`` and hands it to witnesses.

A checkpoint is stored in the same database as the chain it vouches for, which proves nothing
against whoever can rewrite that database; its copies in a witness file or at a webhook, kept
elsewhere, do. A witness that fails loses nothing: the checkpoint is stored, the failure is
logged, and every later checkpoint vouches for all the records before it.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import structlog

from checker import signing
from checker.store import ledger, retention
from checker.store.ledger_checkpoints import (
    RETENTION,
    Head,
    SignedCheckpoint,
    add,
    current_head,
    latest,
    payload,
    stored_start,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from checker.store import Store

log = structlog.get_logger(__name__)
WITNESS_TIMEOUT_SECONDS = 10.0


class Notary:
    """Signs checkpoints for one store with one key; ``seal`` then ``witness``."""

    def __init__(self, store: Store, key: Ed25519PrivateKey, *, witness_file: Path | None = None,
                 witness_url: str | None = None, retention: timedelta | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.key = key
        self.key_id = signing.key_id(key.public_key())
        self.witness_file = witness_file
        self.witness_url = witness_url
        self.retention = retention
        self.clock = clock

    def seal(self, kind: str, *, summary: dict[str, Any] | None = None) -> SignedCheckpoint | None:
        """Sign and store the head; None when the ledger is empty or this key already signed that head.

        Under the ledger's append lock, so the head cannot move between reading and signing it.
        """
        with self.store.engine.begin() as connection:
            ledger.lock(connection)
            head = current_head(connection, stored_start(connection))
            if head is None:
                return None
            last = latest(connection, self.key_id)
            if summary is None and last is not None and last.last_record == head.last_record:
                return None
            text = payload(head, signed_at=self.clock(), kind=kind, key_id=self.key_id, summary=summary)
            checkpoint = SignedCheckpoint(text, signing.sign(self.key, text.encode()))
            add(connection, checkpoint)
        log.info("evidence.checkpoint_signed", kind=kind, last_record=head.last_record,
                 records=head.records, head=head.head, key_id=self.key_id)
        return checkpoint

    def prune(self, cutoff: datetime) -> SignedCheckpoint | None:
        """Sign a summary of the oldest records started before ``cutoff``, then remove them.

        None when no record may go. The records a prune takes never change, so they are found
        and summarised before the ledger's append lock is taken; under it, the prefix is checked
        unchanged, the retention checkpoint signed and stored and the records deleted, in one
        transaction. The chain goes on from the last removed record's hash, which the checkpoint
        signs, so verify still proves every record kept.
        """
        with self.store.engine.connect() as connection:
            found = retention.boundary(connection, cutoff)
            if found is None:
                return None
            start = stored_start(connection)
            origin = start.origin if start is not None else retention.first_hash(connection)
            summary = retention.summary(connection, found, origin)
        with self.store.engine.begin() as connection:
            ledger.lock(connection)
            if retention.boundary(connection, cutoff) != found or stored_start(connection) != start:
                return None  # another replica pruned meanwhile; the next period tries again
            head = Head(found.through, found.head, found.records + (start.records if start else 0))
            text = payload(head, signed_at=self.clock(), kind=RETENTION, key_id=self.key_id, summary=summary)
            checkpoint = SignedCheckpoint(text, signing.sign(self.key, text.encode()))
            add(connection, checkpoint)
            undelivered = retention.remove(connection, found)
        log.info("evidence.pruned", through_record=found.through, records=found.records,
                 cutoff=cutoff.isoformat(), head=found.head, key_id=self.key_id)
        if undelivered:
            log.warning("evidence.pruned_undelivered", notifications=undelivered,
                        detail="notifications still waiting in the outbox went with their records")
        return checkpoint

    async def witness(self, checkpoint: SignedCheckpoint) -> list[str]:
        """Hand the checkpoint to every witness; what failed, as messages (also logged)."""
        problems = []
        if self.witness_file is not None:
            try:
                await asyncio.to_thread(_append_line, self.witness_file, checkpoint)
            except OSError as err:
                problems.append(f"witness_file {self.witness_file}: {err.strerror or err}")
        if self.witness_url is not None:
            problem = await _post(self.witness_url, checkpoint)
            if problem is not None:
                problems.append(problem)
        for problem in problems:
            log.error("evidence.witness_failed", problem=problem, last_record=checkpoint.last_record,
                      detail="the checkpoint is stored; the next one vouches for these records too")
        return problems

    async def checkpoint(self, kind: str) -> SignedCheckpoint | None:
        """``seal`` (off the event loop), then ``witness``; then prune past ``retention``, if set."""
        sealed = await asyncio.to_thread(self.seal, kind)
        if sealed is not None:
            await self.witness(sealed)
        if self.retention is not None and kind == "periodic":  # never at shutdown: it may take long
            pruned = await asyncio.to_thread(self.prune, self.clock() - self.retention)
            if pruned is not None:
                await self.witness(pruned)
        return sealed


def _append_line(path: Path, checkpoint: SignedCheckpoint) -> None:
    """One JSON line, flushed to disk before the checkpoint counts as witnessed."""
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(checkpoint.to_json(), sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())


async def _post(url: str, checkpoint: SignedCheckpoint) -> str | None:
    """POST the checkpoint as JSON; the problem, naming the host (a webhook URL is a secret), or None."""
    where = f"witness_url (host {urlsplit(url).hostname})"
    try:
        async with httpx.AsyncClient(timeout=WITNESS_TIMEOUT_SECONDS) as client:
            answer = await client.post(url, json=checkpoint.to_json())
    except httpx.HTTPError as err:
        return f"{where}: {type(err).__name__}"
    if answer.is_success:
        return None
    return f"{where}: HTTP {answer.status_code}"
