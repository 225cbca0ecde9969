"""Async client for Grafana Tempo's HTTP API: complete searches and trace fetches.

What Tempo does that a client must undo (shared/tempo.md): search returns at most
``limit`` traces, an arbitrary subset when more match, so a full page is never trusted and
the window is split; trace IDs lose their leading zeros; ``start``/``end`` are whole
seconds; windows are capped (168h); the newest ``query_end_cutoff`` is silently clamped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
import structlog

from checker import __version__
from checker.errors import TraceSourceError
from checker.redact import mask_url
from checker.traces.otlp import DecodeError, decode_request, group_traces

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from checker.traces.model import Trace

T = TypeVar("T")
log = structlog.get_logger(__name__)
MAX_WINDOW_SECONDS = 168 * 3600
MAX_SEARCH_LIMIT = 262_144  # Tempo's default max_result_limit
SPLIT_WAYS = 4
HEX_ID = re.compile(r"[0-9a-fA-F]{1,32}")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class TempoError(TraceSourceError):
    """Tempo could not be reached or answered something unusable.

    ``retryable`` says whether trying again later may help.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 retryable: bool = False, hint: str | None = None,
                 retry_after: float | None = None) -> None:
        detail = f"{url}" + (f" answered {status}" if status is not None else "")
        super().__init__(f"{detail}: {message}", hint=hint)
        self.url = url
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class TempoConfig:
    """Connection settings; secrets never appear in logs or errors."""

    url: str = "http://localhost:3200"
    tenant: str | None = None
    timeout: float = 30.0
    search_limit: int = 1000
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 10.0
    concurrency: int = 8
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    verify: bool | str = True


@dataclass(frozen=True)
class FetchedTrace:
    """A trace by ID; ``trace`` None when Tempo does not have it (any more)."""

    trace_id: str
    trace: Trace | None
    partial: str | None = None  # Tempo's message when it returned only part of the trace


@dataclass
class ClientStats:
    """Requests made, for the summary line and the benchmark."""

    searches: int = 0
    fetches: int = 0
    bytes_read: int = 0
    retries: int = 0


class TempoClient:
    """One connection pool per process; use ``async with TempoClient(config) as tempo``."""

    def __init__(self, config: TempoConfig, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 observer: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.stats = ClientStats()
        # Called with (route, status or error kind) for every request: the daemon's metrics.
        self._observer = observer
        self.last_answer: float | None = None  # time.time() of Tempo's last HTTP answer
        headers = {"Accept": "application/json", "User-Agent": f"betrace-checker/{__version__}",
                   **config.headers}
        if config.tenant:
            headers["X-Scope-OrgID"] = config.tenant
        if config.bearer_token:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        auth = (config.username, config.password or "") if config.username else None
        self._base_url = config.url.rstrip("/")
        self._shown_url = mask_url(self._base_url)  # for messages: never a password
        self._http = httpx.AsyncClient(
            base_url=self._base_url, headers=headers, auth=auth, timeout=config.timeout,
            verify=config.verify, transport=transport,
            limits=httpx.Limits(max_connections=config.concurrency * 2),
        )
        self._fetch_slots = asyncio.Semaphore(config.concurrency)
        self._v2_missing = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # ----------------------------------------------------------------- requests

    async def _get_json(self, path: str, params: dict[str, Any] | None = None,
                        *, ok: frozenset[int] = frozenset({200})) -> tuple[int, Any]:
        """GET a JSON answer, retrying 429, 5xx, timeouts, connection errors and garbage.

        Garbage (a 200 that is not JSON) is retried like a 5xx, since proxies truncate
        bodies; other 4xx are final. Returns the status and the body (None when empty).
        """
        url = f"{self._shown_url}{path}"
        attempt = 0
        while True:
            try:
                return await self._attempt(path, params, ok, url)
            except TempoError as error:
                if not error.retryable or attempt >= self.config.retries:
                    raise
                delay = self._backoff(attempt, error)
                status = error.status
            attempt += 1
            self.stats.retries += 1
            log.warning("tempo.retry", url=url, status=status, attempt=attempt,
                        delay=round(delay, 3))
            await asyncio.sleep(delay)

    async def _attempt(self, path: str, params: dict[str, Any] | None, ok: frozenset[int],
                       url: str) -> tuple[int, Any]:
        response = await self._get(path, params, url)
        self.stats.bytes_read += len(response.content)
        if response.status_code not in ok:
            raise _status_error(response, url, params)
        if response.status_code != 200 or not response.content:
            return response.status_code, None
        try:
            return response.status_code, json.loads(response.content)
        except ValueError:
            raise TempoError("answered with something that is not JSON", url=url,
                             status=response.status_code, retryable=True) from None

    async def _get(self, path: str, params: dict[str, Any] | None, url: str) -> httpx.Response:
        """One GET, observed; transport failures become retryable ``TempoError``."""
        route = _route(path)
        try:
            response = await self._http.get(path, params=params)
        except httpx.TimeoutException:
            self._observe(route, "timeout")
            raise TempoError(f"no answer within {self.config.timeout:g}s", url=url,
                             retryable=True, hint="raise the Tempo timeout") from None
        except httpx.TransportError as exc:
            self._observe(route, "connection_error")
            raise TempoError(f"cannot connect: {type(exc).__name__}", url=url, retryable=True,
                             hint="check the Tempo URL and that Tempo is running") from None
        self.last_answer = time.time()
        self._observe(route, str(response.status_code))
        return response

    def _observe(self, route: str, status: str) -> None:
        if self._observer is not None:
            self._observer(route, status)

    async def ping(self) -> None:
        """Ask Tempo's ``/api/echo`` once, without retries; ``TempoError`` unless it answers 200."""
        url = f"{self._shown_url}/api/echo"
        response = await self._get("/api/echo", None, url)
        if response.status_code != 200:
            raise _status_error(response, url, None)

    def _backoff(self, attempt: int, error: TempoError) -> float:
        """Exponential backoff with full jitter; a 429's Retry-After wins when longer."""
        ceiling = min(self.config.max_backoff, self.config.backoff * 2**attempt)
        delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
        if error.retry_after is not None:
            return max(delay, min(error.retry_after, self.config.max_backoff))
        return delay

    # ------------------------------------------------------------------- search

    async def search(self, query: str, start: int, end: int, limit: int) -> tuple[set[str], bool]:
        """One search page: padded trace IDs, and whether Tempo ran every job."""
        self.stats.searches += 1
        params = {"q": query, "start": start, "end": end, "limit": limit, "spss": 1}
        _, body = await self._get_json("/api/search", params)
        url = f"{self._shown_url}/api/search"
        if not isinstance(body, dict) or not isinstance(body.get("traces", []), list):
            raise TempoError("search answer is not Tempo's JSON", url=url, retryable=True)
        ids = set()
        for item in body.get("traces", []):
            raw = item.get("traceID") if isinstance(item, dict) else None
            if not isinstance(raw, str) or not HEX_ID.fullmatch(raw):
                raise TempoError(f"search answer has a bad traceID {raw!r}", url=url)
            ids.add(raw.lower().zfill(32))
        metrics = body.get("metrics") or {}
        complete = metrics.get("completedJobs", 0) == metrics.get("totalJobs", 0)
        return ids, complete

    async def search_all(self, query: str, start: int, end: int) -> set[str]:
        """Every trace matching ``query`` whose time range overlaps [start, end] (seconds).

        A page that reaches the limit, or that Tempo did not finish, is never trusted:
        the window is cut in four and each part searched, down to one second, where the
        limit is raised instead.
        """
        found: set[str] = set()
        for chunk_start in range(start, end, MAX_WINDOW_SECONDS):
            chunk_end = min(end, chunk_start + MAX_WINDOW_SECONDS)
            found |= await self._enumerate(query, chunk_start, chunk_end)
        return found

    async def _enumerate(self, query: str, start: int, end: int) -> set[str]:
        limit = self.config.search_limit
        ids, complete = await self.search(query, start, end, limit)
        if len(ids) < limit and complete:
            return ids
        if end - start <= 1:
            return await self._dense_second(query, start, end, limit)
        # Four parts, not two: a window holding exactly twice the limit would fill both halves.
        edges = sorted({start + (end - start) * i // SPLIT_WAYS for i in range(SPLIT_WAYS + 1)})
        parts = await gather_strict(*(self._enumerate(query, a, b)
                                      for a, b in itertools.pairwise(edges)))
        return set().union(*parts)

    async def _dense_second(self, query: str, start: int, end: int, limit: int) -> set[str]:
        """Seconds cannot be split further: raise the limit until the page is not full."""
        while limit < MAX_SEARCH_LIMIT:
            limit = min(MAX_SEARCH_LIMIT, limit * 4)
            ids, complete = await self.search(query, start, end, limit)
            if len(ids) < limit and complete:
                return ids
        url = f"{self._shown_url}/api/search"
        raise TempoError(f"more than {MAX_SEARCH_LIMIT} traces, or no complete answer, in the "
                         f"1-second window {start}..{end} for {query}", url=url, retryable=True)

    # -------------------------------------------------------------------- fetch

    async def fetch(self, trace_id: str) -> FetchedTrace:
        """A whole trace by ID (v2 API, falling back to v1 for older Tempo)."""
        async with self._fetch_slots:
            self.stats.fetches += 1
            if not self._v2_missing:
                status, body = await self._get_json(f"/api/v2/traces/{trace_id}",
                                                    ok=frozenset({200, 404}))
                if status == 200:
                    return self._decode(trace_id, body, f"/api/v2/traces/{trace_id}")
                self._v2_missing = True
                log.info("tempo.v1_fallback", reason="v2 trace API answered 404")
            status, body = await self._get_json(f"/api/traces/{trace_id}", ok=frozenset({200, 404}))
            if status == 404:
                return FetchedTrace(trace_id, None)
            return self._decode(trace_id, body, f"/api/traces/{trace_id}")

    def _decode(self, trace_id: str, body: Any, path: str) -> FetchedTrace:
        url = f"{self._shown_url}{path}"
        if not isinstance(body, dict):
            raise TempoError("trace answer is not a JSON object", url=url)
        container = body.get("trace", body)
        partial = str(body.get("message") or "partial") if body.get("status") == "PARTIAL" else None
        if not isinstance(container, dict) or not (container.get("resourceSpans")
                                                   or container.get("batches")):
            return FetchedTrace(trace_id, None, partial)
        try:
            spans = [s for s in decode_request(container) if s.trace_id == trace_id]
        except DecodeError as err:
            raise TempoError(f"trace is not valid OTLP: {err}", url=url) from None
        traces = list(group_traces(spans))
        return FetchedTrace(trace_id, traces[0] if traces else None, partial)


async def gather_strict(*awaitables: Awaitable[T]) -> list[T]:
    """Like ``asyncio.gather``, but the first failure cancels the rest and is raised as is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coroutine(a)) for a in awaitables]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [task.result() for task in tasks]


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


def _route(path: str) -> str:
    """A low-cardinality name for a request path (trace IDs left out), for metrics."""
    if path.startswith("/api/v2/traces/"):
        return "trace_v2"
    if path.startswith("/api/traces/"):
        return "trace"
    return path.removeprefix("/api/").strip("/") or "root"


def _status_error(response: httpx.Response, url: str, params: dict[str, Any] | None) -> TempoError:
    status = response.status_code
    text = response.text.strip()[:500]
    if status in RETRY_STATUSES:
        retry_after = response.headers.get("Retry-After", "")
        return TempoError(text or "server error", url=url, status=status, retryable=True,
                          retry_after=float(retry_after) if retry_after.isdigit() else None)
    hint = None
    if status == 400 and params and "q" in params:
        hint = f"query was: {params['q']}"
    elif status == 401:
        hint = "set the tenant (X-Scope-OrgID) or credentials"
    return TempoError(text or "request refused", url=url, status=status, hint=hint)
