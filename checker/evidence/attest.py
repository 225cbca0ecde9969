"""Check the ledger against its signed checkpoints: order from the chain, origin from the key.

A chain rewritten whole (every hash recomputed) verifies as a chain; it cannot carry a checkpoint
signed by the key, because a signature covers the head the chain had then. So every
checkpoint, from the store and from a witness kept elsewhere, must verify with the public key
and name a head the chain still has at that record. Records chained after the last good
checkpoint are vouched for by the chain alone: verify says how many, and since when.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from checker import signing
from checker.errors import UsageError
from checker.store import ledger
from checker.store.ledger_checkpoints import SignedCheckpoint, stored

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from sqlalchemy import Engine


@dataclass(frozen=True)
class Attestation:
    """The chain's verdict, and what the checkpoints say of it."""

    chain: ledger.Verdict
    checkpoints: int  # stored and witnessed, each counted once
    good: int  # those whose signature and head hold
    problems: list[str] = field(default_factory=list)
    last_good: SignedCheckpoint | None = None

    @property
    def ok(self) -> bool:
        """The chain is intact and every checkpoint holds."""
        return self.chain.ok and not self.problems

    @property
    def unsigned_records(self) -> int:
        """Records chained after the last good checkpoint: a rewrite of those could not be told."""
        if self.last_good is None:
            return self.chain.records
        return max(0, self.chain.records - int(self.last_good.fields["records"]))


def witnessed(path: Path) -> list[SignedCheckpoint]:
    """The checkpoints in a witness file (JSON lines).

    :raises UsageError: naming the file and line, when it cannot be read or a line is not one.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UsageError(f"cannot read witness file {path}: {err.strerror}") from None
    found = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            found.append(SignedCheckpoint.from_json(json.loads(line)))
        except ValueError as err:
            raise UsageError(f"{path}:{number}: {err}",
                             hint="a witness file holds the JSON lines evidence.witness_file wrote") from None
    return found


def attest(engine: Engine, key: Ed25519PublicKey, extra: Sequence[SignedCheckpoint] = ()) -> Attestation:
    """Verify the chain and every checkpoint (stored, and ``extra`` from witnesses) with ``key``."""
    from_store = stored(engine)
    kept = {c.payload for c in from_store}
    every = list({c.payload: c for c in [*from_store, *extra]}.values())
    chain = ledger.verify(engine, marks={c.last_record for c in every})
    problems = [f"checkpoint signed {c.signed_at.isoformat()} (record {c.last_record}) is in a witness "
                "but not in the store: checkpoints were deleted" for c in extra if c.payload not in kept]
    good: list[SignedCheckpoint] = []
    for checkpoint in sorted(every, key=lambda c: c.last_record):
        problem = _problem(checkpoint, key, chain)
        if problem is None:
            good.append(checkpoint)
        else:
            problems.append(problem)
    return Attestation(chain, len(every), len(good), problems, good[-1] if good else None)


def _problem(checkpoint: SignedCheckpoint, key: Ed25519PublicKey, chain: ledger.Verdict) -> str | None:
    name = f"checkpoint signed {checkpoint.signed_at.isoformat()} at record {checkpoint.last_record}"
    if not signing.verifies(key, checkpoint.payload.encode(), checkpoint.signature):
        return f"{name} has no valid signature by key {signing.key_id(key)}: forged or altered"
    if chain.pruned_through is not None and checkpoint.last_record <= chain.pruned_through:
        return None  # its records were pruned; the retention checkpoint's signature vouches for them
    if checkpoint.last_record not in chain.marked:
        if not chain.ok and (chain.broken_at or 0) <= checkpoint.last_record:
            return f"{name} lies after the break in the chain: not checked"
        return f"{name} vouches for a record the ledger no longer has: records were deleted"
    if chain.marked[checkpoint.last_record] != checkpoint.head:
        return (f"the ledger was rewritten at or before record {checkpoint.last_record}: {name} signed "
                f"head {checkpoint.head}, the chain now gives {chain.marked[checkpoint.last_record]}")
    return None
