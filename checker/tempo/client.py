"""Async client for Grafana Tempo's HTTP API: complete searches and trace fetches.

What Tempo does that a client must undo (shared/tempo.md): search returns at most
``limit`` traces, an arbitrary subset when more match, so a full page is never trusted and
the window is split; trace IDs lose their leading zeros; ``start``/``end`` are whole
seconds; windows are capped (168h); the newest ``query_end_cutoff`` is silently clamped.

What anything in front of Tempo may do, and the client refuses: answer 200 with something
that is not Tempo's answer (``answers``), trickle bytes forever (each request has a total
deadline, not one per read), send gigabytes (bodies are capped), or echo the credentials
it was sent (every remote text is redacted before it becomes an error).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
import structlog

from checker import __version__
from checker.redact import Redactor, mask_url
from checker.selftrace import NO_TRACER
from checker.tempo.answers import search_page, tag_names, tag_values, trace_v1, trace_v2
from checker.tempo.density import BYTES_PER_TRACE, LIMIT_CEILING, Density
from checker.tempo.errors import AnswerTooLargeError, TempoError, UnprovenAnswerError
from checker.tempo.settings import MAX_SEARCH_LIMIT, TempoSettings
from checker.tempo.tempopb import PROTOBUF, search_body, trace_v1_body, trace_v2_body
from checker.timeparse import retry_after_seconds
from checker.traceql.errors import QueryTooLongError
from checker.traceql.split import split_query
from checker.traces.errors import DecodeError
from checker.traces.otlp import decode_request, group_traces

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from opentelemetry import trace

    from checker.traces.model import Trace

T = TypeVar("T")
log = structlog.get_logger(__name__)
MAX_WINDOW_SECONDS = 168 * 3600
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ERROR_BODY_BYTES = 4096  # what is read of a refusal: Tempo's errors are one line of text
SHOWN_CHARS = 500  # of a refusal, in the error message
# The URL-encoded query must fit the 8 KiB request line proxies allow (httpx refuses 64 KiB,
# Tempo 128 KiB of TraceQL); longer queries are split into several searches.
MAX_QUERY_BYTES = 6 * 1024
ECHO = "/api/echo"
TAGS = "/api/v2/search/tags"
TAG_VALUES = "/api/v2/search/tag/"  # + the URL-encoded identifier + /values
PORT_HINT = ("point --tempo (tempo.url) at Tempo's HTTP query port, 3200 by default; "
             "4317/4318 are its OTLP receivers")


def _sent_secrets(settings: TempoSettings) -> list[str]:
    """Everything sent that a remote party could echo back, in every form it is sent.

    Every header value, not just secret-named ones: here all of them were sent, while the
    process-wide redactor takes only the secret-named ones.
    """
    return [*settings.secrets(), *settings.headers.values()]


@dataclass(frozen=True)
class FetchedTrace:
    """A trace by ID; ``trace`` None when Tempo does not have it (any more)."""

    trace_id: str
    trace: Trace | None
    partial: str | None = None  # why only part, or none, of the trace could be judged


@dataclass
class ClientStats:
    """Requests made, for the summary line and the benchmark."""

    searches: int = 0
    fetches: int = 0
    bytes_read: int = 0
    retries: int = 0
    full_pages: int = 0  # search pages that reached their limit: read, then searched again


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer whose status was expected; ``body`` None when it was over the size cap."""

    status: int
    body: bytes | None
    content_type: str = ""  # the media type alone, lowercase: "application/json"


class TempoClient:
    """One connection pool per process; use ``async with TempoClient(config) as tempo``."""

    def __init__(self, settings: TempoSettings, *, backoff: float = 0.5, max_backoff: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 observer: Callable[[str, str], None] | None = None,
                 tracer: trace.Tracer = NO_TRACER) -> None:
        self.settings = settings
        self._tracer = tracer  # a span per search page and per fetch (the checker's own traces)
        # Seconds before retry n: up to backoff * 2**n, never above max_backoff (tests use 0).
        self._backoff_base, self._backoff_max = backoff, max_backoff
        self._timeout = settings.timeout.total_seconds()
        self.stats = ClientStats()
        # Called with (route, status or error kind) for every request: the daemon's metrics.
        self._observer = observer
        # time.time() of Tempo's last proven answer; None after a failure, so that
        # readiness asks again instead of trusting an old success.
        self.last_answer: float | None = None
        # The last refusal (401/403) of a real request: Tempo may answer /api/echo without
        # credentials while refusing every search, and readiness must still say so.
        self._refusal: TempoError | None = None
        headers = {"Accept": "application/json", "User-Agent": f"betrace-checker/{__version__}",
                   **settings.headers}
        if settings.tenant:
            headers["X-Scope-OrgID"] = settings.tenant
        if settings.bearer_token:
            headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
        password = settings.password.get_secret_value() if settings.password else ""
        auth = (settings.username, password) if settings.username else None
        self._base_url = settings.url.rstrip("/")
        self._shown_url = mask_url(self._base_url)  # for messages: never a password
        self._redactor = Redactor(_sent_secrets(settings))
        self._http = httpx.AsyncClient(
            base_url=self._base_url, headers=headers, auth=auth, timeout=self._timeout,
            verify=settings.verify, transport=transport,
            limits=httpx.Limits(max_connections=settings.concurrency * 2),
        )
        self._fetch_slots = asyncio.Semaphore(settings.concurrency)
        # A request's deadline starts once it has a connection, not while it queues for one.
        self._request_slots = asyncio.Semaphore(settings.concurrency * 2)
        self._v2_missing = False
        # Kept for the life of the client, so the daemon's later windows start from it.
        self.density = Density(settings.search_limit, min(
            MAX_SEARCH_LIMIT, int(settings.max_search_bytes) // BYTES_PER_TRACE, LIMIT_CEILING))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # ----------------------------------------------------------------- requests

    async def _request(self, path: str, params: dict[str, Any] | None,
                       parse: Callable[[_Answer, str], T], *, cap: int,
                       ok: frozenset[int] = frozenset({200}), retries: int | None = None,
                       accept: str | None = None) -> T:
        """GET ``path`` and ``parse`` the answer, retrying what ``TempoError.retryable`` says.

        429, 5xx, timeouts, broken connections and answers that are not Tempo's are
        retried with backoff; other 4xx are final.
        """
        url = f"{self._shown_url}{path}"
        retries = self.settings.retries if retries is None else retries
        attempt = 0
        while True:
            try:
                result = parse(await self._get(path, params, url, ok=ok, cap=cap, accept=accept), url)
            except TempoError as error:
                self.last_answer = None
                if error.status in {401, 403} and path != ECHO:
                    self._refusal = error
                if not error.retryable or attempt >= retries:
                    raise
                delay = self._backoff(attempt, error)
                status, reason = error.status, str(error).splitlines()[0]
            else:
                self.last_answer = time.time()
                if path != ECHO:
                    self._refusal = None
                return result
            attempt += 1
            self.stats.retries += 1
            log.warning("tempo.retry", url=url, status=status, attempt=attempt,
                        delay=round(delay, 3), error=reason)
            await asyncio.sleep(delay)

    async def _get(self, path: str, params: dict[str, Any] | None, url: str, *,
                   ok: frozenset[int], cap: int, accept: str | None = None) -> _Answer:
        """One GET, answer and body within ``timeout`` in total; failures become ``TempoError``."""
        route = _route(path)
        async with self._request_slots:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._exchange(path, params, url, ok=ok, cap=cap, accept=accept)
            except (TimeoutError, httpx.TimeoutException):
                self._observe(route, "timeout")
                raise TempoError(f"no answer within {self._timeout:g}s (the whole answer, body "
                                 "included)", url=url, retryable=True,
                                 hint="raise the Tempo timeout (--timeout, tempo.timeout)") from None
            except httpx.InvalidURL:
                self._observe(route, "invalid_url")
                raise TempoError("the request cannot be sent: its URL is invalid or too long", url=url,
                                 hint="check the Tempo URL; shorten the rule's value lists") from None
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
                self._observe(route, "invalid_request")
                raise TempoError(f"the request cannot be sent: {self._shown(str(exc))}", url=url,
                                 hint="check the Tempo URL and headers") from None
            except httpx.HTTPError as exc:  # refused, reset, cut short, a body that does not decode
                self._observe(route, "connection_error")
                what = "cannot connect" if isinstance(exc, httpx.ConnectError) else "the answer broke off"
                raise TempoError(f"{what}: {type(exc).__name__}", url=url, retryable=True,
                                 hint="check the Tempo URL and that Tempo is running") from None

    async def _exchange(self, path: str, params: dict[str, Any] | None, url: str, *,
                        ok: frozenset[int], cap: int, accept: str | None = None) -> _Answer:
        headers = {"Accept": accept} if accept else None
        async with self._http.stream("GET", path, params=params, headers=headers) as response:
            self._observe(_route(path), str(response.status_code))
            if response.status_code not in ok:
                prefix = await self._read(response, ERROR_BODY_BYTES, truncate=True) or b""
                text = self._shown(prefix.decode("utf-8", "replace"), cut_off=len(prefix) == ERROR_BODY_BYTES)
                raise self._status_error(response, text, url, params)
            media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return _Answer(response.status_code, await self._read(response, cap), media)

    async def _read(self, response: httpx.Response, cap: int, *, truncate: bool = False) -> bytes | None:
        """The body, streamed; past ``cap`` bytes: None, or the first ``cap`` when ``truncate``."""
        declared = response.headers.get("Content-Length", "")
        if not truncate and declared.isdigit() and int(declared) > cap:
            return None
        enough = cap if truncate else cap + 1  # one byte past the cap proves it is over
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= enough:
                break
        self.stats.bytes_read += size
        if size > cap and not truncate:
            return None
        return b"".join(chunks)[:cap]

    def _json(self, answer: _Answer, url: str) -> Any:
        """The JSON of an answer; anything else is retried like a 5xx, since proxies cut bodies."""
        if not answer.body:
            raise TempoError("answered with an empty body", url=url, status=answer.status, retryable=True)
        try:
            return json.loads(answer.body)
        except (ValueError, RecursionError):
            raise TempoError("answered with something that is not JSON", url=url,
                             status=answer.status, retryable=True) from None

    def _body(self, answer: _Answer, url: str, from_protobuf: Callable[[bytes], Any]) -> Any:
        """The answer as its JSON would parse, from protobuf when that is what came.

        A proxy or an older Tempo may answer JSON whatever was asked, so the Content-Type
        decides; ``UnprovenAnswerError`` when a protobuf body is not the message it claims.
        """
        if answer.body and answer.content_type == PROTOBUF:
            return from_protobuf(answer.body)
        return self._json(answer, url)

    def _unproven(self, error: UnprovenAnswerError, url: str) -> TempoError:
        return TempoError(self._shown(str(error)), url=url, status=200, retryable=True,
                          hint="is a proxy answering instead of Tempo? " + PORT_HINT)

    def _shown(self, text: str, *, cut_off: bool = False) -> str:
        """Remote text as it may be shown: every configured secret removed, then cut.

        ``cut_off``: only the start of the text was read, so a secret may end it half-way.
        """
        return self._redactor.redact(text.strip(), SHOWN_CHARS, cut_off=cut_off)

    def _observe(self, route: str, status: str) -> None:
        if self._observer is not None:
            self._observer(route, status)

    async def ping(self) -> None:
        """Ask Tempo's ``/api/echo`` once, for readiness.

        ``TempoError`` unless Tempo itself answers "echo" and the last search or fetch was
        not refused.
        """

        def parse(answer: _Answer, url: str) -> None:
            if not (answer.body or b"").startswith(b"echo"):
                raise TempoError("answered 200, but not Tempo's echo", url=url, status=200,
                                 hint=PORT_HINT)
            if self._refusal is not None:
                raise self._refusal

        await self._request(ECHO, None, parse, cap=ERROR_BODY_BYTES, retries=0)

    def _backoff(self, attempt: int, error: TempoError) -> float:
        """Exponential backoff with full jitter; a 429's Retry-After wins when longer."""
        ceiling = min(self._backoff_max, self._backoff_base * 2**attempt)
        delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
        if error.retry_after is not None:
            return max(delay, min(error.retry_after, self._backoff_max))
        return delay

    def _status_error(self, response: httpx.Response, text: str, url: str,
                      params: dict[str, Any] | None) -> TempoError:
        """A refusal, with Tempo's words (already redacted) and what to do about it."""
        status = response.status_code
        if status in RETRY_STATUSES:
            retry_after = response.headers.get("Retry-After")
            return TempoError(text or "server error", url=url, status=status, retryable=True,
                              retry_after=retry_after_seconds(retry_after))
        hint = None
        if status == 400 and params and "q" in params:
            hint = f"query was: {params['q']}"
        elif status == 401:
            hint = "set the tenant (X-Scope-OrgID) or credentials"
        elif status == 403:
            hint = "the credentials were refused"
        elif status == 404:
            hint = PORT_HINT
        return TempoError(text or "request refused", url=url, status=status, hint=hint)

    # ------------------------------------------------------------------- search

    async def search(self, query: str, start: int, end: int, limit: int) -> frozenset[str]:
        """One search page: padded trace IDs; a full page may be an arbitrary subset.

        Tempo stops its jobs once it has ``limit`` traces, so a full page may be unfinished.
        A page with fewer traces that is unfinished is not something Tempo sends (a failed
        job fails the whole request): it is retried with backoff, then an error, and never
        split, which once turned one unfinished answer into thousands of searches.
        """
        with self._tracer.start_as_current_span("tempo.search", attributes={
                "tempo.query": query, "tempo.start": start, "tempo.end": end, "tempo.limit": limit}) as span:
            found = await self._search_page(query, start, end, limit)
            span.set_attribute("tempo.traces", len(found))
            return found

    async def _search_page(self, query: str, start: int, end: int, limit: int) -> frozenset[str]:
        self.stats.searches += 1
        params = {"q": query, "start": start, "end": end, "limit": limit, "spss": 1}

        def parse(answer: _Answer, url: str) -> frozenset[str]:
            if answer.body is None:
                raise AnswerTooLargeError(f"search answer larger than tempo.max_search_bytes "
                                 f"({int(self.settings.max_search_bytes)} bytes)",
                                 url=url, status=answer.status,
                                 hint="raise tempo.max_search_bytes (--max-search-bytes) or lower "
                                 "tempo.search_limit (--search-limit)")
            try:
                page = search_page(self._body(answer, url, search_body))
            except UnprovenAnswerError as err:
                raise self._unproven(err, url) from None
            if len(page.ids) < limit and not page.complete:
                raise TempoError(f"search answer is unfinished (completedJobs < totalJobs) with "
                                 f"{len(page.ids)} of at most {limit} traces", url=url, status=200,
                                 retryable=True, hint="Tempo or a proxy cut the search short")
            return page.ids

        return await self._request("/api/search", params, parse, cap=int(self.settings.max_search_bytes),
                                   accept=PROTOBUF)

    async def search_all(self, query: str, start: int, end: int) -> set[str]:
        """Every trace matching ``query`` whose time range overlaps [start, end] (seconds).

        A page that reaches the limit is never trusted: the window is searched again with a
        higher limit or in parts (``_enumerate``), down to one second, where only the limit can
        grow. A query too long for one request is searched in parts whose union is the same set.
        """
        parts = self._query_parts(query)
        chunks = [(s, min(end, s + MAX_WINDOW_SECONDS)) for s in range(start, end, MAX_WINDOW_SECONDS)]
        found = await gather_strict(*(self._enumerate(part, a, b) for part in parts for a, b in chunks))
        return set().union(*found)

    def _query_parts(self, query: str) -> list[str]:
        try:
            parts = split_query(query, _fits_url)
        except QueryTooLongError as err:
            raise TempoError(f"the TraceQL query ({len(query)} characters) is too long for one request "
                             f"and cannot be split: {err}", url=f"{self._shown_url}/api/search",
                             hint="shorten the rule's value lists (in [...]) or split the rule") from None
        if len(parts) > 1:
            log.info("tempo.query_split", characters=len(query), searches=len(parts))
        return parts

    async def _enumerate(self, query: str, start: int, end: int,
                         parent: frozenset[str] | None = None) -> set[str]:
        """The window's traces; ``parent`` is the full page of the window this one was cut from.

        The first page's limit comes from the query's density (``Density``), so a full page is
        rare. A full one (or one over max_search_bytes, ``_page``) is thrown away; the range is
        searched again with the highest limit while one answer can hold it, else cut in as many
        parts as the density says it needs.

        A part that answers exactly its parent's full page gains nothing from more cuts (traces
        spanning the whole window, or a proxy that ignores start/end): its limit is raised
        instead, which keeps the number of searches logarithmic, never exponential.
        """
        seconds = end - start
        limit = self.density.limit(query, seconds)
        while True:
            ids = await self._page(query, start, end, limit)
            if ids is not None and len(ids) < limit:
                return set(ids)
            self.stats.full_pages += 1
            if ids is None and seconds <= 1:
                limit = self.density.limit(query, seconds)  # within the ceiling just lowered
                continue
            if ids is not None and (seconds <= 1 or ids == parent):
                return await self._raise_limit(query, start, end, limit)
            parts = min(seconds, self.density.parts(query, seconds, limit))
            if parts > 1:
                break
            # Asked again once, for the most one answer may hold: Tempo sends only the traces
            # that match, so a high limit costs nothing, while a second guess too low would
            # cost another page thrown away.
            limit = self.density.ceiling
        edges = [start + seconds * i // parts for i in range(parts + 1)]
        found = await gather_strict(*(self._enumerate(query, a, b, ids)
                                      for a, b in itertools.pairwise(edges)))
        return set().union(*found)

    async def _page(self, query: str, start: int, end: int, limit: int) -> frozenset[str] | None:
        """One search, taught to the density; None when the answer was over max_search_bytes.

        Such an answer is as good as a full page, none of it read: its traces are larger than
        budgeted, so no later page asks for as many (``Density.shrink``). At the floor
        (``tempo.search_limit``) it is the error it always was.
        """
        try:
            ids = await self.search(query, start, end, limit)
        except AnswerTooLargeError:
            if limit <= self.density.floor:
                raise
            self.density.shrink(limit)
            return None
        self.density.observe(query, end - start, len(ids), full=len(ids) >= limit)
        return ids

    async def _raise_limit(self, query: str, start: int, end: int, limit: int) -> set[str]:
        """A window that cuts cannot thin out: raise the limit until the page is not full."""
        while limit < MAX_SEARCH_LIMIT:
            limit = min(MAX_SEARCH_LIMIT, limit * 4)
            ids = await self.search(query, start, end, limit)
            if len(ids) < limit:
                return set(ids)
        url = f"{self._shown_url}/api/search"
        raise TempoError(f"more than {MAX_SEARCH_LIMIT} traces in the window {start}..{end} "
                         f"for {query}", url=url, retryable=True)

    # --------------------------------------------------------------------- tags

    async def tag_names(self, scope: str, start: int, end: int) -> frozenset[str]:
        """Attribute names Tempo saw in ``scope`` (``span``, ``resource``) over [start, end].

        For ``validate --tempo``: a rule naming an attribute never seen here is likely dead.
        """
        def parse(answer: _Answer, url: str) -> frozenset[str]:
            return self._proven(lambda body: tag_names(body, scope), answer, url)

        params = {"scope": scope, "start": start, "end": end}
        return await self._request(TAGS, params, parse, cap=int(self.settings.max_search_bytes))

    async def tag_values(self, identifier: str, start: int, end: int) -> frozenset[tuple[str, str]]:
        """(type, value) pairs Tempo saw for a TraceQL ``identifier`` (``name``, ``span."x"``)."""
        def parse(answer: _Answer, url: str) -> frozenset[tuple[str, str]]:
            return self._proven(tag_values, answer, url)

        path = f"{TAG_VALUES}{urllib.parse.quote(identifier, safe='')}/values"
        return await self._request(path, {"start": start, "end": end}, parse,
                                   cap=int(self.settings.max_search_bytes))

    def _proven(self, prove: Callable[[Any], T], answer: _Answer, url: str) -> T:
        """``prove`` the answer's JSON; a body over the cap is as unusable as an unproven one."""
        if answer.body is None:
            raise TempoError(f"answer larger than tempo.max_search_bytes "
                             f"({int(self.settings.max_search_bytes)} bytes)", url=url, status=answer.status,
                             hint="raise tempo.max_search_bytes")
        try:
            return prove(self._json(answer, url))
        except UnprovenAnswerError as err:
            raise self._unproven(err, url) from None

    # -------------------------------------------------------------------- fetch

    async def fetch(self, trace_id: str) -> FetchedTrace:
        """A whole trace by ID (v2 API, falling back to v1 for older Tempo)."""
        async with self._fetch_slots:
            with self._tracer.start_as_current_span("tempo.fetch", attributes={"tempo.trace_id": trace_id}):
                return await self._fetch_any(trace_id)

    async def _fetch_any(self, trace_id: str) -> FetchedTrace:
        """The v2 API, then v1 once v2 answered 404."""
        self.stats.fetches += 1
        if not self._v2_missing:
            fetched = await self._fetch(trace_id, 2)
            if fetched is not None:
                return fetched
            self._v2_missing = True
            log.info("tempo.v1_fallback", reason="v2 trace API answered 404")
        return await self._fetch(trace_id, 1) or FetchedTrace(trace_id, None)

    async def _fetch(self, trace_id: str, version: int) -> FetchedTrace | None:
        """None on 404: for v2 the API is missing (v2 answers 200 for a missing trace), for v1 the trace."""
        path = f"/api/v2/traces/{trace_id}" if version == 2 else f"/api/traces/{trace_id}"

        def parse(answer: _Answer, url: str) -> FetchedTrace | None:
            if answer.status == 404:
                return None
            if answer.body is None:
                return self._too_large(trace_id)
            try:
                if version == 2:
                    container, partial = trace_v2(self._body(answer, url, trace_v2_body))
                else:
                    container, partial = trace_v1(self._body(answer, url, trace_v1_body)), None
            except UnprovenAnswerError as err:
                raise self._unproven(err, url) from None
            partial = None if partial is None else f"returned only in part: {self._shown(partial)}"
            return FetchedTrace(trace_id, _decode(trace_id, container, url), partial)

        return await self._request(path, None, parse, cap=int(self.settings.max_trace_bytes),
                                   ok=frozenset({200, 404}), accept=PROTOBUF)

    def _too_large(self, trace_id: str) -> FetchedTrace:
        limit = int(self.settings.max_trace_bytes)
        log.warning("tempo.trace_too_large", trace_id=trace_id, max_trace_bytes=limit,
                    detail="not judged; raise tempo.max_trace_bytes (--max-trace-bytes) to judge it")
        return FetchedTrace(trace_id, None, f"larger than tempo.max_trace_bytes ({limit} bytes)")


def _decode(trace_id: str, container: dict[str, Any] | None, url: str) -> Trace | None:
    if container is None:
        return None
    try:
        spans = [s for s in decode_request(container) if s.trace_id == trace_id]
    except DecodeError as err:
        raise TempoError(f"trace is not valid OTLP: {str(err)[:SHOWN_CHARS]}", url=url) from None
    traces = list(group_traces(spans))
    return traces[0] if traces else None


def _fits_url(query: str) -> bool:
    """Whether one search request can carry ``query`` (``MAX_QUERY_BYTES`` once encoded)."""
    return len(str(httpx.QueryParams({"q": query}))) <= MAX_QUERY_BYTES  # as httpx will encode it


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
    if path.startswith(TAG_VALUES):
        return "tag_values"
    return path.removeprefix("/api/").strip("/") or "root"
