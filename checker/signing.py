"""Ed25519 keys and signatures: evidence that says who vouches for it, not only in what order.

A hash chain proves order; whoever can write the database can rewrite it whole. A signature
made with a key the database never holds (``evidence.signing_key``) cannot be rewritten with
it. Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public), as ``openssl genpkey
-algorithm ed25519`` writes them, so they can be made, kept and checked without the checker.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from checker.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path

KEYGEN_HINT = "make a key pair with: betrace evidence keygen --out FILE"


def generate(path: Path) -> Path:
    """Write a new private key to ``path`` (owner-only) and its public key beside it; returns the latter.

    :raises UsageError: when either file exists: a key that signed evidence is never overwritten.
    """
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise UsageError(f"{existing} exists", hint="a key that signed evidence must not be replaced; "
                             "choose another --out, or move the old pair away first")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(private_pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return public_path


def load_private(path: Path) -> Ed25519PrivateKey:
    """The signing key in ``path``.

    :raises UsageError: naming the file, when it cannot be read or is not an Ed25519 private key.
    """
    key = _load(path, private=True)
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key", hint=KEYGEN_HINT)
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The public key in ``path``; a private key file gives its public half.

    :raises UsageError: naming the file, when it cannot be read or is not an Ed25519 key.
    """
    try:
        key = _load(path, private=False)
    except UsageError:
        private = _load(path, private=True)
        if not isinstance(private, Ed25519PrivateKey):
            raise
        return private.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key", hint=KEYGEN_HINT)
    return key


def _load(path: Path, *, private: bool) -> object:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read key file {path}: {err.strerror}", hint=KEYGEN_HINT) from None
    try:
        if private:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        kind = "private" if private else "public"
        raise UsageError(f"{path} is not a PEM {kind} key (or is encrypted)", hint=KEYGEN_HINT) from None


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 over its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """The signature of ``data``, base64."""
    return base64.b64encode(key.sign(data)).decode()


def verifies(key: Ed25519PublicKey, data: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is ``key``'s over ``data``; a malformed one does not."""
    try:
        key.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True
