"""Local notification receivers over real HTTP: a Slack look-alike and a signed-webhook sink.

The Slack receiver serves an incoming-webhook path and the Web API's ``chat.postMessage``
(with ``thread_ts``: a reply) and ``chat.update`` (slack-sdk is pointed at it with ``base_url``),
keeps every message posted by channel ID and a fresh ``ts``, and checks every message against
Slack's Block Kit limits, answering 400 ``invalid_blocks`` as Slack does. The webhook sink verifies
``X-Betrace-Signature`` exactly as the README tells receivers to. ``/api/v2/alerts`` stands in for
Alertmanager's API (a JSON list is accepted) and ``/sink`` for what a real Alertmanager notifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

WEBHOOK_PATH = "/services/T0001/B0001/s3cr3tw3bh00kp4th"
BOT_TOKEN = "xoxb-test-token-0123456789"
CHANNEL_ID = "C0001"  # what every channel name resolves to
ALERTS_PATH, SINK_PATH = "/api/v2/alerts", "/sink"
MAX_BLOCKS, HEADER_LIMIT, TEXT_LIMIT, FIELDS_LIMIT, FIELD_LIMIT = 50, 150, 3000, 10, 2000


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The README's verification: recompute the HMAC over "<t>." + body, compare, check age."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = parts["t"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(timestamp)) <= tolerance


def block_problems(blocks: list[dict[str, Any]]) -> list[str]:
    """Where a message breaks Slack's documented limits."""
    problems = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks > {MAX_BLOCKS}")
    for block in blocks:
        text = block.get("text", {}).get("text", "")
        if block["type"] == "header" and (len(text) > HEADER_LIMIT or block["text"]["type"] != "plain_text"):
            problems.append("header too long or not plain_text")
        if block["type"] == "section":
            if len(text) > TEXT_LIMIT:
                problems.append("section text too long")
            fields = block.get("fields", [])
            if len(fields) > FIELDS_LIMIT or any(len(f["text"]) > FIELD_LIMIT for f in fields):
                problems.append("section fields over the limit")
        if block["type"] == "context" and any(len(e.get("text", "")) > TEXT_LIMIT for e in block["elements"]):
            problems.append("context text too long")
    return problems


@dataclass
class Received:
    """One request the receiver accepted or refused."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> dict[str, Any]:
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(urllib.parse.parse_qsl(self.body.decode()))
            return {**form, "blocks": json.loads(form.get("blocks", "[]"))}
        return json.loads(self.body)


@dataclass
class Posted:
    """A message on the bot API, as it reads now (``chat.update`` rewrites it)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: int = 0


@dataclass
class Receiver:
    """``with Receiver(secret=...) as r``; ``r.fail_with(503, times=3)``; ``r.received``."""

    secret: str = "whsec-test-secret"
    received: list[Received] = field(default_factory=list)
    _failures: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    _delay: float = 0.0
    _server: ThreadingHTTPServer | None = None
    _port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    messages: dict[str, Posted] = field(default_factory=dict)  # by ts
    _next_ts: int = 1795729000_000100

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def fail_with(self, status: int, times: int = 1, retry_after: str | None = None,
                  text: str | None = None) -> None:
        """The next ``times`` requests answer ``status``; ``text``: this plain-text body on every path."""
        with self._lock:
            self._failures.extend([(status, retry_after, text)] * times)

    def slow(self, seconds: float) -> None:
        self._delay = seconds

    def accepted(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300 and path in {None, r.path}]

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver._delay:
                    time.sleep(receiver._delay)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, extra = receiver._answer(self.path, headers, body)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                kind = "text/plain" if isinstance(payload, str) else "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True  # a deliberately slow answer never holds up stop()
            block_on_close = False

        self._server = Server(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused) until ``start`` again, on the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is None:  # an injected failure changes nothing: no message is posted or updated
            status, payload, extra = self._route(path, headers, body)
        else:
            status, payload = failure[0], failure[2] or "injected failure"
            extra = {"Retry-After": failure[1]} if failure[1] else {}
            if path.startswith("/api/") and failure[2] is None:
                payload = {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
        with self._lock:
            self.received.append(Received(path, headers, body, status))
        return status, payload, extra

    def _route(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        if path == WEBHOOK_PATH:
            message = json.loads(body)
            problems = block_problems(message.get("blocks", []))
            if not message.get("text") or problems:
                return 400, "invalid_blocks", {}
            return 200, "ok", {}
        if path in {"/api/chat.postMessage", "/api/chat.update"}:
            if headers.get("authorization") != f"Bearer {BOT_TOKEN}":
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            message = Received(path, headers, body, 200).json
            if not message.get("channel") or block_problems(message.get("blocks", [])):
                return 200, {"ok": False, "error": "invalid_blocks"}, {}
            with self._lock:
                return 200, self._api(path, message), {}
        if path.endswith(ALERTS_PATH):
            return (200, "", {}) if isinstance(json.loads(body), list) else (400, "not a list", {})
        if path == "/hook":
            signature = headers.get("x-betrace-signature", "")
            if not signature or not verify_signature(self.secret, signature, body):
                return 401, "bad signature", {}
            return 200, "accepted", {}
        if path in {"/witness", SINK_PATH}:  # evidence.witness_url, Alertmanager's webhook: any JSON is kept
            json.loads(body)
            return 200, "kept", {}
        return 404, "not found", {}

    def _api(self, path: str, message: dict[str, Any]) -> dict[str, Any]:
        """chat.postMessage (a thread_ts must name a top-level message) or chat.update (by channel ID)."""
        if path == "/api/chat.update":
            if message["channel"] != CHANNEL_ID:
                return {"ok": False, "error": "channel_not_found"}
            posted = self.messages.get(str(message.get("ts")))
            if posted is None or posted.channel != message["channel"]:
                return {"ok": False, "error": "message_not_found"}
            posted.text, posted.blocks = message.get("text", ""), message.get("blocks", [])
            posted.updates += 1
            return {"ok": True, "channel": CHANNEL_ID, "ts": posted.ts, "text": posted.text}
        thread = message.get("thread_ts")
        if thread is not None:
            parent = self.messages.get(str(thread))
            if parent is None or parent.thread_ts is not None or message["channel"] != CHANNEL_ID:
                return {"ok": False, "error": "thread_not_found"}
        self._next_ts += 1
        ts = f"{self._next_ts // 1_000_000}.{self._next_ts % 1_000_000:06d}"
        self.messages[ts] = Posted(CHANNEL_ID, ts, message.get("text", ""), message.get("blocks", []),
                                   thread)
        return {"ok": True, "channel": CHANNEL_ID, "ts": ts}
