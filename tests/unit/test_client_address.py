"""Which address keys a caller without a token (pure logic of rescind_common.ratelimit)."""

from __future__ import annotations

from typing import Any

from rescind_common.ratelimit import client_address, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "fd00::/8"])


def scope(peer: str, *forwarded: str) -> dict[str, Any]:
    return {"client": (peer, 1), "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]}


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address(scope("10.1.1.1", "203.0.113.1")) == "10.1.1.1"


def test_an_untrusted_peer_is_the_caller() -> None:
    assert client_address(scope("198.51.100.1", "203.0.113.1"), TRUSTED) == "198.51.100.1"


def test_the_rightmost_untrusted_hop_is_the_caller() -> None:
    assert client_address(scope("10.1.1.1", "6.6.6.6, 203.0.113.1"), TRUSTED) == "203.0.113.1"
    assert client_address(scope("10.1.1.1", "203.0.113.1, 10.2.2.2"), TRUSTED) == "203.0.113.1"
    assert client_address(scope("10.1.1.1", "6.6.6.6", "203.0.113.1, 10.9.9.9"), TRUSTED) == "203.0.113.1"


def test_ipv6_and_mapped_ipv4_peers() -> None:
    assert client_address(scope("fd00::1", "2001:db8::5"), TRUSTED) == "2001:db8::5"
    assert client_address(scope("::ffff:10.1.1.1", "203.0.113.1"), TRUSTED) == "203.0.113.1"


def test_garbage_or_no_header_keys_by_the_proxy() -> None:
    assert client_address(scope("10.1.1.1", "203.0.113.1, bogus"), TRUSTED) == "10.1.1.1"
    assert client_address(scope("10.1.1.1"), TRUSTED) == "10.1.1.1"
    assert client_address(scope("10.1.1.1", "10.3.3.3"), TRUSTED) == "10.1.1.1"
