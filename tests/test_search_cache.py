"""Margin searches kept per stretch of time (``SearchCache``), against the Tempo double over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import daemon_kit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tempo_double import TempoDouble

from checker.config import load_settings
from checker.daemon.factory import open_daemon
from checker.rules.load import load_text
from checker.tempo.client import TempoClient
from checker.tempo.run import evaluate_window
from checker.tempo.search_cache import ID_BYTES, SearchCache
from checker.tempo.settings import TempoSettings

T0 = 1_795_000_000
QUERY = '{ name = "audit.log" }'
# Scope { a } ∩ { b }: the { b } search adds candidates, so it looks around the window.
RULES = load_text("rules:\n  - id: ab\n    condition: when { a and b } never { c }\n", "r.yaml").rules


def push(double: TempoDouble, trace: int, at: int, *names: str) -> None:
    spans = [{"traceId": f"{trace:032x}", "spanId": f"{trace * 16 + i + 1:016x}", "name": name,
              "startTimeUnixNano": str(at * 10**9 + i), "endTimeUnixNano": str(at * 10**9 + 10**6)}
             for i, name in enumerate(names)]
    double.push({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]})


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def searched(double: TempoDouble) -> list[tuple[int, int]]:
    ranges = [(int(r.params["start"]), int(r.params["end"])) for r in double.requests if r.route == "search"]
    double.clear_requests()
    return ranges


def superset(double: TempoDouble, cache: SearchCache, span: tuple[int, int], window_end: int) -> set[str]:
    async def run() -> set[str]:
        async with TempoClient(TempoSettings(url=double.url), backoff=0.0) as client:
            return await cache.superset(client, QUERY, span, window_end=window_end)

    return asyncio.run(run())


class TestStretches:
    def test_each_stretch_asked_once_by_consecutive_windows(self) -> None:
        clock = Clock(T0 + 100)
        cache = SearchCache(1 << 20, clock)
        with TempoDouble() as double:
            # Window [T0+50, T0+60] at T0+100 (40 s old): its margin [T0-550, T0+70].
            superset(double, cache, (T0 - 550, T0 + 70), window_end=T0 + 60)
            assert searched(double) == [(T0 - 550, T0 + 60), (T0 + 60, T0 + 70)]
            clock.now += 10  # the next window, just as old: only the new stretch and the young tail
            superset(double, cache, (T0 - 540, T0 + 80), window_end=T0 + 70)
            assert searched(double) == [(T0 + 60, T0 + 70), (T0 + 70, T0 + 80)]

    def test_answers_at_least_what_tempo_has(self) -> None:
        clock = Clock(T0 + 100)
        cache = SearchCache(1 << 20, clock)
        with TempoDouble() as double:
            push(double, 1, T0 - 500, "audit.log")
            push(double, 2, T0 + 65, "audit.log")
            first = superset(double, cache, (T0 - 550, T0 + 70), window_end=T0 + 60)
            push(double, 3, T0 + 75, "audit.log")
            clock.now += 10
            second = superset(double, cache, (T0 - 540, T0 + 80), window_end=T0 + 70)
        assert first == {f"{1:032x}", f"{2:032x}"}
        assert second == {f"{1:032x}", f"{2:032x}", f"{3:032x}"}

    def test_a_final_pass_does_not_reuse_what_a_younger_pass_kept(self) -> None:
        """A span that arrived after a provisional pass kept its stretch is seen by the final pass."""
        clock = Clock(T0 + 100)
        cache = SearchCache(1 << 20, clock)
        with TempoDouble() as double:
            superset(double, cache, (T0 - 550, T0 + 70), window_end=T0 + 60)
            searched(double)
            push(double, 1, T0 + 30, "audit.log")  # late: after the stretch was kept
            clock.now = T0 + 660  # the window is now 600 s old: settled
            found = superset(double, cache, (T0 - 550, T0 + 660), window_end=T0 + 60)
            assert searched(double) == [(T0 - 550, T0 + 60), (T0 + 60, T0 + 660)]
        assert found == {f"{1:032x}"}

    def test_memory_stays_within_the_bound(self) -> None:
        clock = Clock(T0 + 1000)
        cache = SearchCache(3 * (400 + 5 * ID_BYTES), clock)
        with TempoDouble() as double:
            for trace in range(1, 41):
                push(double, trace, T0 + trace * 10, "audit.log")
            for start in range(T0, T0 + 400, 50):  # eight stretches of about 5 traces each
                superset(double, cache, (start, start + 50), window_end=start + 50)
                assert cache.bytes <= cache.max_bytes
            searched(double)
            superset(double, cache, (T0, T0 + 50), window_end=T0 + 50)  # dropped long ago: asked again
            assert searched(double) == [(T0, T0 + 50)]


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[int, int, tuple[str, ...]]]:
    """Traces of a, b, c spans over 200 s, some in two parts up to 120 s apart."""
    pushes = []
    for trace in range(1, draw(st.integers(1, 12)) + 1):
        names = draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=4))
        at = T0 + draw(st.integers(0, 200))
        cut = draw(st.integers(1, len(names)))
        pushes.append((trace, at, tuple(names[:cut])))
        if names[cut:]:
            pushes.append((trace, at + draw(st.integers(-120, 120)), tuple(names[cut:])))
    return pushes


class TestWindowsAgree:
    """Consecutive windows with kept stretches find exactly what windows asking Tempo every time find."""

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(pushes=traffic(), every=st.sampled_from([10, 20, 30]))
    def test_same_violations(self, pushes: list[tuple[int, int, tuple[str, ...]]], every: int) -> None:
        with TempoDouble() as double:
            for trace, at, names in pushes:
                push(double, trace, at, *names)

            async def run(cache: SearchCache | None, clock: Clock) -> list[Any]:
                results = []
                async with TempoClient(TempoSettings(url=double.url), backoff=0.0) as client:
                    for start in range(T0, T0 + 240, every):
                        clock.now = start + every + 30  # each window judged 30 s after it ends
                        results.append(await evaluate_window(RULES, client, start, start + every, margin=150,
                                                             latest=clock.now, cache=cache))
                return results

            clock = Clock(T0)
            kept = asyncio.run(run(SearchCache(1 << 20, clock), clock))
            asked = asyncio.run(run(None, clock))
        for mine, theirs in zip(kept, asked, strict=True):
            assert theirs.outcomes[0].candidates <= mine.outcomes[0].candidates
            assert {v.trace_id for v in mine.violations} == {v.trace_id for v in theirs.violations}


class TestOnlyProvisionalPasses:
    """The daemon's final passes ask Tempo afresh: a part that arrived since is seen, however late."""

    def test_the_judge_hands_the_cache_to_provisional_passes_only(self, tmp_path: Any) -> None:
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir()
        (rules_dir / "r.yaml").write_text("rules:\n  - id: ab\n    condition: when { a and b } never { c }\n")
        with TempoDouble() as double:
            push(double, 1, T0 + 5, "a", "b", "c")
            store = f"sqlite:///{tmp_path / 's.db'}"
            settings = load_settings(daemon_kit.write_settings(tmp_path, tempo_url=double.url, store=store,
                                                    rules_dir=rules_dir))

            async def judged(idle: int | None) -> Any:
                daemon = await open_daemon(settings, clock=daemon_kit.Clock.at(T0 + 100))
                try:
                    judge = daemon.parts.judge
                    assert judge.search_cache is not None
                    # A kept stretch that says the margin search matched nothing at all.
                    judge.search_cache.superset = _nothing  # type: ignore[method-assign]
                    window = (datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 10, UTC))
                    return await judge._search_and_judge(RULES, window, window[1], idle, None)
                finally:
                    await daemon.close()

            provisional = asyncio.run(judged(idle=T0 * 10**9))
            final = asyncio.run(judged(idle=None))
        assert [] == provisional.violations  # judged with the kept answer
        assert [f"{1:032x}"] == [v.trace_id for v in final.violations]  # asked afresh


async def _nothing(*_args: Any, **_kwargs: Any) -> set[str]:
    return set()
