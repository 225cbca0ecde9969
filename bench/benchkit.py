"""Shared parts of the Tempo benchmarks: the double in its own process, a live daemon driven
by a settable clock, deterministic demo traffic, and what a phase cost the measuring process.

Why a separate process for the double: it holds every pushed trace and evaluates every search
in Python, so in-process it would dominate the CPU time and the peak RSS that the benchmarks
report for the checker.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from tempo_double import Request, TempoDouble  # noqa: E402

from checker.daemon.factory import open_daemon  # noqa: E402
from checker.demo.traffic import Template, instantiate  # noqa: E402

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable, Iterator
    from multiprocessing.connection import Connection
    from multiprocessing.sharedctypes import Synchronized

    from daemon_kit import Clock

    from checker.config import Settings

Push = dict[str, Any]  # one OTLP/JSON ExportTraceServiceRequest


# ============================================================ the double, elsewhere


class RemoteDouble:
    """A ``TempoDouble`` serving from a forked child process, driven over a pipe.

    ``load`` is called in the child, so a large dataset is built there and never resides in
    the measuring process. ``now`` is the double's clock (unix seconds), settable later.
    """

    def __init__(self, load: Callable[[], Iterable[Push]] | None = None, *, now: float,
                 **options: Any) -> None:
        context = multiprocessing.get_context("fork")
        self._clock: Synchronized[float] = context.Value("d", now, lock=False)
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self._clock, load, options),
                                        name="tempo-double", daemon=True)
        self._process.start()
        self.url: str = self._conn.recv()

    def set_now(self, now: float) -> None:
        """Move the double's clock (the daemon's clock must agree with it)."""
        self._clock.value = now

    def push(self, pushes: list[Push]) -> None:
        """Ingest ``pushes``; returns once the double stored them."""
        self._call("push", pushes)

    def requests(self) -> list[Request]:
        """The double's request log so far."""
        found: list[Request] = self._call("requests")
        return found

    def stored_bytes(self) -> int:
        """The stored size of everything pushed (``TempoDouble.stored_bytes``)."""
        found: int = self._call("stored_bytes")
        return found

    def _call(self, command: str, argument: Any = None) -> Any:
        self._conn.send((command, argument))
        return self._conn.recv()

    def close(self) -> None:
        """Stop the child."""
        if self._process.is_alive():
            self._conn.send(("stop", None))
            self._process.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _serve(conn: Connection, clock: Synchronized[float], load: Callable[[], Iterable[Push]] | None,
           options: dict[str, Any]) -> None:
    """The child: serve HTTP in threads, answer the pipe's commands until ``stop``."""
    with TempoDouble(now=lambda: clock.value, **options) as double:
        for push in load() if load is not None else ():
            double.push(push)
        conn.send(double.url)
        while True:
            command, argument = conn.recv()
            if command == "stop":
                return
            if command == "push":
                for push in argument:
                    double.push(push)
                conn.send(None)
            elif command == "requests":
                conn.send(double.requests)
            elif command == "stored_bytes":
                conn.send(double.stored_bytes)


# ============================================================ what a phase cost


@dataclass
class Usage:
    """Wall and CPU seconds and peak RSS of this process over one phase."""

    wall: float = 0.0
    cpu: float = 0.0
    peak_rss: int = 0  # bytes
    rss_source: str = ""


class Meter:
    """Measures a phase: ``with Meter() as meter: ...`` then ``meter.usage``.

    Peak RSS is the kernel's high-water mark (VmHWM), reset at the start of the phase by
    writing 5 to /proc/self/clear_refs, so each phase gets its own peak; where that is not
    possible it is getrusage's lifetime peak (ru_maxrss), which only ever grows.
    """

    def __init__(self) -> None:
        self.usage = Usage()
        self._wall = self._cpu = 0.0

    def __enter__(self) -> Self:
        self.usage.rss_source = "VmHWM, reset per phase" if _reset_peak() else "ru_maxrss, lifetime"
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.usage.wall = time.perf_counter() - self._wall
        self.usage.cpu = time.process_time() - self._cpu
        self.usage.peak_rss = _peak_rss(self.usage.rss_source.startswith("VmHWM"))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss(proc: bool) -> int:
    if proc:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ============================================================ a live daemon


async def run_daemon(settings: Settings, clock: Clock, *, step: float, until: float,
                     before_run: Callable[[float], None]) -> int:
    """The daemon in-process, through its public entry points only (``open_daemon``,
    ``run_once``, ``close``), so that it keeps measuring whatever the daemon does inside:
    ``run_once`` at each ``step`` seconds of the settable ``clock`` until ``until`` (unix
    seconds), ``before_run(now)`` first delivering the traffic that arrived by then.
    Returns the number of runs.
    """
    daemon = await open_daemon(settings, clock=clock)
    runs = 0
    try:
        while clock.now.timestamp() < until:
            before_run(clock.now.timestamp())
            await daemon.run_once()
            runs += 1
            clock.advance(seconds=step)
    finally:
        await daemon.close()
    return runs


# ============================================================ demo traffic


def with_fresh_ids(request: Push, rng: random.Random) -> Push:
    """``request`` (from ``instantiate``) with trace and span IDs drawn from ``rng``, so that
    a benchmark is the same from one run to the next (``instantiate`` uses ``secrets``)."""
    ids: dict[str, str] = {}

    def fresh(old: str) -> str:
        return ids.setdefault(old, f"{rng.getrandbits(len(old) * 4):0{len(old)}x}")

    for part in request["resourceSpans"]:
        for scope in part["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = fresh(span[key])
    return request


def demo_traffic(passing: list[Template], violating: list[Template], *, rng: random.Random, start: float,
                 rate: float, seconds: float, share: float) -> Iterator[tuple[float, Push, bool]]:
    """(start second, OTLP request, from a violating template) of ``rate`` demo traces a second
    for ``seconds``, a ``share`` of them picked from the ``violating`` templates."""
    for i in range(int(rate * seconds)):
        at = start + i / rate
        bad = rng.random() < share
        request = instantiate(rng.choice(violating if bad else passing), int(at * 1e9))
        yield at, with_fresh_ids(request, rng), bad
