"""Keep credentials out of anything shown: URLs with a password in them."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:]*)(?::[^/@]*)?@")


def mask_url(url: str) -> str:
    """``postgresql://bob:hunter2@db/x`` → ``postgresql://bob:***@db/x``; other URLs unchanged."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
