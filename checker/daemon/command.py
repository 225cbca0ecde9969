"""``betrace run``: the process around the daemon (settings, logging, exit codes)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from checker.daemon.service import Daemon, install_signals
from checker.errors import EXIT_FOUND, EXIT_INVALID, EXIT_OK, EXIT_SOURCE
from checker.log import configure

if TYPE_CHECKING:
    from checker.config import Settings
    from checker.daemon.evaluator import RunSummary



def run(settings: Settings, *, once: bool) -> int:
    """Serve until SIGTERM (exit 0), or with ``once`` evaluate what is due and exit."""
    configure(level=logging.getLevelNamesMapping()[settings.log_level.upper()])
    return asyncio.run(_run(settings, once=once))


async def _run(settings: Settings, *, once: bool) -> int:
    daemon = await Daemon.open(settings)
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
              + (f", {summary.incomplete} incomplete" if summary.incomplete else "")
              + (f", failed: {summary.failed}" if summary.failed else "")
              + (", busy (another worker holds it)" if summary.busy else ""), file=sys.stderr)
    if any(s.failed or s.incomplete for s in summaries):
        return EXIT_SOURCE
    return EXIT_FOUND if any(s.violations for s in summaries) else EXIT_OK
