"""revocation-worker webhook endpoints: registration, the secret shown once, the SSRF guard at
registration and at delivery (DNS rebinding), rotation and disabling as a licensee sees them."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from revocation_worker.config import WorkerSettings
from revocation_worker.endpoints.urlguard import AddressPolicy, UnsafeURL, check_webhook_url

from support.helpers import assert_problem
from support.wait import wait_until
from support.worker import rebind_dns

# Production-like: nothing internal allowed, https only.
STRICT: dict[str, Any] = {"worker_allow_networks": [], "worker_allow_http": False}

PRIVATE_URLS = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://172.16.0.1/hook",
    "https://192.168.1.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook",
    "https://[fc00::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:10.0.0.1]/hook",
    "https://2130706433/hook",  # decimal 127.0.0.1
    "https://0177.0.0.1/hook",  # octal
    "https://0x7f000001/hook",  # hex
    "https://localhost/hook",
    "https://127.1/hook",
    "https://0.0.0.0/hook",
    "https://[::]/hook",
    "https://100.64.0.1/hook",  # shared address space (CGNAT)
    "https://[fe80::1]/hook",
    "https://[fd00:ec2::254]/hook",
]


def test_register_returns_the_secret_once(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    r = w.client.post(
        "/v1/endpoints", json={"url": "http://127.0.0.1:9/hook", "description": "ingest"}, headers=h
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 20
    assert created["licensee_id"] == lic and created["status"] == "active"
    assert created["description"] == "ingest"

    one = w.client.get(f"/v1/endpoints/{created['id']}", headers=h)
    assert one.status_code == 200 and "secret" not in one.json()
    assert created["secret"] not in one.text
    listed = w.client.get("/v1/endpoints", headers=h)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["items"]] == [created["id"]]
    assert created["secret"] not in listed.text

    # Another licensee does not see it, whatever it tries.
    _, other = w.licensee()
    assert_problem(w.client.get(f"/v1/endpoints/{created['id']}", headers=other), 404)
    assert_problem(w.client.post(f"/v1/endpoints/{created['id']}/rotate-secret", headers=other), 404)
    assert_problem(w.client.delete(f"/v1/endpoints/{created['id']}", headers=other), 404)
    assert w.client.get("/v1/endpoints", headers=other).json()["items"] == []


def test_a_licensee_has_at_most_ten_endpoints_by_default(worker: Any) -> None:
    """Each endpoint is one more POST of every notice: the eleventh is refused, naming the limit,
    before its URL is even looked at; other licensees are not affected."""
    w = worker()
    _, h = w.licensee()
    for i in range(10):
        w.register(h, f"http://127.0.0.1:9/hook/{i}")
    body = assert_problem(
        w.client.post("/v1/endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=h), 409
    )
    assert body["type"].endswith("/endpoint-limit") and body["limit"] == 10 and "10" in body["detail"], body
    assert len(w.client.get("/v1/endpoints", headers=h).json()["items"]) == 10
    _, other = w.licensee()
    w.register(other, "http://127.0.0.1:9/hook")


def test_disabled_endpoints_count_against_the_cap_and_deleting_frees_a_place(
    worker: Any, receiver: Any
) -> None:
    w = worker(worker_max_endpoints_per_licensee=2)
    gone = receiver(lambda n, req: 410)
    lic, h = w.licensee()
    disabled, _ = w.register(h, gone.url)
    w.register(h, "http://127.0.0.1:9/hook")
    w.make_notice(lic)
    w.deliver()
    w.wait_endpoint(h, disabled, "disabled")
    # Enabling it again must not lift a licensee over its cap: a disabled endpoint keeps its place.
    body = assert_problem(
        w.client.post("/v1/endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=h), 409
    )
    assert body["limit"] == 2
    assert w.client.delete(f"/v1/endpoints/{disabled}", headers=h).status_code == 204
    w.register(h, "http://127.0.0.1:9/x")


def test_deleting_and_registering_again_is_rate_limited(worker: Any) -> None:
    """A new endpoint is sent every undelivered notice: a delete-and-register loop would be
    redeliver without its rate limit."""
    w = worker(worker_redeliver_burst=2, worker_redeliver_per_minute=1)
    _, h = w.licensee()
    for _ in range(2):
        ep, _ = w.register(h, "http://127.0.0.1:9/hook")
        assert w.client.delete(f"/v1/endpoints/{ep}", headers=h).status_code == 204
    r = w.client.post("/v1/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=h)
    body = assert_problem(r, 429)
    assert body["type"].endswith("/register-rate-limited") and int(r.headers["retry-after"]) >= 1, body
    _, other = w.licensee()
    w.register(other, "http://127.0.0.1:9/hook")


def test_racing_registrations_never_pass_the_cap(worker: Any) -> None:
    w = worker(worker_max_endpoints_per_licensee=3)
    _, h = w.licensee()

    def one(i: int) -> int:
        return w.client.post("/v1/endpoints", json={"url": f"http://127.0.0.1:9/{i}"}, headers=h).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(8)))
    assert len(w.client.get("/v1/endpoints", headers=h).json()["items"]) == 3
    assert codes.count(201) == 3 and codes.count(409) == 5, codes


def test_secrets_are_stored_sealed(worker: Any) -> None:
    w = worker()
    _, h = w.licensee()
    ep, secret = w.register(h, "http://127.0.0.1:9/hook")
    from revocation_worker.endpoints.models import Endpoint

    with w.ctx.session_factory() as session:
        row = session.get(Endpoint, ep)
        assert row is not None
        assert secret.encode() not in row.secret_sealed
        assert secret.removeprefix("whsec_").encode() not in row.secret_sealed


def test_strict_is_the_default() -> None:
    """STRICT above is what an operator gets without configuring anything."""
    fields = WorkerSettings.model_fields
    assert fields["worker_allow_networks"].default == STRICT["worker_allow_networks"]
    assert fields["worker_allow_http"].default is STRICT["worker_allow_http"]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_ssrf_refused_by_default(worker: Any, url: str) -> None:
    w = worker(**STRICT)
    _, h = w.licensee()
    body = assert_problem(w.client.post("/v1/endpoints", json={"url": url}, headers=h), 422, "body.url")
    assert body["type"].endswith("unsafe-url")
    assert w.client.get("/v1/endpoints", headers=h).json()["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",  # plain http
        "https://user:pw@93.184.216.34/hook",  # credentials
        "https://token@93.184.216.34/hook",
        "ftp://93.184.216.34/hook",
        "file:///etc/passwd",
        "https:///nohost",
        "not a url",
    ],
)
def test_bad_urls_refused(worker: Any, url: str) -> None:
    w = worker(**STRICT)
    _, h = w.licensee()
    assert_problem(w.client.post("/v1/endpoints", json={"url": url}, headers=h), 422, "body.url")


def test_public_https_url_accepted_in_strict_mode(worker: Any) -> None:
    w = worker(**STRICT)
    _, h = w.licensee()
    r = w.client.post("/v1/endpoints", json={"url": "https://93.184.216.34/hook"}, headers=h)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/latest",
        "https://[::ffff:169.254.169.254]/latest",
        "https://169.254.170.2/v2/credentials",
        "http://169.254.169.254/latest",
    ],
)
def test_metadata_refused_even_when_everything_is_allowed(worker: Any, url: str) -> None:
    w = worker(worker_allow_networks=["0.0.0.0/0", "::/0"], worker_allow_http=True)
    _, h = w.licensee()
    body = assert_problem(w.client.post("/v1/endpoints", json={"url": url}, headers=h), 422, "body.url")
    assert "metadata" in body["detail"]


def test_operator_allowed_ranges_are_accepted(worker: Any) -> None:
    w = worker(worker_allow_networks=["10.0.0.0/8"], worker_allow_http=False)
    _, h = w.licensee()
    assert w.client.post("/v1/endpoints", json={"url": "https://10.1.2.3/hook"}, headers=h).status_code == 201
    assert_problem(
        w.client.post("/v1/endpoints", json={"url": "https://192.168.1.1/hook"}, headers=h), 422, "body.url"
    )


def test_only_licensees_manage_endpoints(worker: Any) -> None:
    w = worker()
    for role in ("subject", "operator"):
        h = w.headers(role, f"{role}-x")
        assert_problem(w.client.post("/v1/endpoints", json={"url": "http://127.0.0.1:9/"}, headers=h), 403)
        assert_problem(w.client.get("/v1/endpoints", headers=h), 403)
    assert_problem(w.client.get("/v1/endpoints"), 401)
    _, lic = w.licensee()
    assert_problem(w.client.get("/v1/operator/endpoints", headers=lic), 403)


# -- a host that does not resolve (AddressPolicy on values: tests/unit/test_url_policy.py) ----


def test_unresolvable_host_refused() -> None:
    with pytest.raises(UnsafeURL, match="resolve"):
        check_webhook_url("https://no-such-host.invalid/hook", AddressPolicy(), allow_http=False)


# -- DNS rebinding: checked again on the address actually dialled ---------------------


def test_dns_rebinding_refused_at_delivery(
    worker: Any, receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator allows no internal range; plain http only so the local receiver needs no TLS.
    w = worker(worker_allow_networks=[], worker_allow_http=True)
    rcv = receiver()
    rebind_dns(monkeypatch, "rebind.test", "93.184.216.34", "127.0.0.1")
    lic, h = w.licensee()
    w.register(h, f"http://rebind.test:{rcv.port}/hook")  # resolved public: accepted
    nid = w.make_notice(lic)
    w.deliver()

    def refused() -> dict[str, Any] | None:
        d = w.notice(h, nid)["deliveries"][0]
        return d if d["attempts"] >= 2 else None

    d = wait_until(refused, what="two refused attempts")
    assert d["last_status_code"] is None
    # The rule is named, not the internal address the name resolved to.
    assert "refused address" in d["last_error"] and "private, loopback" in d["last_error"], d
    attempts = w.attempts(nid)
    assert attempts and all("private, loopback" in (a.error or "") for a in attempts)
    assert all("127.0.0.1" not in (a.error or "") for a in attempts), [a.error for a in attempts]
    assert rcv.count() == 0, "the connection must never reach the receiver"
    assert w.notice(h, nid)["status"] == "pending"


def test_dns_rebinding_control_allowed_range_connects(
    worker: Any, receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control for the test above: the same fake resolution with loopback allowed does connect,
    so the refusal there is the guard's doing, not a broken fake."""
    w = worker(worker_allow_networks=["127.0.0.0/8"], worker_allow_http=True)
    rcv = receiver()
    rebind_dns(monkeypatch, "rebind.test", "93.184.216.34", "127.0.0.1")
    lic, h = w.licensee()
    _, secret = w.register(h, f"http://rebind.test:{rcv.port}/hook")
    nid = w.make_notice(lic)
    w.deliver()
    (got,) = rcv.wait_for(1)
    assert got.verify(secret)["data"]["notice_id"] == nid
    w.wait_status(h, nid, "delivered")


def test_a_connection_error_names_the_host_not_the_address_it_resolved_to(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An allowed name whose address refuses connections: `last_error` says so with the endpoint's
    own host and port, not with the (internal) address the name resolved to."""
    w = worker(worker_allow_networks=["127.0.0.0/8"], worker_allow_http=True)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rebind_dns(monkeypatch, "partner.test", "93.184.216.34", "127.0.0.1")
    lic, h = w.licensee()
    w.register(h, f"http://partner.test:{port}/hook")
    nid = w.make_notice(lic)
    w.deliver()
    d = wait_until(lambda: w.notice(h, nid)["deliveries"][0]["last_error"], what="a failed attempt")
    assert d == f"cannot connect to partner.test:{port} (connection refused)", d
    assert all("127.0.0.1" not in (a.error or "") for a in w.attempts(nid))


def test_literal_ip_checked_again_at_delivery(worker: Any, receiver: Any) -> None:
    """An endpoint accepted under a looser policy is refused when the delivering worker's policy
    no longer allows its address (IP literals never go through the resolver)."""
    loose = worker(worker_allow_networks=["127.0.0.0/8"], worker_allow_http=True)
    rcv = receiver()
    lic, h = loose.licensee()
    loose.register(h, rcv.url)
    nid = loose.make_notice(lic)
    strict = worker(worker_allow_networks=[], worker_allow_http=True)
    strict.deliver()
    d = wait_until(lambda: strict.notice(h, nid)["deliveries"][0]["last_error"], what="a refused attempt")
    assert "refused address" in d and "private, loopback" in d and "127.0.0.1" not in d, d
    assert rcv.count() == 0
