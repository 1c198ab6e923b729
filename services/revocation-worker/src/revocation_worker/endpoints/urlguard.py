"""SSRF guard for webhook URLs: checked at registration and again on the address actually dialled.

Refused unless the operator allowed the range: private, loopback, link-local, shared (CGNAT),
multicast, reserved, unspecified and unique-local addresses, including IPv4-mapped IPv6 forms
and the decimal/octal/hex spellings that resolvers accept. Cloud metadata addresses are refused
always, whatever is allowed.

A refusal names the rule broken, never the address a name resolved to: a licensee probing host names
must not learn the internal network's map from the errors (at registration or in `last_error`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}


# NAT64 (RFC 6052 well-known prefix): 64:ff9b::a.b.c.d reaches a.b.c.d through a NAT64 gateway.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """The URL may not be used as a webhook endpoint; `rule` names the rule it breaks."""

    def __init__(self, message: str, rule: str = "invalid-url") -> None:
        super().__init__(message)
        self.rule = rule


METADATA_ADDRESS = "the host is or resolves to a cloud metadata address"
INTERNAL_ADDRESS = (
    "the host is or resolves to a private, loopback, link-local or reserved address "
    "outside the networks the operator allows"
)


def _unwrap(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        # IPv4-compatible (deprecated) ::a.b.c.d
        if int(ip) >> 32 == 0 and int(ip) > 1:
            return ipaddress.IPv4Address(int(ip))
    return ip


def _is_internal(ip: IPAddress) -> bool:
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"))
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


class AddressPolicy:
    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        self.allowed: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allow_networks]

    def check_ip(self, raw: str | IPAddress) -> None:
        ip = ipaddress.ip_address(raw) if isinstance(raw, str) else raw
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.ip_address(str(ip).split("%")[0])
        inner = _unwrap(ip)
        if ip in METADATA or inner in METADATA:
            raise UnsafeURL(METADATA_ADDRESS, "metadata-address")
        if not (_is_internal(ip) or _is_internal(inner)):
            return
        if any(
            inner in net or ip in net for net in self.allowed if net.version in (ip.version, inner.version)
        ):
            return
        raise UnsafeURL(INTERNAL_ADDRESS, "internal-address")

    def resolve_and_check(self, host: str, port: int) -> list[str]:
        """Resolve like the delivery client will, and refuse if ANY address is unsafe."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnsafeURL(f"cannot resolve {host!r}", "unresolvable") from exc
        addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addrs:
            raise UnsafeURL(f"{host!r} resolves to no address", "unresolvable")
        for addr in addrs:
            self.check_ip(addr)
        return addrs


def parse_webhook_url(url: str, *, allow_http: bool) -> tuple[str, str, int]:
    """Return (scheme, host, port); refuse anything but http(s) URLs without credentials."""
    if len(url) > 2048:
        raise UnsafeURL("the URL is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeURL("the URL must use https", "https-only")
    if scheme == "http" and not allow_http:
        raise UnsafeURL(
            "the URL must use https (plain http is only allowed in local development)", "https-only"
        )
    if parts.username or parts.password:
        raise UnsafeURL("the URL must not carry credentials", "no-credentials")
    host = parts.hostname
    if not host:
        raise UnsafeURL("the URL has no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


def check_webhook_url(url: str, policy: AddressPolicy, *, allow_http: bool) -> None:
    _, host, port = parse_webhook_url(url, allow_http=allow_http)
    policy.resolve_and_check(host, port)
