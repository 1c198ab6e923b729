"""The webhook URL guard on values: which addresses the policy refuses (internal, metadata), which
it lets through, and a host refused when any address it resolves to is internal."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from revocation_worker.endpoints.urlguard import AddressPolicy, UnsafeURL, check_webhook_url


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fe80::1%eth0",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "2002:7f00:1::1",  # 6to4 around 127.0.0.1
    ],
)
def test_policy_refuses_internal(ip: str) -> None:
    with pytest.raises(UnsafeURL):
        AddressPolicy().check_ip(ip)


@pytest.mark.parametrize("ip", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_policy_accepts_public(ip: str) -> None:
    AddressPolicy().check_ip(ip)
    AddressPolicy(["127.0.0.0/8"]).check_ip(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "::ffff:a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix around 169.254.169.254
    ],
)
def test_policy_refuses_metadata_always(ip: str) -> None:
    for allowed in ([], ["0.0.0.0/0", "::/0"], ["169.254.0.0/16", "fd00::/8", "64:ff9b::/96"]):
        with pytest.raises(UnsafeURL, match="metadata"):
            AddressPolicy(allowed).check_ip(ip)


def test_policy_allows_only_the_ranges_named() -> None:
    policy = AddressPolicy(["127.0.0.0/8"])
    policy.check_ip("127.0.0.1")
    policy.check_ip("127.5.5.5")
    policy.check_ip("::ffff:127.0.0.1")  # the same address, IPv4-mapped
    for ip in ("10.0.0.1", "::1", "192.168.0.1", "169.254.169.254"):
        with pytest.raises(UnsafeURL):
            policy.check_ip(ip)
    v6 = AddressPolicy(["::1/128"])
    v6.check_ip(ipaddress.ip_address("::1"))
    with pytest.raises(UnsafeURL):
        v6.check_ip("127.0.0.1")


def test_policy_refuses_if_any_resolved_address_is_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(UnsafeURL, match="private, loopback") as refused:
        check_webhook_url("https://mixed.test/hook", AddressPolicy(), allow_http=False)
    # The rule, not the internal address the name resolved to.
    assert refused.value.rule == "internal-address" and "10.0.0.7" not in str(refused.value)
