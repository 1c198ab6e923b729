"""Per-caller rate limiting: an in-process token bucket per verified token (`role` + `sub`), or per
client address for callers without a valid token. Over the limit: 429 problem JSON with Retry-After.

In-process on purpose: each replica limits on its own (N replicas allow N times the rate), which is
enough to stop one runaway or hostile caller from starving the others without a shared store.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from rescind_common.auth import VERIFIED_STATE_KEY, Principal, Role, ServiceScope, TokenVerifier
from rescind_common.problems import PROBLEM_BASE, problem_response

# Never limited: probes and scrapes must not be refused because a caller is noisy.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Everyone is limited, operators included, but for one narrow identity: a `service` token calling the
# one route its scope opens (the worker's holders lookups, consent-api's recipients lookup), since
# throttling it would throttle the revocation pipeline itself. Anywhere else it is limited too.
EXEMPT_SERVICE_CALLS: dict[tuple[str, str], frozenset[ServiceScope]] = {
    ("POST", "/v1/holders"): frozenset({ServiceScope.HOLDERS, ServiceScope.RECIPIENTS}),
}


def exempt(principal: Principal, method: str, path: str) -> bool:
    """True for the pipeline's own call (see EXEMPT_SERVICE_CALLS)."""
    scopes = EXEMPT_SERVICE_CALLS.get((method, path))
    return (
        principal.role == Role.SERVICE and scopes is not None and any(principal.has_scope(s) for s in scopes)
    )


class TokenBucketLimiter:
    """`rate` tokens a second, at most `burst` saved up, one bucket per key; least recently used
    buckets are forgotten past `max_keys` (a forgotten bucket comes back full)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class RateLimitMiddleware:
    """Plain ASGI (no BaseHTTPMiddleware): key the caller, take a token, or answer 429."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: TokenBucketLimiter,
        exempt_paths: Iterable[str] = EXEMPT_PATHS,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        key = await self._key(scope)
        if key is not None:
            wait = self.limiter.take(key)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                response = problem_response(
                    429,
                    f"Too many requests from this caller; retry in {retry_after} s.",
                    type_=PROBLEM_BASE + "rate-limited",
                    headers={"Retry-After": str(retry_after)},
                    instance=scope["path"],
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _key(self, scope: Scope) -> str | None:
        """`role:sub` for a valid token (None: the exempt service call), else the client address."""
        token = _bearer(scope)
        app = scope.get("app")
        verifier: TokenVerifier | None = getattr(getattr(app, "state", None), "token_verifier", None)
        if token and verifier is not None:
            principal: Principal | None
            try:
                principal = verifier.cached(token)
                if principal is None:
                    if verifier.uses_network:  # a JWKS fetch must not block the event loop
                        principal = await anyio.to_thread.run_sync(verifier.verify, token)
                    else:
                        principal = verifier.verify(token)
            except Exception:
                principal = None  # the endpoint's own dependency answers 401 (if it needs a token)
            if principal is not None:
                # current_principal reuses it: one signature check per request, not two.
                scope.setdefault("state", {})[VERIFIED_STATE_KEY] = (token, principal)
                if exempt(principal, scope["method"], scope["path"]):
                    return None
                return f"{principal.role.value}:{principal.sub}"
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}"


__all__ = ["EXEMPT_PATHS", "EXEMPT_SERVICE_CALLS", "RateLimitMiddleware", "TokenBucketLimiter", "exempt"]
