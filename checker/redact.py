"""Keep credentials out of anything shown, logged or stored: one path for every secret.

``mask_url`` shows a configured URL without its password or secret query values. It parses
the URL (SQLAlchemy's ``make_url`` for a store, ``urllib.parse`` for HTTP) rather than
matching a pattern, because a password may hold ``/``, ``?``, ``#`` or ``:``.

``Redactor`` removes known secrets from text that came from outside, such as a proxy's 401
page echoing the bearer token. ``KNOWN`` is the process-wide one: the loaded config registers
every secret in it, and the log and the store pass all text through it as a last line of
defence, whatever a component forgot to redact at the source.
"""

from __future__ import annotations

import base64
import html
import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlencode, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterable

MASK = "***"
REDACTED = "<redacted>"
# Shorter strings are not redacted: removing every "ab" from a log would destroy it.
MIN_SECRET = 4
# A query parameter or header whose name contains one of these carries a secret.
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "sig", "auth", "cred", "cookie", "session")
_HTTP = frozenset({"http", "https"})


def secret_name(name: str) -> bool:
    """Whether a query parameter or header called ``name`` carries a secret (``access_token``...)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def mask_url(url: str) -> str:
    """``postgresql://bob:hun/ter2@db/x?password=p`` → ``postgresql://bob:***@db/x?password=***``.

    A URL without a password or secret query value is returned as written.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    try:
        return _mask_http(url) if scheme.lower() in _HTTP else _mask_store(url)
    except (ValueError, ArgumentError):
        return _mask_unparsed(scheme, rest)


def _mask_http(url: str) -> str:
    parts = urlsplit(url)
    _check_parse(url, parts.port, parts.path)
    userinfo, _at, host = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    masked = parts._replace(netloc=f"{user}:{MASK}@{host}" if colon else parts.netloc,
                            query=_mask_query(parts.query), fragment=_mask_query(parts.fragment))
    return masked.geturl() if masked != parts else url


def _mask_store(url: str) -> str:
    parsed = make_url(url)
    _check_parse(url, parsed.port, parsed.host or "")
    if parsed.password is None and not any(secret_name(name) for name in parsed.query):
        return url
    query = urlencode({name: MASK if secret_name(name) else value for name, value in parsed.query.items()},
                      doseq=True, safe="*")
    base = parsed.set(query={}).render_as_string(hide_password=True)
    return f"{base}?{query}" if query else base


def _check_parse(url: str, port: int | None, after_host: str) -> None:
    """Refuse a parse that a password's unencoded ``/``, ``?`` or ``@`` has misled.

    Reading the port raises on ``https://bob:hun/ter2@host``; ``https://bob:80/ter2@host``
    parses as host ``bob`` and path ``/ter2@host``; ``bob:p@ss@db`` has host ``ss@db``, and
    ``bob:p@s?s@db`` host ``s`` and query ``s@db``. Then everything before the last ``@`` is
    hidden: over-masking a rare URL with an ``@`` in its query is the safe mistake.
    """
    del port  # computing it (a property) was the check
    if "@" in after_host or url.count("@") > 1:
        raise ValueError("more than one '@': a password that is not percent-encoded")


def _mask_unparsed(scheme: str, rest: str) -> str:
    """Everything before the last ``@`` may be a password: hidden whole."""
    _userinfo, at, tail = rest.rpartition("@")
    head, question, query = tail.partition("?")
    return f"{scheme}://{MASK + '@' if at else ''}{head}{question}{_mask_query(query)}"


def _mask_query(query: str) -> str:
    """``token=abc&trace={trace_id}`` → ``token=***&trace={trace_id}``, the rest as written."""
    return "&".join(_mask_pair(pair) for pair in query.split("&")) if query else query


def _mask_pair(pair: str) -> str:
    name, equals, _value = pair.partition("=")
    return f"{name}={MASK}" if equals and secret_name(unquote_plus(name)) else pair


def url_secrets(url: str | None) -> list[str]:
    """The secrets inside a URL: its password and the values of query parameters named like secrets.

    When the parse cannot be trusted (an unencoded ``@`` or ``/`` in the password),
    everything between the user name and the last ``@`` is the password.
    """
    if not url or "://" not in url:
        return []
    scheme, _sep, rest = url.partition("://")
    try:
        passwords, pairs = _credentials(url, scheme)
    except (ValueError, ArgumentError):
        userinfo, _at, tail = rest.rpartition("@")
        passwords, pairs = [userinfo.partition(":")[2]], parse_qsl(tail.partition("?")[2])
    found = [*passwords, *(value for name, value in pairs if secret_name(name))]
    return [secret for secret in found if secret]


def _credentials(url: str, scheme: str) -> tuple[list[str | None], list[tuple[str, str]]]:
    """The password(s) and query pairs of a URL whose parse can be trusted."""
    if scheme.lower() in _HTTP:
        parts = urlsplit(url)
        _check_parse(url, parts.port, parts.path)
        # httpx sends a URL's user:password as Basic auth, which a refusal may echo.
        basic = ([basic_auth_token(unquote(parts.username or ""), unquote(parts.password)),
                  basic_auth_token(parts.username or "", parts.password)] if parts.password else [])
        return [parts.password, unquote(parts.password or ""), *basic], parse_qsl(
            f"{parts.query}&{parts.fragment}")
    parsed = make_url(url)
    _check_parse(url, parsed.port, parsed.host or "")
    # SQLAlchemy decodes the password; a driver's message may quote it as written.
    written = url.partition("://")[2].partition("@")[0].partition(":")[2] if parsed.password else None
    return [parsed.password, written], [(name, value) for name, values in parsed.query.items()
                                        for value in ((values,) if isinstance(values, str) else values)]


def header_secrets(headers: dict[str, str]) -> list[str]:
    """The values of headers named like secrets, and their credentials alone (``Bearer <token>``)."""
    values = [value for name, value in headers.items() if secret_name(name)]
    return [*values, *(value.split()[-1] for value in values if value.split())]


def url_parts(url: str) -> list[str]:
    """A URL that is itself a secret (a Slack webhook): the URL and what a receiver may echo alone.

    A 404 page says ``Cannot POST /services/T0/B0/xyz``: the path, the query and the last
    path segment are each removed as well as the whole URL.
    """
    parts = urlsplit(url)
    return [url, parts.path, parts.query, parts.path.rsplit("/", 1)[-1], *url_secrets(url)]


def basic_auth_token(username: str, password: str) -> str:
    """The base64 ``user:password`` an ``Authorization: Basic`` header carries (and a proxy may echo)."""
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _forms(secret: str) -> set[str]:
    """A secret as an answer may echo it: raw, URL-encoded, JSON-escaped or HTML-escaped."""
    return {secret, unquote(secret), quote(secret, safe=""), quote(secret), quote_plus(secret),
            json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
            secret.replace("/", "\\/"), html.escape(secret)}


class Redactor:
    """Removes every configured secret from text that came from outside (an echoed answer).

    Built once per client from the secrets it sends; ``redact`` is applied to any text
    from a remote party before it is logged, stored or shown.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        """Redact these too (the config's secrets, registered when it is loaded)."""
        forms = set(self._secrets) | {form for secret in secrets if secret for form in _forms(secret)}
        # Longest first, so that a secret containing another is removed whole.
        self._secrets = sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True)

    def redact(self, text: str, limit: int | None = None, *, cut_off: bool = False) -> str:
        """``text`` without any secret, cut to ``limit`` characters when given.

        ``cut_off``: the text is the start of a longer answer (a capped read), so a secret's
        beginning at its very end is removed too.
        """
        secrets = self._secrets
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if cut_off:
            text = _without_partial_tail(text, secrets)
        return text if limit is None or len(text) <= limit else text[:limit] + "…"


def _without_partial_tail(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        for size in range(len(secret) - 1, MIN_SECRET - 1, -1):
            if text.endswith(secret[:size]):
                return text[:-size] + REDACTED
    return text


KNOWN = Redactor(())
