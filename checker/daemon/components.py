"""The daemon's parts, built once by ``factory`` and shared by ``run`` and ``backfill``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from checker.daemon.judge import WindowJudge
    from checker.daemon.metrics import Metrics
    from checker.daemon.ruleset import LiveRules
    from checker.daemon.runner import RuleRunner
    from checker.evidence.notary import Notary
    from checker.notify.dispatcher import Dispatcher
    from checker.notify.policy import NotifyPolicy
    from checker.store import Store
    from checker.tempo.client import TempoClient


@dataclass
class Components:
    """Each part takes only the config section it uses; ``close`` releases what they hold open."""

    store: Store
    tempo: TempoClient
    metrics: Metrics
    live: LiveRules
    policy: NotifyPolicy
    dispatcher: Dispatcher
    judge: WindowJudge
    runner: RuleRunner
    notary: Notary | None = None  # signs ledger checkpoints (evidence.signing_key)
    flush_spans: Callable[[], None] = lambda: None  # exports the checker's own spans left (tracing.*)

    async def close(self) -> None:
        """Release Tempo connections and the store; send the spans still batched."""
        await self.tempo.aclose()
        await asyncio.to_thread(self.store.close)
        await asyncio.to_thread(self.flush_spans)
