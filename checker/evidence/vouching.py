"""What vouches for a report's figures: the ledger's verdict and the signed checkpoints over the period.

With the public half of ``evidence.signing_key`` (a report signed with it must not certify what
the key would refuse), every checkpoint is checked and only those that hold are listed, and the
chain starts where a checked retention checkpoint says; without a key, the stored ones are listed
as stored, and the report says they were not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checker.evidence.attest import attest
from checker.store import ledger
from checker.store.ledger_checkpoints import covering, stored_start
from checker.store.retention import first_hash

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from checker.store import Store

CHECKPOINT_FIELDS = ("signed_at", "kind", "last_record", "records", "head", "key_id")


@dataclass(frozen=True)
class Vouching:
    """The ledger's verdict, the checkpoints covering the period, and whether they were checked."""

    verdict: ledger.Verdict
    checkpoints: list[dict[str, Any]]
    problems: list[str]
    checked: bool
    origin: str | None  # the hash of the chain's first record ever: it names the store


def vouching(store: Store, start: datetime, end: datetime, keys: Sequence[Ed25519PublicKey]) -> Vouching:
    """Verify the ledger (with ``keys``, its checkpoints too) and list the checkpoints over [start, end)."""
    listed = covering(store.engine, start, end)
    problems: list[str] = []
    if keys:
        found = attest(store.engine, keys)
        verdict, problems = found.chain, found.problems
        holding = {c.payload for c in found.holding}
        listed = [c for c in listed if c.payload in holding]
    else:
        verdict = ledger.verify(store.engine)
    with store.engine.connect() as connection:
        retained = stored_start(connection)
        origin = retained.origin if retained is not None else first_hash(connection)
    return Vouching(verdict, [{name: c.fields[name] for name in CHECKPOINT_FIELDS} for c in listed],
                    problems, bool(keys), origin)

