"""Per-caller rate limiting: an in-process token bucket per verified token (`role` + `sub`), or per
client address for callers without a valid token (the X-Forwarded-For hop only behind a trusted
proxy: RESCIND_TRUSTED_PROXIES). Over the limit: 429 problem JSON with Retry-After.

In-process on purpose: each replica limits on its own (N replicas allow N times the rate), which is
enough to stop one runaway or hostile caller from starving the others without a shared store.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from rescind_common.auth import Principal, Role, ServiceScope
from rescind_common.auth_gate import scope_principal
from rescind_common.problems import PROBLEM_BASE, problem_response

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


class RateLimitMiddleware:
    """Plain ASGI (no BaseHTTPMiddleware): key the caller, take a token, or answer 429."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: TokenBucketLimiter,
        exempt_paths: Iterable[str] = EXEMPT_PATHS,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.exempt_paths = frozenset(exempt_paths)
        self.trusted_proxies = parse_networks(trusted_proxies)

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
        # Verified once per request: current_principal and the auth gate reuse the outcome. A bad
        # token is keyed by address; the endpoint's own dependency answers 401 if it needs one.
        principal, _ = await scope_principal(scope)
        if principal is not None:
            if exempt(principal, scope["method"], scope["path"]):
                return None
            return f"{principal.role.value}:{principal.sub}"
        return f"ip:{client_address(scope, self.trusted_proxies)}"


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: IPAddress | None, trusted: Sequence[IPNetwork]) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in trusted)


def client_address(scope: Scope, trusted_proxies: Sequence[IPNetwork] = ()) -> str:
    """The caller's address: the socket peer, unless the peer is a trusted proxy; then the
    rightmost X-Forwarded-For hop that is not itself a trusted proxy (hops left of it are written
    by the client and may be forged). Without trusted proxies the header is ignored."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted_proxies or not _trusted(_ip(peer), trusted_proxies):
        return peer
    hops: list[str] = []
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":  # repeated headers read as one comma-joined list
            hops.extend(value.decode("latin-1").split(","))
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return peer  # garbage in the chain: do not guess past it
        if not _trusted(ip, trusted_proxies):
            return str(ip)
    return peer  # every hop a proxy (or no header): the proxy itself is the caller


__all__ = [
    "EXEMPT_PATHS",
    "EXEMPT_SERVICE_CALLS",
    "RateLimitMiddleware",
    "TokenBucketLimiter",
    "client_address",
    "exempt",
    "parse_networks",
]
