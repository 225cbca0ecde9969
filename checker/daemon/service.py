"""The daemon: rules on their schedules, hot reload, health and metrics, clean shutdown."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

import structlog
import watchfiles
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from checker.daemon.http import Check, HttpServer, application
from checker.daemon.windows import RuleSchedule, schedule_of
from checker.errors import CheckerError
from checker.redact import mask_url

if TYPE_CHECKING:
    from checker.config import HttpSettings, ScheduleSettings
    from checker.daemon.components import Components
    from checker.daemon.ruleset import Reload
    from checker.daemon.runner import RunSummary
    from checker.rules.rule import Rule

log = structlog.get_logger(__name__)
# How long a due rule waits for the others firing at the same moment, to be evaluated with them.
GATHER_SECONDS = 0.2
CHECKPOINT_JOB = "#ledger-checkpoint"  # a rule id cannot start with '#': no rule's job has this id


class Daemon:
    """Built by ``factory.open_daemon``; then ``run_once()`` or ``serve(stop)``, and ``close()``."""

    def __init__(self, parts: Components, schedule: ScheduleSettings, http: HttpSettings, *,
                 tempo_url: str, checkpoint_every: timedelta = timedelta(hours=1)) -> None:
        self.parts = parts
        self.store = parts.store
        self.live = parts.live
        self.metrics = parts.metrics
        self.tempo = parts.tempo
        self.dispatcher = parts.dispatcher
        self.runner = parts.runner
        self.schedule = schedule
        self.http_settings = http
        self.tempo_url = tempo_url
        self.checkpoint_every = checkpoint_every
        self.schedules: dict[str, RuleSchedule] = {}
        self.scheduler: AsyncIOScheduler | None = None
        self.http: HttpServer | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._reloading = asyncio.Lock()
        self._due: set[str] = set()  # rules whose trigger fired, waiting for the next group run
        self._busy: set[str] = set()  # rules in a run of this process
        # Rules that fired while busy: due again when their run ends (it fixed its "now" at its
        # start, so the windows that became due meanwhile would wait a whole period, or a cron day).
        self._fired_while_busy: set[str] = set()

    async def close(self) -> None:
        """Release Tempo connections and the store."""
        await self.parts.close()

    # ----------------------------------------------------------------- rules

    async def reload(self) -> Reload:
        """Re-read rules_dir; (re)schedule, keep or drop jobs.

        The store is not touched here: a rule version is recorded before its first window is
        committed, so a store outage during a reload cannot leave a rule half-applied.
        """
        async with self._reloading:
            result = await asyncio.to_thread(self.live.reload)
            self._log(result)
            self._apply(result)
            self.metrics.rules_loaded.set(len(self.live.rules))
            self.metrics.rule_load_errors.set(len(result.errors))
            self.metrics.reloads.labels("errors" if result.errors else "ok").inc()
            return result

    def _log(self, result: Reload) -> None:
        for error in result.errors:
            log.error("rules.error", error=str(error))
        for warning in result.warnings:
            log.warning("rules.warning", warning=str(warning))
        for path in result.kept:
            log.warning("rules.kept_last_good", file=str(path),
                        detail="the file has errors; its rules keep their last good version")
        for rule in [*result.added, *result.changed]:
            log.info("rule.added" if rule in result.added else "rule.changed", rule=rule.id,
                     version=rule.version[:12], source=str(rule.location))
            routes = self.parts.policy.routes_of(rule)
            unknown = [name for name in routes if name not in self.parts.policy.routes]
            if unknown:
                log.error("rule.unknown_notifiers", rule=rule.id, routes=unknown,
                          detail="not in the config's notifiers; these routes are skipped")
        for rule_id in result.removed:
            log.info("rule.removed", rule=rule_id)

    def _apply(self, result: Reload) -> None:
        for rule_id in result.removed:
            self.schedules.pop(rule_id, None)
            self.runner.forget(rule_id)
            if self.scheduler and self.scheduler.get_job(rule_id):
                self.scheduler.remove_job(rule_id)
        for rule in [*result.added, *result.changed]:
            schedule = schedule_of(rule, self.schedule)
            if self.schedules.get(rule.id) != schedule:
                self.schedules[rule.id] = schedule
                if self.scheduler:
                    self._schedule(rule.id, schedule)

    def _schedule(self, rule_id: str, schedule: RuleSchedule) -> None:
        """Schedule the rule's trigger, on the grid of its period: rules alike fire together.

        A new rule is due at once as well.
        """
        assert self.scheduler is not None  # noqa: S101
        self.scheduler.add_job(
            self._tick, schedule.trigger(), args=[rule_id], id=rule_id, name=rule_id,
            replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=None)
        self._mark_due(rule_id)

    # ----------------------------------------------------------------- running

    async def run_rule(self, rule: Rule) -> RunSummary:
        """One run of one rule."""
        [summary] = await self.run_rules([rule])
        return summary

    async def run_rules(self, rules: list[Rule], *, tail: bool = False) -> list[RunSummary]:
        """One run of these rules, grouped (``RuleRunner.run_rules``)."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        ids = {rule.id for rule in rules}
        self._busy |= ids
        try:
            return await self.runner.run_rules([(rule, self.schedules[rule.id]) for rule in rules],
                                               self.live.rules.get, tail=tail)
        finally:
            self._busy -= ids
            if task is not None:
                self._running.discard(task)
            for rule_id in sorted(ids & self._fired_while_busy):
                self._fired_while_busy.discard(rule_id)
                self._mark_due(rule_id)

    async def _tick(self, rule_id: str) -> None:
        """A coroutine, so that APScheduler runs it on the event loop (a function goes to a thread)."""
        self._mark_due(rule_id)

    def _mark_due(self, rule_id: str) -> None:
        """The rule is due: it joins the next group run.

        That run starts after a short wait that gathers the rules firing at the same moment,
        plus a random delay up to ``jitter`` (spreading the load on Tempo).
        """
        if self.runner.stopping or rule_id not in self.schedules:
            return
        if rule_id in self._busy:
            self._fired_while_busy.add(rule_id)  # due again when that run ends
            return
        first = not self._due
        self._due.add(rule_id)
        if first:
            delay = GATHER_SECONDS + random.uniform(0, self.schedules[rule_id].spread(self.schedule.jitter))  # noqa: S311
            task = asyncio.get_running_loop().create_task(self._run_due(delay))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_due(self, delay: float) -> None:
        await asyncio.sleep(delay)
        due, self._due = self._due, set()
        self._fired_while_busy |= due & self._busy
        rules = [rule for rule_id in sorted(due) if (rule := self.live.rules.get(rule_id)) is not None
                 and rule_id not in self._busy]
        if rules and not self.runner.stopping:
            await self.run_rules(rules)

    async def run_once(self) -> list[RunSummary]:
        """Every due window of every rule, once (grouped), then one outbox pass.

        No trigger follows a ``run --once``, so it evaluates up to ``now - evaluation_delay``, the
        last window short of the grid included.
        """
        summaries = await self.run_rules(list(self.live.rules.values()), tail=True)
        await self.dispatcher.drain()
        await self.sign_checkpoint("once")
        return summaries

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: schedule, watch rules_dir, answer HTTP, then shut down."""
        self.http = HttpServer(application(self.metrics.registry, self.readiness_checks()),
                               self.http_settings.host, self.http_settings.port)
        await self.http.start()
        log.info("daemon.started", listen=f"{self.http_settings.host}:{self.http.port}",
                 rules=len(self.live.rules), store=self.store.url, tempo=mask_url(self.tempo_url))
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        for rule_id, schedule in self.schedules.items():
            self._schedule(rule_id, schedule)
        if self.parts.notary is not None:
            every = IntervalTrigger(seconds=self.checkpoint_every.total_seconds())
            self.scheduler.add_job(self.sign_checkpoint, every, args=["periodic"], id=CHECKPOINT_JOB,
                                   name=CHECKPOINT_JOB, coalesce=True, max_instances=1,
                                   misfire_grace_time=None)
        self.scheduler.start()
        watcher = asyncio.create_task(self._watch(stop))
        dispatching = asyncio.create_task(self.dispatcher.run(stop))
        try:
            await stop.wait()
        finally:
            await self._shutdown(watcher, dispatching)

    async def sign_checkpoint(self, kind: str) -> None:
        """Sign the ledger head (``evidence.signing_key``); a failure is logged, never fatal."""
        if self.parts.notary is None:
            return
        try:
            await self.parts.notary.checkpoint(kind)
        except Exception:  # the store may be down; the next checkpoint covers these records too
            log.exception("evidence.checkpoint_failed", kind=kind)

    async def _watch(self, stop: asyncio.Event) -> None:
        async for changes in watchfiles.awatch(self.live.directory, stop_event=stop,
                                               recursive=True):
            log.info("rules.changed", files=sorted({path for _, path in changes}))
            try:
                await self.reload()
            except Exception:  # the watcher must outlive any one reload; SIGHUP retries
                log.exception("rules.reload_failed")

    async def _shutdown(self, watcher: asyncio.Task[None], dispatching: asyncio.Task[None]) -> None:
        """Stop scheduling, let running evaluations finish their window (bounded), close."""
        grace = self.schedule.shutdown_grace.total_seconds()
        log.info("daemon.stopping", running=len(self._running), grace_seconds=grace)
        self.runner.stop()
        if self.scheduler is not None:
            self.scheduler.pause()  # shutting the scheduler down now would cancel running jobs
        watcher.cancel()
        if self._running:
            _done, pending = await asyncio.wait(set(self._running), timeout=grace)
            for task in pending:
                log.warning("daemon.evaluation_cancelled", task=task.get_name(),
                            detail="shutdown_grace passed; its window will be evaluated again")
                task.cancel()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        # The dispatcher ends after its current pass; what it has not sent stays in the outbox.
        _done, unfinished = await asyncio.wait({dispatching}, timeout=grace)
        for task in unfinished:
            task.cancel()
        # Let the cancelled deliveries unwind (release their locks) before the store closes.
        await asyncio.gather(*unfinished, return_exceptions=True)
        await self.sign_checkpoint("shutdown")
        if self.http is not None:
            await self.http.stop()
        log.info("daemon.stopped")

    # ----------------------------------------------------------------- health

    def readiness_checks(self) -> list[Check]:
        """Rules loaded, store reachable, Tempo answered recently (asked when it has not)."""

        async def rules() -> None:
            if not self.live.rules:
                raise CheckerError(f"no rules loaded from {self.live.directory} "
                                   f"({len(self.live.errors)} errors)")

        async def store() -> None:
            await asyncio.to_thread(self.store.ping)

        async def tempo() -> None:
            stale = self.http_settings.tempo_stale_after.total_seconds()
            last = self.tempo.last_answer
            if last is None or time.time() - last > stale:
                await self.tempo.ping()

        return [Check("rules", rules), Check("store", store), Check("tempo", tempo)]


def install_signals(daemon: Daemon, stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT stop the daemon; SIGHUP reloads rules_dir."""
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[Reload]] = set()

    def reload() -> None:
        task = loop.create_task(daemon.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
