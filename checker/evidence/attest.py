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
from checker.store.ledger_checkpoints import SignedCheckpoint, Start, stored

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from sqlalchemy import Engine


@dataclass(frozen=True)
class Attestation:
    """The chain's verdict, and what the checkpoints say of it."""

    chain: ledger.Verdict
    checkpoints: int  # stored and witnessed, each counted once
    holding: list[SignedCheckpoint] = field(default_factory=list)  # those whose signature and head hold
    problems: list[str] = field(default_factory=list)

    @property
    def good(self) -> int:
        """How many checkpoints hold."""
        return len(self.holding)

    @property
    def last_good(self) -> SignedCheckpoint | None:
        """The checkpoint that holds furthest along the chain."""
        return self.holding[-1] if self.holding else None

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


def attest(engine: Engine, keys: Sequence[Ed25519PublicKey],
           extra: Sequence[SignedCheckpoint] = ()) -> Attestation:
    """Verify the chain and every checkpoint (stored, and ``extra`` from witnesses) with ``keys``.

    Several keys, so that a rotated key's checkpoints still verify. The chain starts where the
    newest retention checkpoint whose signature holds says, never where an unchecked row says:
    a prefix deleted under a forged or relabelled retention row then breaks the chain.
    """
    by_id = {signing.key_id(key): key for key in keys}
    from_store = stored(engine)
    kept = {c.payload for c in from_store}
    every = list({c.payload: c for c in [*from_store, *extra]}.values())
    signed = {c.payload for c in every if _signed(c, by_id)}
    starts = [s for c in every if c.payload in signed and (s := Start.of(c)) is not None]
    start = max(starts, key=lambda s: s.last_record, default=None)
    chain = ledger.verify(engine, marks={c.last_record for c in every}, start=start)
    problems = [f"checkpoint signed {c.signed_at.isoformat()} (record {c.last_record}) is in a witness "
                "but not in the store: checkpoints were deleted" for c in extra if c.payload not in kept]
    good: list[SignedCheckpoint] = []
    for checkpoint in sorted(every, key=lambda c: c.last_record):
        problem = _problem(checkpoint, checkpoint.payload in signed, by_id, chain, start)
        if problem is None:
            good.append(checkpoint)
        else:
            problems.append(problem)
    return Attestation(chain, len(every), good, problems)


def _signed(checkpoint: SignedCheckpoint, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    key = keys.get(str(checkpoint.fields.get("key_id")))
    return key is not None and signing.verifies(key, checkpoint.payload.encode(), checkpoint.signature)


def _problem(checkpoint: SignedCheckpoint, signed: bool, keys: Mapping[str, Ed25519PublicKey],
             chain: ledger.Verdict, start: Start | None) -> str | None:
    name = f"checkpoint signed {checkpoint.signed_at.isoformat()} at record {checkpoint.last_record}"
    if not signed:
        return f"{name} has no valid signature by key {', '.join(keys)}: forged, altered or another key's"
    if start is not None and checkpoint.last_record <= start.last_record:
        if checkpoint.last_record == start.last_record and checkpoint.head != start.head:
            return f"{name} signed head {checkpoint.head}, but the retention start there is {start.head}"
        return None  # its records were pruned; the retention checkpoint's signature vouches for them
    if checkpoint.last_record not in chain.marked:
        if not chain.ok and (chain.broken_at or 0) <= checkpoint.last_record:
            return f"{name} lies after the break in the chain: not checked"
        return f"{name} vouches for a record the ledger no longer has: records were deleted"
    if chain.marked[checkpoint.last_record] != checkpoint.head:
        return (f"the ledger was rewritten at or before record {checkpoint.last_record}: {name} signed "
                f"head {checkpoint.head}, the chain now gives {chain.marked[checkpoint.last_record]}")
    if chain.marked_records.get(checkpoint.last_record) != int(checkpoint.fields["records"]):
        return (f"{name} signed {checkpoint.fields['records']} records up to it, the chain now counts "
                f"{chain.marked_records.get(checkpoint.last_record)}: records were deleted or inserted")
    return None
