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
from otlp_build import push, span
from receivers import Receiver
from stores import needs_postgres, postgres_schema
from tempo_double import Fault, TempoDouble

from checker.config import load_settings
from checker.daemon.factory import once_exit_code, open_daemon
from checker.daemon.windows import RuleSchedule, settle_batches
from checker.store import Store, WindowRecord, ledger

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


def run_once(settings: Settings, clock: Clock) -> int:
    """One ``run --once`` pass; its exit code."""
    async def once() -> int:
        daemon = await open_daemon(settings, clock=clock)
        try:
            return once_exit_code(await daemon.run_once())
        finally:
            await daemon.close()

    return asyncio.run(once())


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


def first_parts(tempo: TempoDouble, at: float) -> None:
    """The parts of the five traces that arrive before the provisional pass."""
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


def late_parts(tempo: TempoDouble, at: float) -> None:
    """The parts that arrive after the provisional pass (second fragments)."""
    push(tempo, span(1, 3, "audit.log", at + 2, parent=1))
    push(tempo, span(2, 2, "pii.access", at + 1, parent=1))
    push(tempo, *(span(4, n, "http.retry", at + n, parent=1) for n in (4, 5)))


PROVISIONAL = {("audited", f"{1:032x}"): ("provisional", None),
               ("audited", f"{3:032x}"): ("provisional", None)}
FINAL = {("audited", f"{1:032x}"): ("retracted", "audit.log arrived later"),
         ("audited", f"{2:032x}"): ("confirmed", None),
         ("audited", f"{3:032x}"): ("confirmed", None),
         ("retries", f"{4:032x}"): ("confirmed", None)}
# What each route is told over both passes, each message once (order aside).
FAST = sorted([("violations", "audited", f"{n:032x}", "provisional") for n in (1, 3)] + [
    ("retracted", "audited", f"{1:032x}", "retracted"),
    ("violations", "audited", f"{2:032x}", "confirmed"),
    ("violations", "retries", f"{4:032x}", "confirmed")])
SETTLED = sorted([("violations", "audited", f"{n:032x}", "confirmed") for n in (2, 3)] + [
    ("violations", "retries", f"{4:032x}", "confirmed")])


class TestLateParts:
    """The four scenarios of the issue, on one timeline."""

    def test_provisional_then_final(self, tmp_path: Path, receiver: Receiver) -> None:
        clock = Clock.at(T)
        at = T - 100  # inside the window [T-120, T-60)
        # A lambda: the clock's ``now`` is replaced as it advances.
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            settings = config(tmp_path, tempo, receiver)
            first_parts(tempo, at)
            run_once(settings, clock)

            store = Store.open(settings.store)
            try:
                assert PROVISIONAL == statuses(store)
                assert sorted(messages(receiver, "fast")) == [
                    ("violations", "audited", f"{n:032x}", "provisional") for n in (1, 3)]
                assert [] == messages(receiver, "settled")  # final verdicts only

                late_parts(tempo, at)
                clock.advance(minutes=6)
                run_once(settings, clock)

                assert FINAL == statuses(store)
                fast = messages(receiver, "fast")
                assert ("retracted", "audited", f"{1:032x}", "retracted") in fast
                assert ("violations", "audited", f"{2:032x}", "confirmed") in fast
                assert ("violations", "retries", f"{4:032x}", "confirmed") in fast
                assert 1 == sum(1 for m in fast if m[2] == f"{3:032x}")  # told once, never again
                assert sorted(messages(receiver, "settled")) == SETTLED
                retraction = next(m for m in received(receiver, "fast") if m["kind"] == "retracted")
                assert "audit.log arrived later" == retraction["violations"][0]["retraction_reason"]
                assert ledger.verify(store.engine).ok
            finally:
                store.close()


class Killed(BaseException):
    """The process dies here: nothing after this point runs, nothing uncommitted is kept."""


def dies_at_final_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every final-pass commit dies before its transaction starts, as ``kill -9`` would."""
    commit = Store.commit

    def dying(store: Store, record: WindowRecord, notify: object = None) -> object:
        if record.amendment is not None:
            raise Killed
        return commit(store, record, notify)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "commit", dying)


def run_and_die(settings: Settings, clock: Clock, abandoned: list[object]) -> None:
    """A run the process does not survive: the daemon is never closed (no shutdown, no goodbye).

    What a ``kill -9`` leaves behind is the store's committed transactions and nothing else;
    the rule locks (``flock``, PostgreSQL advisory locks) die with the process: here each run
    releases its lock on the way out, as the kernel would.
    """
    async def once() -> None:
        daemon = await open_daemon(settings, clock=clock)
        abandoned.append(daemon)  # never closed
        await daemon.run_once()

    asyncio.run(once())


def final_passes(store: Store) -> list[dict[str, Any]]:
    """The final-pass records (those that amend provisional windows)."""
    return [e for e in store.evaluations() if e["amendments"] is not None]


def assert_each_pass_once(store: Store, settled_until: float) -> None:
    """Every window judged provisionally once, and settled by one final pass at most.

    The provisional windows that end by ``settled_until`` (unix seconds) must be settled.
    """
    recorded = [e for e in store.evaluations() if e["outcome"] != "failed"]
    provisional = [e for e in recorded if e["verdict"] == "provisional"]
    windows = [(e["rule_id"], e["window_start"]) for e in provisional]
    assert len(windows) == len(set(windows)), windows
    amended = [i for e in final_passes(store) for i in e["amendments"]["provisional"]]
    assert len(amended) == len(set(amended)), amended
    assert set(amended) <= {e["id"] for e in provisional}
    due = {e["id"] for e in provisional if e["window_end"].timestamp() <= settled_until}
    assert due <= set(amended)
    once = [(e["rule_id"], e["window_start"]) for e in recorded
            if e["verdict"] == "final" and e["amendments"] is None and e["outcome"] != "skipped"]
    assert not set(once) & set(windows)  # no window judged at once and provisionally too
    assert len(once) == len(set(once))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped daemons
class TestKilledBetweenThePasses:
    """``kill -9`` after the provisional pass, and again inside the final pass.

    In-process rather than a ``betrace run`` subprocess: the final pass is due only when the
    window is ``settle`` old, and a real process reads the wall clock, so it would have to run
    for minutes (or with a settle of seconds, racing the test). What a ``kill -9`` leaves is
    exactly the committed transactions in the store; dropping the daemon unclosed, and dying
    (an exception no handler catches) just before the final pass's commit, leaves the same.
    ``tests/test_daemon_process.py`` kills a real process mid-run.
    """

    def test_the_final_pass_happens_once_after_restarts(self, tmp_path: Path, receiver: Receiver,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        clock = Clock.at(T)
        at = T - 100
        abandoned: list[object] = []
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            settings = config(tmp_path, tempo, receiver)
            first_parts(tempo, at)
            run_and_die(settings, clock, abandoned)  # the provisional pass, then kill -9
            store = Store.open(settings.store)
            try:
                assert PROVISIONAL == statuses(store)
                late_parts(tempo, at)
                clock.advance(minutes=6)
                # Restarted; dies again as the final pass is about to commit.
                dies_at_final_commit(monkeypatch)
                with pytest.raises(Killed):
                    run_and_die(settings, clock, abandoned)
                monkeypatch.undo()
                assert PROVISIONAL == statuses(store)
                assert [] == final_passes(store)

                run_once(settings, clock)  # restarted: the final pass is found again in the store
                assert FINAL == statuses(store)
                assert_each_pass_once(store, T)
                settled = len(final_passes(store))
                assert 2 == settled  # one per rule: its two windows in one batch
                assert FAST == sorted(messages(receiver, "fast"))
                assert SETTLED == sorted(messages(receiver, "settled"))

                clock.advance(minutes=1)  # and once more: nothing is settled or told twice
                run_once(settings, clock)
                assert settled == len(final_passes(store))
                assert_each_pass_once(store, T)
                assert FAST == sorted(messages(receiver, "fast"))
                assert SETTLED == sorted(messages(receiver, "settled"))
                assert ledger.verify(store.engine).ok
            finally:
                store.close()


@needs_postgres
@pytest.mark.external_service
class TestTwoReplicas:
    """Two daemons on one PostgreSQL store, each run side by side."""

    def test_each_pass_commits_once_with_the_single_daemons_statuses(self, tmp_path: Path,
                                                                     receiver: Receiver) -> None:
        clock = Clock.at(T)
        at = T - 100
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo, \
                postgres_schema() as url:  # noqa: PLW0108
            settings = config(tmp_path, tempo, receiver, store=url)
            # Slow fetches make the two replicas' runs overlap.
            tempo.inject(Fault(route="trace", kind="timeout", delay=0.05, times=10_000))
            first_parts(tempo, at)

            async def scenario() -> list[bool]:
                one = await open_daemon(settings, clock=clock)
                two = await open_daemon(settings, clock=clock)
                busy: list[bool] = []
                try:
                    for minute in range(10):  # a batch of 5m settles at T + 8m
                        if minute == 1:
                            late_parts(tempo, at)
                        first, second = await asyncio.gather(one.run_once(), two.run_once())
                        busy.extend(s.busy for s in first + second)
                        clock.advance(minutes=1)
                finally:
                    await one.close()
                    await two.close()
                return busy

            busy = asyncio.run(scenario())
            store = Store.open(url)
            try:
                assert any(busy), "the replicas never competed for a rule"
                assert FINAL == statuses(store)
                assert_each_pass_once(store, T)
                assert 2 <= len(final_passes(store))
                assert FAST == sorted(messages(receiver, "fast"))
                assert SETTLED == sorted(messages(receiver, "settled"))
                assert ledger.verify(store.engine).ok
            finally:
                store.close()


class TestCatchUp:
    """Windows already ``settle`` old when first evaluated: judged once, finally."""

    def test_settled_windows_are_judged_once_as_final(self, tmp_path: Path, receiver: Receiver) -> None:
        clock = Clock.at(T)
        at = T - 500  # in [T-540, T-480): settled (5m) when the daemon first looks, 10m back
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            settings = config(tmp_path, tempo, receiver, schedule__initial_lookback="10m",
                              schedule__settle="5m")
            first_parts(tempo, at)
            late_parts(tempo, at)  # all of it there before the first look
            run_once(settings, clock)
            store = Store.open(settings.store)
            try:
                recorded = store.evaluations()
                old = [e for e in recorded if e["window_end"] <= clock.now - timedelta(minutes=5)]
                assert 2 * 5 == len(old)  # two rules, five one-minute windows each
                assert {("final", None)} == {(e["verdict"], e["amendments"]) for e in old}
                assert {"provisional"} == {e["verdict"] for e in recorded if e not in old}
                expected = {("audited", f"{n:032x}"): ("confirmed", None) for n in (2, 3)}
                expected[("retries", f"{4:032x}")] = ("confirmed", None)
                assert expected == statuses(store)
                assert SETTLED == sorted(messages(receiver, "fast"))  # every route hears them, once
                assert SETTLED == sorted(messages(receiver, "settled"))

                clock.advance(minutes=6)  # the provisional windows settle; the old are not judged again
                run_once(settings, clock)
                assert expected == statuses(store)
                again = [e for e in store.evaluations()
                         if e["window_end"].timestamp() <= T - 300 and e["id"] not in {o["id"] for o in old}]
                assert [] == again
                assert_each_pass_once(store, T - 300)
                assert SETTLED == sorted(messages(receiver, "fast"))
                assert SETTLED == sorted(messages(receiver, "settled"))
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

    # Batches of settle - evaluation_delay: 5m.
    EVERY_MINUTE = RuleSchedule(MINUTE, 5 * MINUTE, settle=10 * MINUTE)

    def test_consecutive_windows_are_batched_by_settle_minus_delay(self) -> None:
        batches = settle_batches(minutes(*range(15)), W0, W0 + 20 * MINUTE, self.EVERY_MINUTE)
        assert [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]] == starts(batches)
        short_delay = RuleSchedule(MINUTE, timedelta(seconds=45), settle=10 * MINUTE)  # 9m15s: 10 windows
        assert [list(range(10)), list(range(10, 20))] == starts(
            settle_batches(minutes(*range(20)), W0, W0 + 30 * MINUTE, short_delay))

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
        assert [[0, 1, 2], [4], [5, 6, 7, 8]] == starts(batches)

    def test_windows_already_settled_or_not_yet_settled_are_left_out(self) -> None:
        batches = settle_batches(minutes(*range(12)), W0 + 2 * MINUTE, W0 + 11 * MINUTE, self.EVERY_MINUTE)
        assert [[2, 3, 4], [5, 6, 7, 8, 9]] == starts(batches)  # 10 waits for the whole batch

    def test_batches_lie_on_the_grid_so_rules_started_apart_share_them(self) -> None:
        one = settle_batches(minutes(*range(3, 20)), W0 + 3 * MINUTE, W0 + 30 * MINUTE, self.EVERY_MINUTE)
        two = settle_batches(minutes(*range(7, 20)), W0 + 7 * MINUTE, W0 + 30 * MINUTE, self.EVERY_MINUTE)
        assert [[3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]] == starts(one)
        assert starts(one)[2:] == starts(two)[1:]

    def test_a_period_longer_than_a_batch_is_a_batch_of_one(self) -> None:
        hourly = RuleSchedule(60 * MINUTE, timedelta(seconds=45), settle=10 * MINUTE)
        windows = [Judged(W0 + i * 60 * MINUTE, W0 + (i + 1) * 60 * MINUTE) for i in range(3)]
        batches = settle_batches(windows, W0, W0 + 200 * MINUTE, hourly)
        assert [[w] for w in windows] == batches

    def test_short_windows_after_a_catch_up_fill_a_batch(self) -> None:
        # Windows off the grid (an older version's) batch by the cell each starts in.
        windows = [Judged(W0, W0 + timedelta(seconds=15)), *(
            Judged(W0 + timedelta(seconds=15) + i * MINUTE, W0 + timedelta(seconds=15) + (i + 1) * MINUTE)
            for i in range(6))]
        batches = settle_batches(windows, W0, W0 + 30 * MINUTE, self.EVERY_MINUTE)
        assert [windows[:6], windows[6:]] == batches

    def test_nothing_pending(self) -> None:
        assert [] == settle_batches([], W0, W0 + 20 * MINUTE, self.EVERY_MINUTE)


class TestTraceInTwoWindowsOfABatch:
    """A trace on a window boundary is judged by both windows' provisional passes."""

    def test_a_violation_judged_on_fewer_spans_is_retracted(self, tmp_path: Path, receiver: Receiver) -> None:
        # Found by bench/bench_settle.py: Tempo's search bounds are whole seconds, inclusive, so a
        # trace starting at T-60 is in [T-120, T-60) and [T-60, T). The first window's pass saw it
        # without its audit.log (a violation); the second's saw it whole (compliant). The final
        # pass over both must not take the second judgment as the one the violation was made on.
        clock = Clock.at(T - 15)  # the first window, [T-120, T-60), is 45s old
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            settings = config(tmp_path, tempo, receiver, schedule__evaluation_delay="45s",
                              schedule__initial_lookback="105s")
            push(tempo, span(1, 1, "GET /patients", T - 60), span(1, 2, "pii.access", T - 60, parent=1))
            run_once(settings, clock)
            push(tempo, span(1, 3, "audit.log", T - 60, parent=1))
            clock.advance(minutes=1)  # the second window, [T-60, T), sees the whole trace
            run_once(settings, clock)
            store = Store.open(settings.store)
            try:
                assert {("audited", f"{1:032x}"): ("provisional", None)} == statuses(store)
                clock.advance(minutes=6)
                run_once(settings, clock)
                assert [] == [v for v in store.violations() if v.status != "retracted"]
                assert_each_pass_once(store, T)
            finally:
                store.close()


class TestFinalPassEdges:
    """Found in review: an edited rule, and a violator the final pass cannot judge."""

    def test_a_rule_edited_before_the_final_pass_judges_every_trace_again(
            self, tmp_path: Path, receiver: Receiver) -> None:
        clock = Clock.at(T)
        at = T - 100
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            settings = config(tmp_path, tempo, receiver)
            push(tempo, span(5, 1, "GET /upstream", at),
                 *(span(5, n, "http.retry", at + n, parent=1) for n in (2, 3, 4)))  # 3 retries: fine
            run_once(settings, clock)
            (tmp_path / "rules.d" / "r.yaml").write_text(RULES.replace("count(http.retry) > 3",
                                                                        "count(http.retry) > 2"))
            clock.advance(minutes=6)
            run_once(settings, clock)
            store = Store.open(settings.store)
            try:
                assert ("confirmed", None) == statuses(store)[("retries", f"{5:032x}")]
            finally:
                store.close()

    def test_a_violator_not_judged_at_the_final_pass_stays_provisional(
            self, tmp_path: Path, receiver: Receiver) -> None:
        clock = Clock.at(T)
        at = T - 100
        with TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
            settings = config(tmp_path, tempo, receiver)
            push(tempo, span(1, 1, "GET /patients", at), span(1, 2, "pii.access", at + 1, parent=1))
            run_once(settings, clock)
            push(tempo, span(1, 3, "audit.log", at + 2, parent=1))
            tempo.max_bytes_per_trace = 10  # Tempo now returns the trace only in part
            clock.advance(minutes=6)
            assert 3 == run_once(settings, clock)  # an incomplete final pass, as for any window
            store = Store.open(settings.store)
            try:
                assert ("provisional", None) == statuses(store)[("audited", f"{1:032x}")]
                final = [e for e in store.evaluations() if e["amendments"] is not None]
                assert {"incomplete"} == {e["outcome"] for e in final if e["rule_id"] == "audited"}
                assert [f"{1:032x}"] == next(e["amendments"]["unjudged"] for e in final
                                            if e["rule_id"] == "audited")
                assert ledger.verify(store.engine).ok
            finally:
                store.close()
            assert [] == messages(receiver, "settled")  # a final route is told nothing unjudged

