"""Where the config becomes a daemon: every component built once, for ``run`` and ``backfill``.

The only module of the daemon that reads ``Settings`` (as arq's ``Worker`` is given its parts):
below it, each component takes the section it uses, so each can be built and tested alone.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from checker.daemon import backfill as backfilling
from checker.daemon.components import Components
from checker.daemon.judge import WindowJudge
from checker.daemon.metrics import Metrics
from checker.daemon.ruleset import LiveRules
from checker.daemon.runner import RuleRunner
from checker.daemon.service import Daemon, install_signals
from checker.daemon.vacuous import VacuousRules
from checker.daemon.windows import utcnow
from checker.errors import EXIT_FOUND, EXIT_INVALID, EXIT_OK, EXIT_SOURCE, UsageError
from checker.evidence.notary import Notary
from checker.log import configure
from checker.notify.dispatcher import Dispatcher
from checker.notify.policy import NotifyPolicy
from checker.notify.senders import sender_for
from checker.selftrace import tracer_for
from checker.signing import load_private
from checker.store import Store
from checker.tempo.client import TempoClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from datetime import datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from checker.config import Settings
    from checker.daemon.backfill import BackfillSummary
    from checker.daemon.runner import RunSummary


def notify_policy(settings: Settings) -> NotifyPolicy:
    """The config's routes, ``default_notifiers`` and ``delivery.max_listed``."""
    return NotifyPolicy(settings.notifiers, tuple(settings.default_notifiers), settings.delivery.max_listed)


def build_dispatcher(settings: Settings, store: Store, metrics: Metrics, *,
                     clock: Callable[[], datetime] = utcnow) -> Dispatcher:
    """A sender per configured route, and the delivery section."""
    template = settings.trace_url_template
    senders = {name: sender_for(route, template) for name, route in settings.notifiers.items()}
    return Dispatcher(store, senders, settings.delivery, metrics, clock=clock)


def signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """``evidence.signing_key``, loaded: read once, before the store opens, so a bad key stops a start.

    :raises UsageError: naming the key file, when it cannot be read or is not an Ed25519 key.
    """
    path = settings.evidence.signing_key
    return load_private(path) if path is not None else None


def notary(settings: Settings, store: Store, key: Ed25519PrivateKey | None, *,
           clock: Callable[[], datetime] = utcnow) -> Notary | None:
    """The signer of ledger checkpoints, with the ``signing_key`` loaded; None without a key."""
    if key is None:
        return None
    evidence = settings.evidence
    url = evidence.witness_url.get_secret_value() if evidence.witness_url is not None else None
    return Notary(store, key, witness_file=evidence.witness_file, witness_url=url,
                  retention=evidence.retention, clock=clock)


async def build(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> Components:
    """Open the store (migrating it) and wire every part; a missing rules_dir is an error."""
    if not settings.rules_dir.is_dir():
        raise UsageError(f"rules_dir {settings.rules_dir} is not a directory",
                         hint="set rules_dir in the config or BETRACE_RULES_DIR")
    key = signing_key(settings)
    store = await asyncio.to_thread(Store.open, settings.store)
    checkpoints: dict[str, datetime] = {}
    settled: dict[str, datetime] = {}
    metrics = Metrics(checkpoints.copy, settled.copy)
    tracer, flush_spans = tracer_for(
        settings.tracing.otlp_endpoint.get_secret_value() if settings.tracing.otlp_endpoint else None,
        service=settings.tracing.service_name, headers=settings.tracing.headers)
    tempo = TempoClient(settings.tempo, observer=metrics.tempo_request, tracer=tracer)
    policy = notify_policy(settings)
    dispatcher = build_dispatcher(settings, store, metrics, clock=clock)
    judge = WindowJudge(store, tempo, policy, metrics, tempo_settings=settings.tempo,
                        timeout=settings.schedule.evaluation_timeout,
                        trace_idle=settings.schedule.trace_idle, clock=clock,
                        on_notify=dispatcher.wake.set,
                        vacuous=VacuousRules(settings.schedule.vacuous_after), tracer=tracer)
    runner = RuleRunner(judge, store, settings.schedule, query_end_cutoff=settings.tempo.query_end_cutoff,
                        checkpoints=checkpoints, settled=settled, clock=clock)
    return Components(store, tempo, metrics, LiveRules(settings.rules_dir), policy, dispatcher, judge, runner,
                      notary(settings, store, key, clock=clock), flush_spans)


@asynccontextmanager
async def components(settings: Settings, *,
                     clock: Callable[[], datetime] = utcnow) -> AsyncIterator[Components]:
    """``build``, closed on the way out whatever happened."""
    parts = await build(settings, clock=clock)
    try:
        yield parts
    finally:
        await parts.close()


async def open_daemon(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> Daemon:
    """A daemon with its rules loaded; ``await daemon.close()`` releases it."""
    daemon = Daemon(await build(settings, clock=clock), settings.schedule, settings.http,
                    tempo_url=settings.tempo.url, checkpoint_every=settings.evidence.checkpoint_every)
    await daemon.reload()
    return daemon


def run(settings: Settings, *, once: bool) -> int:
    """Serve until SIGTERM (exit 0), or with ``once`` evaluate what is due and exit."""
    configure(level=logging.getLevelNamesMapping()[settings.log_level.upper()])
    return asyncio.run(_run(settings, once=once))


async def _run(settings: Settings, *, once: bool) -> int:
    daemon = await open_daemon(settings)
    try:
        if once:
            code = once_exit_code(await daemon.run_once())
            # Broken rule files are a usage error, as for scan (the valid rules still ran).
            return EXIT_INVALID if daemon.live.errors and code != EXIT_SOURCE else code
        stop = asyncio.Event()
        install_signals(daemon, stop)
        await daemon.serve(stop)
        return EXIT_OK
    finally:
        await daemon.close()


def once_exit_code(summaries: list[RunSummary]) -> int:
    """As ``scan``: 3 when a window failed or stayed incomplete, else 1 when violations were found."""
    for summary in summaries:
        print(f"{summary.rule_id}: {summary.windows} windows, {summary.violations} new violations"
              + (f", {summary.settled} windows settled ({summary.retracted} retracted)"
                 if summary.settled else "")
              + (f", {summary.incomplete} incomplete" if summary.incomplete else "")
              + (f", failed: {summary.failed}" if summary.failed else "")
              + (", busy (another worker holds it)" if summary.busy else ""), file=sys.stderr)
    if any(s.failed or s.incomplete for s in summaries):
        return EXIT_SOURCE
    return EXIT_FOUND if any(s.violations for s in summaries) else EXIT_OK


async def backfill(settings: Settings, rule_id: str, start: datetime, end: datetime, *,
                   notify: bool = False, progress: bool = False) -> BackfillSummary:
    """``betrace backfill``: the daemon's parts, without its schedule, over a past period."""
    backfilling.check_period_end(end, settings.tempo.query_end_cutoff)
    async with components(settings) as parts:
        await asyncio.to_thread(parts.live.reload)
        return await backfilling.backfill(parts, settings.schedule, rule_id, (start, end),
                                          notify=notify, progress=progress)
