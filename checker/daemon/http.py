"""``/healthz``, ``/readyz`` and ``/metrics`` on the daemon's own event loop (aiohttp)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from checker.errors import CheckerError, UsageError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import CollectorRegistry

CHECK_TIMEOUT = 5.0
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Check:
    """One readiness condition: ``run`` raises ``CheckerError`` (or times out) when unmet."""

    name: str
    run: Callable[[], Awaitable[None]]


async def _outcome(check: Check) -> str:
    """``ok``, or the first line of why not; a check that breaks is not ready, never a 500."""
    try:
        await asyncio.wait_for(check.run(), CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g}s"
    except CheckerError as err:
        return str(err).splitlines()[0]
    except Exception as err:  # noqa: BLE001 - readiness reports every failure, whatever its kind
        log.warning("readiness.check_failed", check=check.name, error=type(err).__name__)
        return f"check failed: {type(err).__name__}"
    return "ok"


def application(registry: CollectorRegistry, checks: list[Check]) -> web.Application:
    """The routes; readiness answers 503 with every failing check named."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "time": time.time()})

    async def readyz(_request: web.Request) -> web.Response:
        results = dict(zip((c.name for c in checks),
                           await asyncio.gather(*(_outcome(c) for c in checks)), strict=True))
        ready = all(result == "ok" for result in results.values())
        return web.json_response({"status": "ready" if ready else "not ready", "checks": results},
                                 status=200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        # Prometheus asks for OpenMetrics, the only format with exemplars (violations' trace IDs).
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encode(registry))
        response.headers["Content-Type"] = content_type
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HttpServer:
    """Started and stopped with the daemon; ``port`` is the bound one (``:0`` picks one)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host, self._port = host, port
        self.port = port

    async def start(self) -> None:
        """Bind; a taken port is a ``CheckerError`` naming the address."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            raise UsageError(f"cannot listen on {self._host}:{self._port}: {err.strerror}",
                               hint="set http.listen (BETRACE_HTTP__LISTEN) to a free address") from None
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listener and open connections."""
        await self._runner.cleanup()
