"""Signed ledger checkpoints: the chain's head at one record, signed, stored and listed.

The store never holds the signing key: the caller (``checker.evidence.notary``) signs the
payload this module writes. The payload is the exact JSON that was signed, so a checkpoint
can be checked from its row, from a witness file line or from a webhook body alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select

from checker.store.schema import evaluations, ledger_checkpoints

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

PAYLOAD_FORMAT = "betrace-ledger-checkpoint/1"
RETENTION = "retention"  # the kind of a checkpoint that summarises the records it let prune


@dataclass(frozen=True)
class Head:
    """The last chained record: its id, its hash, and how many records the chain holds up to it."""

    last_record: int
    head: str
    records: int


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint as signed: its payload (the signed bytes, as text) and the signature."""

    payload: str
    signature: str

    @cached_property
    def fields(self) -> dict[str, Any]:
        """The payload's content, parsed once: every other property reads it."""
        parsed: dict[str, Any] = json.loads(self.payload)
        return parsed

    @property
    def last_record(self) -> int:
        """The record whose chain hash was signed."""
        return int(self.fields["last_record"])

    @property
    def head(self) -> str:
        """The chain hash at ``last_record``."""
        return str(self.fields["head"])

    @property
    def signed_at(self) -> datetime:
        """When it was signed (UTC)."""
        return datetime.fromisoformat(self.fields["signed_at"])

    def to_json(self) -> dict[str, str]:
        """One witness line or webhook body."""
        return {"payload": self.payload, "signature": self.signature}

    @classmethod
    def from_json(cls, data: object) -> SignedCheckpoint:
        """What ``to_json`` gave, from a witness file.

        :raises ValueError: when ``data`` is not a checkpoint.
        """
        if not (isinstance(data, dict) and isinstance(data.get("payload"), str)
                and isinstance(data.get("signature"), str)):
            raise ValueError('not a signed checkpoint: expected {"payload": ..., "signature": ...}')  # noqa: TRY004
        checkpoint = cls(data["payload"], data["signature"])
        try:
            fields = checkpoint.fields
            int(fields["last_record"]), str(fields["head"]), datetime.fromisoformat(fields["signed_at"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"not a signed checkpoint payload: {err}") from None
        return checkpoint


def payload(head: Head, *, signed_at: datetime, kind: str, key_id: str,
            summary: dict[str, Any] | None = None) -> str:
    """The canonical JSON a checkpoint signs."""
    fields: dict[str, Any] = {"format": PAYLOAD_FORMAT, "signed_at": signed_at.isoformat(), "kind": kind,
                              "last_record": head.last_record, "records": head.records, "head": head.head,
                              "key_id": key_id}
    if summary is not None:
        fields["summary"] = summary
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def current_head(connection: Connection, start: Start | None) -> Head | None:
    """The chain's head now, counted on from ``start``; None before the first record is chained.

    One statement: the count is of the records up to the head read, whatever is appended meanwhile.
    """
    chained = evaluations.c.hash.is_not(None)
    inner = evaluations.alias("upto")
    upto = (select(func.count()).select_from(inner)
            .where(inner.c.hash.is_not(None), inner.c.id <= evaluations.c.id).scalar_subquery())
    last = connection.execute(select(evaluations.c.id, evaluations.c.hash, upto.label("records"))
                              .where(chained).order_by(evaluations.c.id.desc()).limit(1)).first()
    if last is None:
        return None
    return Head(last.id, last.hash, last.records + (start.records if start is not None else 0))


@dataclass(frozen=True)
class Start:
    """Where the chain starts after retention pruned its beginning: a retention checkpoint's payload."""

    last_record: int  # the last pruned record
    head: str  # its chain hash: the first kept record's prev_hash
    records: int  # how many records the chain held through it
    origin: str | None  # the hash of the chain's very first record, which names the store

    @classmethod
    def of(cls, checkpoint: SignedCheckpoint) -> Start | None:
        """The start a checkpoint's signed payload describes; None unless it is a retention checkpoint."""
        fields = checkpoint.fields
        if fields.get("kind") != RETENTION:
            return None
        return cls(checkpoint.last_record, checkpoint.head, int(fields["records"]),
                   (fields.get("summary") or {}).get("origin"))


def stored_start(connection: Connection) -> Start | None:
    """The newest stored retention checkpoint's start, its signature unchecked (``attest`` checks it)."""
    rows = connection.execute(select(ledger_checkpoints.c.payload, ledger_checkpoints.c.signature)
                              .where(ledger_checkpoints.c.kind == RETENTION)
                              .order_by(ledger_checkpoints.c.last_record.desc()))
    starts = (Start.of(SignedCheckpoint(row.payload, row.signature)) for row in rows)
    return next((start for start in starts if start is not None), None)


def latest(connection: Connection, key_id: str) -> SignedCheckpoint | None:
    """The checkpoint of ``key_id`` that reaches furthest along the chain (a retention one reaches back)."""
    table = ledger_checkpoints
    row = connection.execute(select(table.c.payload, table.c.signature).where(table.c.key_id == key_id)
                             .order_by(table.c.last_record.desc(), table.c.id.desc()).limit(1)).first()
    return SignedCheckpoint(row.payload, row.signature) if row is not None else None


def add(connection: Connection, checkpoint: SignedCheckpoint) -> None:
    """Store a checkpoint, with its payload's fields repeated in columns for queries."""
    fields = checkpoint.fields
    connection.execute(insert(ledger_checkpoints).values(
        signed_at=checkpoint.signed_at, kind=fields["kind"], last_record=checkpoint.last_record,
        records=fields["records"], head=checkpoint.head, key_id=fields["key_id"],
        payload=checkpoint.payload, signature=checkpoint.signature, summary=fields.get("summary")))


def stored(engine: Engine) -> list[SignedCheckpoint]:
    """Every stored checkpoint, oldest first."""
    table = ledger_checkpoints
    query = select(table.c.payload, table.c.signature).order_by(table.c.id)
    with engine.connect() as connection:
        return [SignedCheckpoint(row.payload, row.signature) for row in connection.execute(query)]


def covering(engine: Engine, start: datetime, end: datetime) -> list[SignedCheckpoint]:
    """The checkpoints that vouch for a period's records: those signed in it, and the first after it."""
    table = ledger_checkpoints
    query = select(table.c.payload, table.c.signature).order_by(table.c.signed_at, table.c.id)
    with engine.connect() as connection:
        inside = connection.execute(query.where(table.c.signed_at >= start, table.c.signed_at < end)).all()
        after = connection.execute(query.where(table.c.signed_at >= end).limit(1)).all()
    return [SignedCheckpoint(row.payload, row.signature) for row in [*inside, *after]]

