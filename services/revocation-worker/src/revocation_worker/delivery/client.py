"""The pooled aiohttp client that delivers webhooks, with the SSRF guard on the address dialled.

The resolver checks every address DNS returns at connection time (so a hostname that resolved
public at registration and private now — DNS rebinding — is refused); IP-literal hosts, which
aiohttp never resolves, are checked before the request. Redirects are not followed and proxies
from the environment are ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from revocation_worker.endpoints.urlguard import AddressPolicy, UnsafeURL, parse_webhook_url


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for r in results:
            self.policy.check_ip(r["host"])  # raises UnsafeURL: the connection is never opened
        return results

    async def close(self) -> None:
        await self._inner.close()


def check_literal_host(url: str, policy: AddressPolicy, allow_http: bool) -> None:
    _, host, _ = parse_webhook_url(url, allow_http=allow_http)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: the resolver checks it
    policy.check_ip(ip)


def make_session(
    policy: AddressPolicy, *, concurrency: int, timeout: float, per_host: int = 0
) -> aiohttp.ClientSession:
    """`per_host`: connections at once to one host and port (0: no limit). The delivery loop
    claims no more than that per host (`rules.choose`); the pool's limit is the backstop."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        limit=concurrency,
        limit_per_host=per_host,
        ttl_dns_cache=None,  # resolve (and check) on every new connection
        use_dns_cache=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0)),
        trust_env=False,
        auto_decompress=False,
    )


# IPv4 and IPv6 literals in an error text (a connect error lists the addresses it tried).
_ADDRESS = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}\b|(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"
)


def describe_error(exc: aiohttp.ClientError) -> str:
    """What `last_error` says of a failed POST: the kind of failure and the endpoint's own host and
    port, never an address its name resolved to (the licensee reads it)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {exc.host}:{exc.port} not accepted"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno).lower() if errno else "connection failed"
        return f"cannot connect to {exc.host}:{exc.port} ({reason})"
    return _ADDRESS.sub("<address>", f"{type(exc).__name__}: {exc}")[:300]


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
        await response.content.read(64 * 1024)  # drain a little; the body is never trusted or stored
        return response.status, dict(response.headers)


__all__ = ["GuardedResolver", "UnsafeURL", "check_literal_host", "describe_error", "make_session", "post"]
