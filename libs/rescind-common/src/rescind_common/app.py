"""What every Rescind app has: problem errors, health, readiness, metrics, body limits, rate limits,
request ids."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rescind_common.auth import TokenVerifier
from rescind_common.auth_gate import (
    PUBLIC_BODY_PATHS,
    UNREAD_BODY_CLOSE_BYTES,
    AuthBeforeBodyMiddleware,
    NoTokenShortcut,
    announced_body,
)
from rescind_common.db import DbAdmission, Overloaded, ping
from rescind_common.kafka import broker_reachable
from rescind_common.metrics import HTTP_REQUESTS, install_metrics
from rescind_common.problems import (
    PROBLEM_BASE,
    Problem,
    field_error,
    install_problem_handlers,
    problem_response,
)
from rescind_common.ratelimit import RateLimitMiddleware, TokenBucketLimiter

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], bool]

# Deeper JSON is refused: no request body needs it, and stored deep values (free-form evidence)
# would break every later answer that serialises them.
MAX_JSON_DEPTH = 32
# NUL (PostgreSQL refuses it in text) and unpaired surrogates (JSON's "\ud800" escapes: no UTF-8
# encoding exists, so storing or answering with them fails) never belong in a request's strings.
BAD_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
# Parsing JSON holds the GIL whatever thread does it, and costs by the values built: ~0.7 µs an
# array or object, ~0.05 µs a scalar (16 MiB of `[[[]]],` takes 5 s, of `1,` 0.4 s). Counting `[`,
# `{` and `,` as the body arrives bounds that before parsing (strings may hold them too, so these
# sit well above any real body: 10,000 batch samples of 32 attributes are 20,002 and 340,000).
MAX_JSON_CONTAINERS = 100_000
MAX_JSON_SEPARATORS = 2_000_000
# Bodies with fewer tokens than this are walked on the event loop; a thread hop costs more.
GUARD_INLINE_TOKENS = 5_000
# The structural walk of larger bodies runs in worker threads, at most this many at once.
GUARD_THREADS = 2
# The budget counts of this request's body, for guard_json_body: (containers, separators).
JSON_COUNTS_STATE_KEY = "rescind_json_counts"


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit


class NulGuardMiddleware:
    """NUL never belongs in a path or query (and PostgreSQL refuses it in text): answer 404/400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"")
            if "\x00" in scope["path"]:
                await problem_response(404, "Not found.")(scope, receive, send)
                return
            if b"%00" in query or b"\x00" in query:
                resp = problem_response(
                    400, "The query string contains a NUL character.", errors=[field_error("query", "NUL")]
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies over a limit with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, default_limit: int, path_limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.path_limits = path_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.default_limit)

        async def too_large(scope: Scope, receive: Receive, send: Send) -> None:
            # Rendered only when needed: building a problem response costs more than the checks.
            response = problem_response(
                413, f"The request body exceeds {limit} bytes.", instance=scope["path"], limit=limit
            )
            await response(scope, receive, send)

        declared: int | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await too_large(scope, receive, send)
                    return
        if declared is None:
            # No Content-Length (chunked): read up to the limit before the app sees anything. An error
            # raised from `receive` inside the app would reach FastAPI wrapped (a 400), not as a 413.
            buffered: list[Message] = []
            seen = 0
            while True:
                message = await receive()
                buffered.append(message)
                if message["type"] != "http.request":
                    break
                seen += len(message.get("body", b""))
                if seen > limit:
                    await too_large(scope, receive, send)
                    return
                if not message.get("more_body", False):
                    break

            async def replay() -> Message:
                return buffered.pop(0) if buffered else await receive()

            await self.app(scope, replay, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class JsonBudgetMiddleware:
    """Read the body (inside the body limit and the auth gate) counting `[`, `{` and `,` chunk by
    chunk, and refuse with 413 as soon as a count passes MAX_JSON_CONTAINERS / MAX_JSON_SEPARATORS:
    the parse that follows then costs milliseconds, not seconds. The app gets the body as one
    message; the counts go to guard_json_body in scope["state"]."""

    def __init__(
        self,
        app: ASGIApp,
        max_containers: int = MAX_JSON_CONTAINERS,
        max_separators: int = MAX_JSON_SEPARATORS,
    ) -> None:
        self.app = app
        self.max_containers = max_containers
        self.max_separators = max_separators

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        containers = separators = 0
        last: Message | None = None
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    last = message  # a disconnect: the app sees it
                    break
                chunk = message.get("body", b"")
                chunks.append(chunk)
                containers += chunk.count(b"[") + chunk.count(b"{")
                separators += chunk.count(b",")
                if containers > self.max_containers or separators > self.max_separators:
                    await self._refuse(scope, receive, send, containers > self.max_containers)
                    return
                if not message.get("more_body", False):
                    break
        except BodyTooLarge as exc:  # raised outside the app's handlers: answer here
            too_large = problem_response(
                413, f"The request body exceeds {exc.limit} bytes.", instance=scope["path"], limit=exc.limit
            )
            await too_large(scope, receive, send)
            return
        scope.setdefault("state", {})[JSON_COUNTS_STATE_KEY] = (containers, separators)
        pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        if last is not None:
            pending.append(last)
        del chunks

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, containers: bool) -> None:
        if containers:
            what, limit = f"has more than {self.max_containers} arrays and objects", self.max_containers
        else:
            what, limit = f"has more than {self.max_separators} commas", self.max_separators
        response = problem_response(
            413,
            f"Invalid request: body {what}.",
            errors=[field_error("body", what)],
            instance=scope["path"],
            limit=limit,
        )
        await response(scope, receive, send)


class CloseUnreadBodyMiddleware:
    """An answer sent before a large body was read (401, 413, 429, 503) says `Connection: close`:
    the server then drops the connection instead of reading the rest of the body to reuse it, which
    would let a refused caller make it take in 16 MiB after all. Small bodies are drained as usual
    (cheap, and the connection stays open)."""

    def __init__(self, app: ASGIApp, threshold: int = UNREAD_BODY_CLOSE_BYTES) -> None:
        self.app = app
        self.threshold = threshold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        size = announced_body(scope)
        if size is None or 0 <= size <= self.threshold:
            await self.app(scope, receive, send)
            return
        complete = False

        async def watched_receive() -> Message:
            nonlocal complete
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, watched_receive, closing_send)


class InFlightLimitMiddleware:
    """Past `limit` requests in progress, answer 503 + Retry-After at once, before the body is read
    or the token checked. Under overload the event loop is the queue: requests that can only end
    in a 503 must cost next to nothing, or they take the CPU the admitted ones need to finish."""

    EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, limit: int, retry_after: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = retry_after
        self.in_flight = 0  # one event loop per process: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            busy = problem_response(
                503,
                "The service is at capacity; retry shortly.",
                type_=PROBLEM_BASE + "overloaded",
                headers={"Retry-After": str(self.retry_after)},
                instance=scope["path"],
            )
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def _path(base: str, key: str | int | None) -> str:
    if key is None:
        return base
    return f"{base}[{key}]" if isinstance(key, int) else f"{base}.{key}"


def json_body_problem(value: Any, max_items: int | None = None) -> tuple[int, str, str] | None:
    """(status, field, what is wrong) for the first string with a BAD_CHARACTER, non-finite number,
    container nested deeper than MAX_JSON_DEPTH (422) or holding more than `max_items` entries (413)
    in a parsed JSON body; None when it is fine.

    Runs before the body is validated: pydantic reports every bad item of a list, and a 16 MiB list
    of millions of bad ids would keep the event loop busy for tens of seconds. Iterative: a deep
    body must not exhaust the stack here either."""
    stack: list[tuple[Any, str, str | int | None, int]] = [(value, "body", None, 0)]
    while stack:
        node, base, key, depth = stack.pop()
        if isinstance(node, str):
            if BAD_CHARACTERS.search(node):
                return 422, _path(base, key), "contains a NUL character or an unpaired surrogate"
        elif isinstance(node, float) and not math.isfinite(node):
            # NaN, Infinity, 1e999: not JSON, and not storable as JSON either.
            return 422, _path(base, key), "is not a finite number"
        elif isinstance(node, dict | list):
            field = _path(base, key)
            if depth >= MAX_JSON_DEPTH:
                return 422, field, f"nests deeper than {MAX_JSON_DEPTH} levels"
            if max_items is not None and len(node) > max_items:
                return 413, field, f"has more than {max_items} entries"
            if isinstance(node, dict):
                for name, item in node.items():
                    if BAD_CHARACTERS.search(name):
                        return 422, field, "has a key with a NUL character or an unpaired surrogate"
                    stack.append((item, field, name, depth + 1))
            else:
                stack.extend((item, field, i, depth + 1) for i, item in enumerate(node))
    return None


_guard_threads = anyio.CapacityLimiter(GUARD_THREADS)


async def guard_json_body(request: Request) -> None:
    """Every route: refuse JSON bodies with impossible strings, absurd nesting (422) or lists longer
    than any limit of the service (413), naming the field. FastAPI has parsed the body already where
    the route takes one (once, bounded by JsonBudgetMiddleware) and cached it on this same Request;
    a large body is walked in a worker thread, so the event loop keeps serving meanwhile."""
    if request.method in ("GET", "HEAD", "OPTIONS") or "json" not in request.headers.get("content-type", ""):
        return
    try:
        body = await request.json()
    except Exception:
        return  # not JSON at all: the route answers that
    max_items = getattr(request.app.state, "max_json_items", None)
    counts = request.scope.get("state", {}).get(JSON_COUNTS_STATE_KEY)
    if counts is not None and sum(counts) < GUARD_INLINE_TOKENS:
        found = json_body_problem(body, max_items)
    else:
        found = await anyio.to_thread.run_sync(json_body_problem, body, max_items, limiter=_guard_threads)
    if found is None:
        return
    status, field, what = found
    if status == 413:
        raise Problem(
            413, f"Invalid request: {field} {what}.", errors=[field_error(field, what)], limit=max_items
        )
    raise Problem(
        422,
        f"Invalid request: {field} {what}.",
        type_=PROBLEM_BASE + "validation-error",
        errors=[field_error(field, what)],
    )


def create_app(
    *,
    service: str,
    title: str,
    version: str,
    description: str,
    readiness: dict[str, ReadinessCheck],
    max_body_bytes: int,
    path_body_limits: dict[str, int] | None = None,
    rate_limit_per_second: float = 0.0,
    rate_limit_burst: int = 0,
    max_json_items: int | None = None,
    db_admission: DbAdmission | None = None,
    max_in_flight: int = 0,
    trusted_proxies: Sequence[str] = (),
    unauthenticated_write_delay: float = 0.0,
    public_body_paths: Iterable[str] = PUBLIC_BODY_PATHS,
    **kwargs: Any,
) -> FastAPI:
    app = FastAPI(
        title=title,
        version=version,
        description=description,
        dependencies=[Depends(guard_json_body)],
        **kwargs,
    )
    install_problem_handlers(app)
    # The largest list or object any endpoint accepts (the service's own item limits); longer is 413.
    app.state.max_json_items = max_json_items

    # Requests that use the database wait at most `db_admission.timeout` for a slot, then get a 503.
    app.state.db_admission = db_admission

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return problem_response(
            503,
            "The service is at capacity; retry shortly.",
            type_=PROBLEM_BASE + "overloaded",
            headers={"Retry-After": str(exc.retry_after)},
            instance=request.url.path,
        )

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return problem_response(
            413, f"The request body exceeds {exc.limit} bytes.", instance=request.url.path, limit=exc.limit
        )

    # Innermost first. The body is read (and counted) only inside the body limit, and only for a
    # caller whose token verified (the gate); the token is checked once, by whichever comes first.
    app.add_middleware(JsonBudgetMiddleware)
    app.add_middleware(BodyLimitMiddleware, default_limit=max_body_bytes, path_limits=path_body_limits or {})
    app.add_middleware(AuthBeforeBodyMiddleware, public_paths=public_body_paths)
    app.add_middleware(NulGuardMiddleware)
    if rate_limit_per_second > 0 and rate_limit_burst > 0:
        # Outside the gate and the body limit: a throttled caller is refused before its body is read.
        app.state.rate_limiter = TokenBucketLimiter(rate_limit_per_second, rate_limit_burst)
        app.add_middleware(
            RateLimitMiddleware, limiter=app.state.rate_limiter, trusted_proxies=trusted_proxies
        )
    if max_in_flight > 0:
        # Outside the rate limiter: refusing costs no token check.
        retry = db_admission.retry_after if db_admission else 1
        app.add_middleware(InFlightLimitMiddleware, limit=max_in_flight, retry_after=retry)
    app.add_middleware(CloseUnreadBodyMiddleware)
    install_metrics(app, service)  # outermost middleware: sees every answer, 413s and 404s included
    # Outside even that: tokenless writes with a body, answered 401 from pre-built bytes (counted).
    build_stack = app.build_middleware_stack

    def refused(method: str) -> None:
        HTTP_REQUESTS.labels(service, method, "refused-without-token", "401").inc()

    def build_middleware_stack() -> ASGIApp:
        return NoTokenShortcut(build_stack(), refused, public_body_paths, delay=unauthenticated_write_delay)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["health"], summary="Readiness: database and broker reachable")
    def readyz() -> JSONResponse:
        checks = {name: _safe(check) for name, check in readiness.items()}
        ok = all(checks.values())
        states = {k: "ok" if v else "down" for k, v in checks.items()}
        if ok:
            return JSONResponse({"status": "ok", "checks": states})
        down = ", ".join(k for k, v in checks.items() if not v)
        return problem_response(503, f"Not ready: {down}.", checks=states)

    return app


def _safe(check: ReadinessCheck) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


__all__ = [
    "MAX_JSON_DEPTH",
    "BodyLimitMiddleware",
    "BodyTooLarge",
    "CloseUnreadBodyMiddleware",
    "InFlightLimitMiddleware",
    "JsonBudgetMiddleware",
    "NulGuardMiddleware",
    "Problem",
    "create_app",
    "guard_json_body",
    "json_body_problem",
]


class ServiceContext(Protocol):
    """What every service's AppContext carries."""

    settings: Any
    engine: Engine
    session_factory: Any


def create_service_app(
    ctx: ServiceContext,
    *,
    service: str,
    title: str,
    version: str,
    description: str,
    routers: Sequence[APIRouter],
    max_json_items: int,
    batch_paths: Sequence[str] = (),
    **kwargs: Any,
) -> FastAPI:
    """A service's app as all three are built: ready when its database and the broker answer, the
    body and rate limits of its settings (`batch_paths` take `max_batch_body_bytes`), its context,
    session factory and token verifier on `app.state`, its routers."""
    settings = ctx.settings
    app = create_app(
        service=service,
        title=title,
        version=version,
        description=description,
        readiness={
            "database": lambda: ping(ctx.engine),
            "kafka": lambda: broker_reachable(settings.kafka_bootstrap),
        },
        max_body_bytes=settings.max_body_bytes,
        path_body_limits=dict.fromkeys(batch_paths, settings.max_batch_body_bytes) or None,
        rate_limit_per_second=settings.rate_limit_per_second,
        rate_limit_burst=settings.rate_limit_burst,
        trusted_proxies=settings.trusted_proxies,
        unauthenticated_write_delay=settings.unauthenticated_write_delay_seconds,
        max_json_items=max_json_items,
        **kwargs,
    )
    app.state.ctx = ctx
    app.state.session_factory = ctx.session_factory
    app.state.token_verifier = TokenVerifier(settings, service=service)
    for router in routers:
        app.include_router(router)
    return app
