"""Settled verdicts: late trace parts never leave a wrong alert or a missed violation.

Each scenario pushes the first part of a trace to the Tempo test double, runs the daemon (a
provisional verdict), pushes a late part (a second fragment, which the first searches could not
see), moves the clock past ``settle`` and runs again (the final verdict).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from daemon_kit import Clock, write_settings
from otlp_build import attribute
from receivers import Receiver
from tempo_double import TempoDouble

from checker.config import load_settings
from checker.daemon.factory import open_daemon
from checker.daemon.windows import RuleSchedule, settle_batches
from checker.store import Store, ledger

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from checker.config import Settings

T = 2_000_000_040  # the first run's clock (unix seconds); windows are whole minutes before it
SECRET = "settle-secret"
RULES = """\
rules:
  - id: audited
    severity: high
    controls: ["HIPAA:164.312(b)"]
    condition: |
      when   { pii.access }
      always { audit.log }
  - id: retries
    severity: medium
    condition: never { count(http.retry) > 3 }
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(secret=SECRET) as started:
        yield started


def span(trace: int, n: int, name: str, at: float, *, parent: int | None = None,
         **attributes: object) -> dict[str, Any]:
    """One span of trace ``trace`` (span IDs are the trace number and ``n``), 1 ms long."""
    start = int(at * 1e9)
    made: dict[str, Any] = {
        "traceId": f"{trace:032x}", "spanId": f"{trace:08x}{n:08x}", "name": name, "kind": 1,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000),
        "attributes": [attribute(k, v) for k, v in attributes.items()]}
    if parent is not None:
        made["parentSpanId"] = f"{trace:08x}{parent:08x}"
    return made


def push(tempo: TempoDouble, *spans: dict[str, Any]) -> None:
    """One export: Tempo stores it as a fragment of its own."""
    tempo.push({"resourceSpans": [{
        "resource": {"attributes": [attribute("service.name", "api")]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}]}]})


def config(tmp_path: Path, tempo: TempoDouble, receiver: Receiver, **overrides: Any) -> Settings:
    rules = tmp_path / "rules.d"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES)
    notifiers = {
        "fast": {"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET,
                 "headers": {"X-Route": "fast"}},
        "settled": {"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET,
                    "headers": {"X-Route": "settled"}, "verdicts": "final"},
    }
    return load_settings(write_settings(
        tmp_path, tempo_url=tempo.url, store=overrides.pop("store", f"sqlite:///{tmp_path / 's.db'}"),
        rules_dir=rules, notifiers=notifiers, default_notifiers=list(notifiers),
        delivery={"realert": "0s"},
        schedule={"every": "1m", "evaluation_delay": "0s", "initial_lookback": "2m", "jitter": "0s",
                  "settle": "5m", "trace_idle": "30s"}, **overrides))


def run_once(settings: Settings, clock: Clock) -> None:
    async def once() -> None:
        daemon = await open_daemon(settings, clock=clock)
        try:
            await daemon.run_once()
        finally:
            await daemon.close()

    asyncio.run(once())


def received(receiver: Receiver, route: str) -> list[dict[str, Any]]:
    """The webhook bodies ``route`` delivered, in order."""
    return [m.json for m in receiver.accepted("/hook") if m.headers.get("x-route") == route]


def messages(receiver: Receiver, route: str) -> list[tuple[str, str, str, str]]:
    """(kind, rule, trace, status) of every violation a route was told about, in order."""
    return [(body["kind"], body["rule"]["id"], v["trace_id"], v["status"])
            for body in received(receiver, route) for v in body["violations"]]


def statuses(store: Store) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {(s.violation.rule_id, s.violation.trace_id): (s.status, s.retraction_reason)
            for s in store.violations()}


class TestLateParts:
    """The four scenarios of the issue, on one timeline."""

    def test_provisional_then_final(self, tmp_path: Path, receiver: Receiver) -> None:
        clock = Clock.at(T)
        at = T - 100  # inside the window [T-120, T-60)
        # A lambda: the clock's ``now`` is replaced as it advances.
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            settings = config(tmp_path, tempo, receiver)
            # 1: pii.access now, its audit.log in a late part: retracted.
            push(tempo, span(1, 1, "GET /patients", at), span(1, 2, "pii.access", at + 1, parent=1))
            # 2: only the root now, the pii.access (without audit) late: a late violation.
            push(tempo, span(2, 1, "GET /patients", at))
            # 3: a violation with nothing late: provisional, then confirmed.
            push(tempo, span(3, 1, "GET /patients", at), span(3, 2, "pii.access", at + 1, parent=1))
            # 4: two retries now, two more late: a late violation of a count.
            push(tempo, span(4, 1, "GET /upstream", at),
                 *(span(4, n, "http.retry", at + n, parent=1) for n in (2, 3)))
            # 5: compliant from the start.
            push(tempo, span(5, 1, "GET /patients", at), span(5, 2, "pii.access", at + 1, parent=1),
                 span(5, 3, "audit.log", at + 2, parent=1))
            run_once(settings, clock)

            store = Store.open(settings.store)
            try:
                first = statuses(store)
                assert {("audited", f"{1:032x}"): ("provisional", None),
                        ("audited", f"{3:032x}"): ("provisional", None)} == first
                assert sorted(messages(receiver, "fast")) == [
                    ("violations", "audited", f"{n:032x}", "provisional") for n in (1, 3)]
                assert [] == messages(receiver, "settled")  # final verdicts only

                push(tempo, span(1, 3, "audit.log", at + 2, parent=1))
                push(tempo, span(2, 2, "pii.access", at + 1, parent=1))
                push(tempo, *(span(4, n, "http.retry", at + n, parent=1) for n in (4, 5)))
                clock.advance(minutes=6)
                run_once(settings, clock)

                assert {("audited", f"{1:032x}"): ("retracted", "audit.log arrived later"),
                        ("audited", f"{2:032x}"): ("confirmed", None),
                        ("audited", f"{3:032x}"): ("confirmed", None),
                        ("retries", f"{4:032x}"): ("confirmed", None)} == statuses(store)
                fast = messages(receiver, "fast")
                assert ("retracted", "audited", f"{1:032x}", "retracted") in fast
                assert ("violations", "audited", f"{2:032x}", "confirmed") in fast
                assert ("violations", "retries", f"{4:032x}", "confirmed") in fast
                assert 1 == sum(1 for m in fast if m[2] == f"{3:032x}")  # told once, never again
                assert sorted(messages(receiver, "settled")) == [
                    ("violations", "audited", f"{n:032x}", "confirmed") for n in (2, 3)] + [
                    ("violations", "retries", f"{4:032x}", "confirmed")]
                retraction = next(m for m in received(receiver, "fast") if m["kind"] == "retracted")
                assert "audit.log arrived later" == retraction["violations"][0]["retraction_reason"]
                assert ledger.verify(store.engine).ok
            finally:
                store.close()


@dataclass(frozen=True)
class Judged:
    """A provisional window as ``settle_batches`` sees it."""

    start: datetime
    end: datetime


W0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def minutes(*indexes: int) -> list[Judged]:
    """One-minute windows starting ``index`` minutes after W0."""
    return [Judged(W0 + i * MINUTE, W0 + (i + 1) * MINUTE) for i in indexes]


def starts(batches: list[list[Judged]]) -> list[list[int]]:
    return [[int((w.start - W0) / MINUTE) for w in batch] for batch in batches]


class TestSettleBatches:
    """Which provisional windows a run settles, and which are searched together."""

    EVERY_MINUTE = RuleSchedule(MINUTE, timedelta(seconds=45), settle=10 * MINUTE)  # batches of 5m

    def test_consecutive_windows_are_batched_by_half_the_settle(self) -> None:
        batches = settle_batches(minutes(*range(15)), W0, W0 + 20 * MINUTE, self.EVERY_MINUTE)
        assert [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]] == starts(batches)

    def test_the_newest_batch_waits_until_whole(self) -> None:
        # Windows 10 and 11 are settled, but 12 to 14 will be within three minutes: wait for them.
        batches = settle_batches(minutes(*range(12)), W0, W0 + 12 * MINUTE, self.EVERY_MINUTE)
        assert [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] == starts(batches)
        batches = settle_batches(minutes(*range(14)), W0, W0 + 14 * MINUTE, self.EVERY_MINUTE)
        assert [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] == starts(batches)

    def test_the_newest_batch_goes_once_its_first_window_has_waited_a_batch(self) -> None:
        # Nothing after window 11 (a rule removed, a backlog's end): settled 5m after window 10 started.
        assert [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]] == starts(
            settle_batches(minutes(*range(12)), W0, W0 + 15 * MINUTE, self.EVERY_MINUTE))

    def test_a_gap_ends_a_batch(self) -> None:
        # Window 3 was never judged provisionally (skipped): a batch never searches across it.
        batches = settle_batches(minutes(0, 1, 2, 4, 5, 6, 7, 8), W0, W0 + 20 * MINUTE, self.EVERY_MINUTE)
        assert [[0, 1, 2], [4, 5, 6, 7, 8]] == starts(batches)

    def test_windows_already_settled_or_not_yet_settled_are_left_out(self) -> None:
        batches = settle_batches(minutes(*range(12)), W0 + 2 * MINUTE, W0 + 11 * MINUTE, self.EVERY_MINUTE)
        assert [[2, 3, 4, 5, 6]] == starts(batches)  # 7 to 10 wait for the whole batch

    def test_a_period_longer_than_half_the_settle_is_a_batch_of_one(self) -> None:
        hourly = RuleSchedule(60 * MINUTE, timedelta(seconds=45), settle=10 * MINUTE)
        windows = [Judged(W0 + i * 60 * MINUTE, W0 + (i + 1) * 60 * MINUTE) for i in range(3)]
        batches = settle_batches(windows, W0, W0 + 200 * MINUTE, hourly)
        assert [[w] for w in windows] == batches

    def test_short_windows_after_a_catch_up_fill_a_batch(self) -> None:
        # A window cut short (the first of a rule, or one before a restart) still batches by time.
        windows = [Judged(W0, W0 + timedelta(seconds=15)), *(
            Judged(W0 + timedelta(seconds=15) + i * MINUTE, W0 + timedelta(seconds=15) + (i + 1) * MINUTE)
            for i in range(6))]
        batches = settle_batches(windows, W0, W0 + 30 * MINUTE, self.EVERY_MINUTE)
        assert [windows[:5], windows[5:]] == batches

    def test_nothing_pending(self) -> None:
        assert [] == settle_batches([], W0, W0 + 20 * MINUTE, self.EVERY_MINUTE)
