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
# Exactly the trailer ``sign_report`` writes: anything else (a comment closed early, extra keys) is
# content the signature does not cover, so it is not a signed report.
_HTML_TRAILER = re.compile(r'<!-- betrace-signature \{"key_id": "([0-9a-f]{16})", '
                           r'"signature": "([A-Za-z0-9+/]{86}==)"\} -->\n\Z')


def sign_report(text: str, key: Ed25519PrivateKey, *, oscal: bool) -> str:
    """``text`` (an HTML page, or an OSCAL JSON document) with its signature inside."""
    key_id = signing.key_id(key.public_key())
    if not oscal:
        body = text if text.endswith("\n") else text + "\n"
        signature = signing.sign(key, body.encode())
        return body + f"<!-- betrace-signature {json.dumps({'key_id': key_id, 'signature': signature})} -->\n"
    from checker.evidence.oscal import NS  # noqa: PLC0415  (only with the oscal extra)

    document = _strict_json(text)
    signature = signing.sign(key, _canonical(document))
    metadata = next(iter(document.values()))["metadata"]
    metadata.setdefault("props", []).append({"name": PROP, "ns": NS, "value": f"{key_id}:{signature}"})
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def check_report(text: str, key: Ed25519PublicKey) -> str | None:
    """Why the report's signature does not hold (or is missing); None when it holds."""
    trailer = _HTML_TRAILER.search(text)
    if trailer is not None:
        body, key_id, signed = text[:trailer.start()], trailer.group(1), trailer.group(2)
        if not body.endswith("\n"):
            return "the signature trailer does not start a line of its own"
    else:
        try:
            document = _strict_json(text)
            metadata = next(iter(document.values()))["metadata"]
            props = metadata.get("props", [])
            mine = [p for p in props if p.get("name") == PROP]
        except (ValueError, StopIteration, KeyError, TypeError, AttributeError) as err:
            return f"neither a signed HTML report nor an OSCAL document ({err})"
        if len(mine) != 1 or not isinstance(mine[0].get("value"), str):
            return "the report carries no signature" if not mine else "the report carries several signatures"
        props.remove(mine[0])
        if not props:
            del metadata["props"]
        key_id, _, signed = mine[0]["value"].partition(":")
        body = _canonical(document).decode()
    if key_id != signing.key_id(key):
        return f"signed by key {key_id}, not by {signing.key_id(key)}"
    if not signing.verifies(key, body.encode(), signed):
        return "the signature does not hold: the report was edited after it was signed"
    return None


def _strict_json(text: str) -> Any:
    """JSON with no duplicate keys and no NaN or Infinity.

    Readers disagree on those, so a signature over one reading must not be shown with another.
    """
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        if len(keys) != len(set(keys)):
            raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

