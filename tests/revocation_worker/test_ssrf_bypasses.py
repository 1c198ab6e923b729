"""SSRF bypass attempts that test_worker_endpoints.py does not already make: more spellings of
internal addresses through the API, host names that resolve internal at registration, DNS rebinding
to other loopback forms at delivery, and redirects towards an internal receiver.

Rebinding and redirect targets are loopback receivers only: if a guard failed, the connection would
still stay on this machine.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

import pytest

from support.helpers import assert_problem
from support.wait import wait_until
from support.worker import rebind_dns

STRICT: dict[str, Any] = {"worker_allow_networks": [], "worker_allow_http": False}

MORE_INTERNAL_URLS = [
    # 127.0.0.0/8 beyond 127.0.0.1
    "https://127.0.0.2/hook",
    "https://127.255.255.254/hook",
    # the far ends of 10/8, 172.16/12, 192.168/16
    "https://10.255.255.254/hook",
    "https://172.31.255.254/hook",
    "https://192.168.255.254/hook",
    # fc00::/7 beyond fc00::1
    "https://[fd12:3456::1]/hook",
    "https://[fdff:ffff:ffff::1]/hook",
    # IPv4-mapped IPv6, in hex and in full
    "https://[::ffff:7f00:1]/hook",
    "https://[0:0:0:0:0:ffff:127.0.0.1]/hook",
    "https://[::ffff:192.168.0.1]/hook",
    "https://[::ffff:ac10:1]/hook",  # 172.16.0.1
    "https://[::ffff:a9fe:a9fe]/hook",  # 169.254.169.254
    # IPv4-compatible, NAT64, 6to4 and Teredo wrappings of internal addresses
    "https://[::127.0.0.1]/hook",
    "https://[64:ff9b::7f00:1]/hook",
    "https://[2002:a00:1::1]/hook",
    "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/hook",
    # decimal, octal and hex spellings, whole and per part
    "https://017700000001/hook",
    "https://0177.0000.0000.0001/hook",
    "https://0x7f.0x0.0x0.0x1/hook",
    "https://0x7f.1/hook",
    "https://167772161/hook",  # 10.0.0.1
    "https://10.1/hook",
    "https://2852039166/hook",  # 169.254.169.254
    "https://0251.0376.0251.0376/hook",
    "https://0xa9fea9fe/hook",
    "https://0/hook",
    # case, ports, Unicode digits and full-width dots that IDNA folds to ASCII
    "https://LOCALHOST/hook",
    "https://127.0.0.1:443/hook",
    "https://[::1]:8443/hook",
    "https://\u2460\u2461\u2466.0.0.1/hook",
    "https://127\u30020\u30020\u30021/hook",
]


@pytest.mark.parametrize("url", MORE_INTERNAL_URLS)
def test_more_internal_spellings_are_refused(worker: Any, url: str) -> None:
    w = worker(**STRICT)
    _, h = w.licensee()
    body = assert_problem(w.client.post("/v1/endpoints", json={"url": url}, headers=h), 422, "body.url")
    assert body["type"].endswith("unsafe-url"), body
    assert w.client.get("/v1/endpoints", headers=h).json()["items"] == []


@pytest.mark.parametrize(
    ("family", "address"),
    [
        (socket.AF_INET, "10.0.0.7"),
        (socket.AF_INET, "172.20.1.1"),
        (socket.AF_INET, "192.168.0.10"),
        (socket.AF_INET, "169.254.169.254"),
        (socket.AF_INET6, "::1"),
        (socket.AF_INET6, "fd00::1"),
        (socket.AF_INET6, "::ffff:10.0.0.7"),
        (socket.AF_INET6, "fd00:ec2::254"),
    ],
)
def test_host_name_resolving_internal_at_registration_is_refused(
    worker: Any, monkeypatch: pytest.MonkeyPatch, family: int, address: str
) -> None:
    def lookup(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "internal.test", host
        sockaddr = (
            (address, int(port or 443)) if family == socket.AF_INET else (address, int(port or 443), 0, 0)
        )
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    w = worker(**STRICT)
    _, h = w.licensee()
    body = assert_problem(
        w.client.post("/v1/endpoints", json={"url": "https://internal.test/hook"}, headers=h), 422, "body.url"
    )
    # The rule is named; the address the name resolved to (a map of the internal network) is not.
    metadata = address in ("169.254.169.254", "fd00:ec2::254")
    assert body["rule"] == ("metadata-address" if metadata else "internal-address"), body
    assert ("metadata" if metadata else "private") in body["detail"], body
    text = json.dumps(body)
    for spelling in {address, str(ipaddress.ip_address(address)), ipaddress.ip_address(address).exploded}:
        assert spelling not in text, body


@pytest.mark.parametrize(
    ("family", "dial_ip"),
    [(socket.AF_INET, "127.0.0.2"), (socket.AF_INET6, "::ffff:127.0.0.1"), (socket.AF_INET6, "::1")],
)
def test_dns_rebinding_to_other_loopback_forms_is_refused_at_delivery(
    worker: Any, receiver: Any, monkeypatch: pytest.MonkeyPatch, family: int, dial_ip: str
) -> None:
    w = worker(worker_allow_networks=[], worker_allow_http=True)
    rcv = receiver()
    rebind_dns(monkeypatch, "rebind.test", "93.184.216.34", dial_ip, family)
    lic, h = w.licensee()
    w.register(h, f"http://rebind.test:{rcv.port}/hook")  # resolved public: accepted
    nid = w.make_notice(lic)
    w.deliver()
    d = wait_until(lambda: w.notice(h, nid)["deliveries"][0]["last_error"], what="a refused attempt")
    assert "refused address" in d and "private, loopback" in d, d
    assert dial_ip not in d and str(ipaddress.ip_address(dial_ip)) not in d, d
    assert rcv.count() == 0, "the connection must never reach the receiver"
    assert w.notice(h, nid)["status"] == "pending"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_towards_an_internal_address_are_not_followed(
    worker: Any, receiver: Any, status: int
) -> None:
    """An allowed endpoint answering with a redirect to another (internal) address: the worker does
    not follow it, and the redirect is not a success."""
    w = worker()  # loopback allowed: the endpoint itself is a local receiver
    internal = receiver()
    rcv = receiver(lambda n, req: (status, {"Location": internal.url}) if n == 0 else 200)
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    w.wait_status(h, nid, "delivered")
    assert [a.status_code for a in w.attempts(nid)] == [status, 200]
    assert internal.count() == 0, "the redirect was followed"
    for r in rcv.wait_for(2):
        r.verify(secret)
