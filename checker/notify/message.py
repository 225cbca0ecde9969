"""What a notification says: built from outbox rows, rendered for Slack and for webhooks.

One message covers one rule on one route: the rows of several windows are merged (a
catch-up, or the violations held back by ``realert``), listing the first few traces and the
total for people (Slack, the log), every violation for machines (webhooks, Alertmanager: see
``Route.lists_all``), which get them in parts of at most their route's ``max_batch``.
Slack's limits are kept here: at most 50 blocks, 150 characters in a header, 3000 in a
section, 10 fields of 2000.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from checker.engine import Violation
    from checker.store import SlackPost

Kind = Literal["violations", "resolved", "retracted", "test"]
MAX_BLOCKS, HEADER_LIMIT, SECTION_LIMIT, FIELD_LIMIT = 50, 150, 3000, 2000
SEVERITY_MARK = {"critical": ":red_circle:", "high": ":large_orange_circle:",
                 "medium": ":large_yellow_circle:", "low": ":large_blue_circle:", "info": ":white_circle:"}
PAYLOAD_VERSION = "1"


@dataclass(frozen=True)
class Payload:
    """An outbox row's content: enough to write the message without reading anything else.

    Made by the policy inside the commit transaction, read back by the dispatcher to merge
    rows into an ``Alert``. The JSON keys are those rows already in a store hold. The store,
    a layer below, reads three of them without this class: ``kind`` and ``backfill`` (which
    rows group together) and ``trace_ids`` (which traces still wait, for ``betrace violations``).
    """

    kind: Kind
    rule: dict[str, Any]
    window_start: datetime
    window_end: datetime
    violations: list[dict[str, Any]]  # the first ``max_listed``, or all of them (``listed_all``)
    total: int
    trace_ids: list[str]  # every one, listed or not
    backfill: bool = False  # written by ``betrace backfill --notify``: outside the live alert state
    listed_all: bool = False  # for a route that gets every violation: merging keeps them all

    @classmethod
    def of(cls, kind: Kind, rule: dict[str, Any], window: tuple[datetime, datetime],
           violations: Sequence[Violation], max_listed: int | None, *, backfill: bool,
           status: str = "confirmed", reasons: Mapping[str, str] | None = None) -> Payload:
        """The payload for ``violations`` (none for a resolved message) found in ``window``.

        ``max_listed`` None lists every violation: the route is read by a machine.

        Each listed violation carries its ``status`` (provisional, confirmed or retracted) and,
        when retracted, its ``retraction_reason``.
        """
        why = reasons or {}
        listed = [{**v.to_json(), "status": status,
                   **({"retraction_reason": why[v.trace_id]} if v.trace_id in why else {})}
                  for v in violations[:max_listed]]
        return cls(kind, rule, window[0], window[1], listed, len(violations),
                   [v.trace_id for v in violations], backfill, listed_all=max_listed is None)

    def to_json(self) -> dict[str, Any]:
        """What the outbox table stores."""
        return {"kind": self.kind, "rule": self.rule,
                "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
                "violations": self.violations, "total": self.total, "trace_ids": self.trace_ids,
                "backfill": self.backfill, "listed_all": self.listed_all}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Payload:
        """A stored row's payload."""
        return cls(data["kind"], data["rule"], datetime.fromisoformat(data["window"]["start"]),
                   datetime.fromisoformat(data["window"]["end"]), data["violations"], int(data["total"]),
                   data.get("trace_ids", []), bool(data.get("backfill")), bool(data.get("listed_all")))


@dataclass(frozen=True)
class Alert:
    """One message for one route."""

    kind: Kind
    rule: dict[str, Any]
    window_start: datetime
    window_end: datetime
    violations: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    since: datetime | None = None  # the previous message on this route, when realert held this one
    key: str = ""  # the Idempotency-Key: the same for every attempt at the same rows
    trace_ids: tuple[str, ...] = ()  # every trace the rows cover, listed or not
    # A retraction on a Slack bot route: the messages that announced its traces, to reply under.
    threads: tuple[SlackPost, ...] = ()

    @classmethod
    def merge(cls, payloads: Sequence[Payload], row_ids: list[int], route: str, *,
              max_listed: int, since: datetime | None) -> Alert:
        """One alert from outbox payloads of one rule, kind and route, oldest first.

        Rows that list every violation stay whole; the others are cut to ``max_listed``.
        """
        listed = [v for p in payloads for v in p.violations]
        if not all(p.listed_all for p in payloads):
            listed = listed[:max_listed]
        key = hashlib.sha256(f"{route}:{','.join(map(str, sorted(row_ids)))}".encode()).hexdigest()
        return cls(
            kind=payloads[-1].kind, rule=payloads[-1].rule,
            window_start=min(p.window_start for p in payloads),
            window_end=max(p.window_end for p in payloads),
            violations=listed, total=sum(p.total for p in payloads), since=since, key=key,
            trace_ids=tuple(dict.fromkeys(t for p in payloads for t in p.trace_ids)))

    @property
    def title(self) -> str:
        """The headline, also Slack's plain-text fallback."""
        name = self.rule.get("name") or self.rule["id"]
        if self.kind == "resolved":
            return f"Resolved: {name} — a clean window after violations"
        if self.kind == "test":
            return f"BeTrace Checker test message for {name}"
        plural = "s" if self.total != 1 else ""
        if self.kind == "retracted":
            return f"Withdrawn: {name} — {self.total} violation{plural} no longer hold on the finished trace"
        since = " since the last alert" if self.since else ""
        return f"{self.rule['severity'].upper()}: {name} — {self.total} new violation{plural}{since}"


def trace_url(template: str | None, trace_id: str) -> str | None:
    """The link to a trace, from ``trace_url_template`` (the id encoded: it came from a trace)."""
    return template.replace("{trace_id}", quote(trace_id, safe="")) if template else None


def parts_of(violations: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Consecutive slices of at most ``size``; one empty part when there is nothing to list."""
    return [violations[start:start + size] for start in range(0, len(violations), size)] or [[]]


def part_key(key: str, part: int, parts: int) -> str:
    """The Idempotency-Key of part ``part`` of ``parts``: the alert's own when there is one part.

    The split is part of the key: a ``max_batch`` changed between two attempts splits the same
    rows differently, and a receiver must not drop a part that lists other violations.
    """
    return key if parts == 1 else hashlib.sha256(f"{key}:{part}/{parts}".encode()).hexdigest()


def webhook_body(alert: Alert, template: str | None, part: int = 1, parts: int = 1) -> bytes:
    """The versioned JSON a webhook receives (docs/notifications.md documents it): one part of the alert."""
    return json.dumps({
        "version": PAYLOAD_VERSION,
        "kind": alert.kind,
        "part": part,
        "parts": parts,
        "rule": alert.rule,
        "window": {"start": alert.window_start.isoformat(), "end": alert.window_end.isoformat()},
        "total": alert.total,
        "since_last_alert": alert.since.isoformat() if alert.since else None,
        "violations": [{**v, "trace_url": trace_url(template, v["trace_id"])} for v in alert.violations],
    }, ensure_ascii=False, sort_keys=True).encode()


def _escape(text: str) -> str:
    """Slack reads &, < and > as control characters in every text (``<!channel>`` pings a channel)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, label: str) -> str:
    """``<url|label>``; a ``|``, ``<`` or ``>`` in the URL would end the link early."""
    return f"<{url.replace('|', '%7C').replace('<', '%3C').replace('>', '%3E')}|{_escape(label)}>"


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, never ending in half an ``&amp;``."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    amp = head.rfind("&")
    if amp >= 0 and ";" not in head[amp:] and len(head) - amp < len("&amp;"):
        head = head[:amp]
    return head + "…"


def _listing(lines: list[str], total: int) -> str:
    """Trace lines and "…and N more", dropping lines (counted) rather than cutting one in half."""
    while True:
        more = total - len(lines)
        text = "\n".join(lines + ([f"…and {more} more"] if more > 0 else []))
        if len(text) <= SECTION_LIMIT or len(lines) <= 1:
            return _cut(text, SECTION_LIMIT)
        lines = lines[:-1]


def slack_message(alert: Alert, template: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Plain-text fallback and Block Kit blocks."""
    rule = alert.rule
    mark = SEVERITY_MARK.get(rule["severity"], "") if alert.kind == "violations" else ":white_check_mark:"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(_escape(alert.title), HEADER_LIMIT)}},
    ]
    summary = f"{mark} Rule `{_escape(rule['id'])}` ({_escape(rule['severity'])})"
    if alert.since:
        summary += f" · previous alert {alert.since:%Y-%m-%d %H:%M} UTC"
    fields = [{"type": "mrkdwn", "text": _cut(f"*{label}*\n{_escape(', '.join(values) or '—')}", FIELD_LIMIT)}
              for label, values in (("Frameworks", rule.get("frameworks", [])),
                                    ("Controls", rule.get("controls", [])))]
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(summary, SECTION_LIMIT)},
                   "fields": fields})
    if alert.violations:
        first = alert.violations[0]
        withdrawn = alert.kind == "retracted"
        why = (f"*Withdrawn because:* {_escape(first.get('retraction_reason') or 'no longer holds')}"
               if withdrawn else "*Why:* " + _escape(first.get("reason", "")))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(why, SECTION_LIMIT)}})
        lines = []
        for violation in alert.violations:
            url = trace_url(template, violation["trace_id"])
            name = _link(url, violation["trace_id"]) if url else f"`{_escape(violation['trace_id'])}`"
            root = (violation.get("root_service"), violation.get("root_name"))
            where = " ".join(_escape(part) for part in root if part)
            withdrawn_why = violation.get("retraction_reason")
            because = f" — {_escape(withdrawn_why)}" if withdrawn_why else ""
            lines.append(f"• {name} {where}".rstrip() + because)
        listing = _listing(lines, alert.total)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": listing}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(
        f"Window {alert.window_start:%Y-%m-%d %H:%M:%S} to {alert.window_end:%Y-%m-%d %H:%M:%S} UTC · "
        f"{alert.total} total · BeTrace Checker", SECTION_LIMIT)}]})
    text = alert.title
    if alert.violations:
        text += ": " + ", ".join(_with_reason(v) for v in alert.violations)
    return _cut(_escape(text), SECTION_LIMIT), blocks


def _with_reason(violation: Mapping[str, Any]) -> str:
    """``<trace>``, or ``<trace> (<why it was withdrawn>)``."""
    why = violation.get("retraction_reason")
    return f"{violation['trace_id']} ({why})" if why else str(violation["trace_id"])


def _withdrawn_note(withdrawn: Mapping[str, str], whole: bool) -> str:
    """``Withdrawn: <reason>`` when one reason covers the whole message, else trace by trace."""
    reasons = set(withdrawn.values())
    if whole and len(reasons) == 1 and "" not in reasons:
        return f"Withdrawn: {_escape(next(iter(reasons)))}"
    return "Withdrawn: " + "; ".join(f"`{_escape(t)}`" + (f" {_escape(why)}" if why else "")
                                     for t, why in withdrawn.items())


def struck_message(post: SlackPost, withdrawn: Mapping[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """The original message as ``chat.update`` rewrites it: the withdrawn traces struck through.

    When every trace it covered is withdrawn, the header is struck too (a header is plain text,
    so it becomes a section: ``~text~`` is mrkdwn); a context line says what was withdrawn and why.
    """
    whole = set(post.trace_ids) <= set(withdrawn)
    blocks: list[dict[str, Any]] = []
    for block in post.blocks:
        text = block.get("text", {}).get("text", "")
        if block.get("type") == "header" and whole:
            struck = _cut(f"*~{text}~*", SECTION_LIMIT)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": struck}})
        elif block.get("type") == "section" and text.startswith("• "):
            lines = [f"• ~{line[2:]}~" if line.startswith("• ") and any(t in line for t in withdrawn)
                     else line for line in text.split("\n")]
            blocks.append({**block, "text": {**block["text"], "text": _cut("\n".join(lines), SECTION_LIMIT)}})
        else:
            blocks.append(block)
    note = {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(
        _withdrawn_note(withdrawn, whole), SECTION_LIMIT)}]}
    blocks = [*blocks[: MAX_BLOCKS - 1], note]
    prefix = "Withdrawn: " if whole else f"{len(withdrawn)} withdrawn: "
    return _cut(prefix + post.text, SECTION_LIMIT), blocks


def retraction_reply(alert: Alert, trace_ids: Sequence[str], reasons: Mapping[str, str],
                     template: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The reply in an original message's thread: which of its violations were withdrawn, and why."""
    name = alert.rule.get("name") or alert.rule["id"]
    plural = "s" if len(trace_ids) != 1 else ""
    head = f"Withdrawn: {len(trace_ids)} violation{plural} of {name} no longer hold on the finished trace"
    lines = []
    for trace in trace_ids:
        url = trace_url(template, trace)
        label = _link(url, trace) if url else f"`{_escape(trace)}`"
        why = reasons.get(trace)
        lines.append(f"• {label} — {_escape(why)}" if why else f"• {label}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f":white_check_mark: *{_escape(head)}*",
                                                                    SECTION_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _listing(lines[:20], len(lines))}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(
            f"Rule `{_escape(alert.rule['id'])}` · window {alert.window_start:%Y-%m-%d %H:%M:%S} to "
            f"{alert.window_end:%Y-%m-%d %H:%M:%S} UTC · BeTrace Checker", SECTION_LIMIT)}]}]
    text = head + ": " + ", ".join(f"{t} ({reasons[t]})" if reasons.get(t) else t for t in trace_ids)
    return _cut(_escape(text), SECTION_LIMIT), blocks


def sample_alert() -> Alert:
    """What ``betrace notify test`` sends: clearly a test, shaped like a real alert."""
    now = datetime.now(UTC).replace(microsecond=0)
    sample = {"rule_id": "betrace-test", "trace_id": "0" * 31 + "1", "severity": "info",
              "reason": "This is a test message from BeTrace Checker; no rule was violated.",
              "root_service": "betrace", "root_name": "notify test"}
    return Alert(kind="test", rule={"id": "betrace-test", "name": "notification route check",
                                    "severity": "info", "frameworks": [], "controls": [], "version": ""},
                 window_start=now - timedelta(minutes=1), window_end=now, violations=[sample], total=1,
                 key=secrets.token_hex(16))
