"""A report that carries its own signature: the HTML page and the OSCAL document, signed whole.

An auditor holding the report and the public key can tell it was written by the checker that
holds ``evidence.signing_key`` and not edited since, without the database. The signature covers:

- HTML: every byte before its last line, ``<!-- betrace-signature {...} -->``;
- OSCAL (JSON): the document without its ``report-signature`` prop, as sorted compact JSON, so
  that reformatting the file (indentation, key order) does not break it while any change of
  content does.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from checker import signing

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PROP = "report-signature"
_HTML_TRAILER = re.compile(r"\n?<!-- betrace-signature (\{.*\}) -->\n?\Z")


def sign_report(text: str, key: Ed25519PrivateKey, *, oscal: bool) -> str:
    """``text`` (an HTML page, or an OSCAL JSON document) with its signature inside."""
    key_id = signing.key_id(key.public_key())
    if not oscal:
        body = text if text.endswith("\n") else text + "\n"
        signature = signing.sign(key, body.encode())
        return body + f"<!-- betrace-signature {json.dumps({'key_id': key_id, 'signature': signature})} -->\n"
    from checker.evidence.oscal import NS  # noqa: PLC0415  (only with the oscal extra)

    document = json.loads(text)
    signature = signing.sign(key, _canonical(document))
    metadata = next(iter(document.values()))["metadata"]
    metadata.setdefault("props", []).append({"name": PROP, "ns": NS, "value": f"{key_id}:{signature}"})
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def check_report(text: str, key: Ed25519PublicKey) -> str | None:
    """Why the report's signature does not hold (or is missing); None when it holds."""
    trailer = _HTML_TRAILER.search(text)
    if trailer is not None:
        found = json.loads(trailer.group(1))
        body, signed = text[:trailer.start()] + "\n", found.get("signature", "")
        key_id = found.get("key_id")
    else:
        try:
            document = json.loads(text)
            metadata = next(iter(document.values()))["metadata"]
        except (ValueError, StopIteration, KeyError, TypeError, AttributeError):
            return "neither a signed HTML report nor an OSCAL document"
        props = metadata.get("props", [])
        mine = [p for p in props if p.get("name") == PROP]
        if not mine:
            return "the report carries no signature"
        props.remove(mine[-1])
        if not props:
            del metadata["props"]
        key_id, _, signed = str(mine[-1].get("value", "")).partition(":")
        body = _canonical(document).decode()
    if key_id != signing.key_id(key):
        return f"signed by key {key_id}, not by {signing.key_id(key)}"
    if not signing.verifies(key, body.encode(), signed):
        return "the signature does not hold: the report was edited after it was signed"
    return None


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

