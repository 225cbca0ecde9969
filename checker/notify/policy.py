"""Who is told what after a window: routes + new violations + firing state -> outbox entries.

Pure, like Alertmanager's stages: no store, no clock, no I/O. The store calls ``entries``
inside its commit transaction with the firing state it has just read, and writes back the
rows and the firing state it returns, so a crash never leaves one without the other.

The rules: a route gets one ``violations`` entry with the new violations it accepts (by
severity); a route that wants ``send_resolved`` gets a ``resolved`` entry when a firing rule
has a clean window. Only ``ok`` is clean; ``skipped`` and ``failed`` windows notify nothing.
A backfill notifies its violations but never touches the live alert state: it neither
resolves nor changes the firing flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from checker.notify.message import Kind, Payload
from checker.store import OutboxEntry, OutboxWrite

Verdict = Literal["provisional", "final", "amendment"]

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from checker.engine import Violation
    from checker.notify.settings import Route
    from checker.rules.rule import Rule

NOTIFYING: frozenset[str] = frozenset({"ok", "violations", "incomplete"})


@dataclass(frozen=True)
class WindowNotice:
    """What a commit of one window may notify, known before the commit starts."""

    rule: dict[str, Any]
    routes: Mapping[str, Route]
    window: tuple[datetime, datetime]
    max_listed: int

    # provisional: a pass that may be amended; final: a window judged once, when settled;
    # amendment: the final pass over provisional windows.
    verdict: Verdict = "final"
    confirmed: tuple[Violation, ...] = ()  # an amendment: the provisional violations that hold
    retracted: tuple[tuple[Violation, str], ...] = ()  # an amendment: those that do not, and why

    def entries(self, new: Sequence[Violation], firing: Mapping[str, bool], *,
                outcome: str, backfill: bool) -> OutboxWrite:
        """The outbox rows for ``new`` (the violations not seen before) and the new firing state.

        ``firing`` is what the store holds for this rule, route by route (absent: not firing).
        A route on ``verdicts: final`` hears nothing of a provisional pass and, at the final
        pass, the violations that hold (confirmed and late); a route on provisional verdicts
        hears each pass's new violations, and the retractions.
        """
        if outcome not in NOTIFYING:
            return OutboxWrite()
        rows: list[OutboxEntry] = []
        state: dict[str, bool] = {}
        amending = self.verdict == "amendment"
        status = "provisional" if self.verdict == "provisional" else "confirmed"
        for name, route in self.routes.items():
            hears_final = route.verdicts == "final"
            listed = None if route.lists_all else self.max_listed
            if hears_final and self.verdict == "provisional":
                continue
            told = [*self.confirmed, *new] if hears_final else list(new)
            withdrawn = [] if hears_final else [(v, why) for v, why in self.retracted
                                                 if route.accepts(v.severity)]
            if withdrawn:
                payload = Payload.of("retracted", self.rule, self.window, [v for v, _ in withdrawn],
                                     listed, backfill=backfill, status="retracted",
                                     reasons={v.trace_id: why for v, why in withdrawn})
                rows.append(OutboxEntry(name, payload.to_json()))
            if amending and not hears_final and not told:
                continue
            taken = [v for v in told if route.accepts(v.severity)]
            resolves = outcome == "ok" and route.send_resolved and not backfill and firing.get(name, False)
            if not taken and not resolves:
                continue
            kind: Kind = "violations" if taken else "resolved"
            payload = Payload.of(kind, self.rule, self.window, taken, listed, backfill=backfill,
                                 status=status)
            rows.append(OutboxEntry(name, payload.to_json()))
            if not backfill:
                state[name] = kind == "violations"
        return OutboxWrite(tuple(rows), state)


def rule_info(rule: Rule) -> dict[str, Any]:
    """The rule as messages show it."""
    info = {"id": rule.id, "name": rule.name, "severity": rule.severity, "description": rule.description,
            "frameworks": list(rule.frameworks), "controls": list(rule.controls), "version": rule.version}
    return {**info, "runbook_url": rule.runbook_url} if rule.runbook_url else info


@dataclass(frozen=True)
class NotifyPolicy:
    """The config's routes as the policy sees them: which a rule notifies, how much a row lists."""

    routes: Mapping[str, Route]
    default: tuple[str, ...]  # ``default_notifiers``: for rules without ``notify``
    max_listed: int

    def routes_of(self, rule: Rule) -> list[str]:
        """The rule's ``notify`` routes, else the config's ``default_notifiers``."""
        return list(rule.notify) if rule.notify else list(self.default)

    def notice(self, rule: Rule, window: tuple[datetime, datetime]) -> WindowNotice | None:
        """What a commit of this rule's window may notify; None when the rule has no known route."""
        known = {name: self.routes[name] for name in self.routes_of(rule) if name in self.routes}
        if not known:
            return None
        return WindowNotice(rule_info(rule), known, window, self.max_listed)
