"""Rate-limit keys behind a proxy (issue 13, finding 5): callers without a token reaching the service
through a trusted proxy (RESCIND_TRUSTED_PROXIES) get a bucket each, by their X-Forwarded-For
address; the header from anyone else is ignored, so it cannot buy a forger fresh buckets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from registry.main import create_app as create_registry_app
from rescind_common.settings import RescindSettings

from support.registry import make_registry_settings
from support.security import SecurityStack

PROXY = "10.20.0.7"
OUTSIDER = "198.51.100.7"


@pytest.fixture
def behind(sec_stack: SecurityStack) -> Iterator[Any]:
    """behind(peer) -> a TestClient of the registry (1 request/s, burst 2, proxies 10.20.0.0/16
    trusted) whose socket peer is `peer`."""
    settings = make_registry_settings(
        sec_stack.urls["registry"],
        sec_stack.state_dir,
        rate_limit_per_second=1,
        rate_limit_burst=2,
        trusted_proxies=["10.20.0.0/16"],
    )
    app = create_registry_app(settings)
    app.state.rate_limiter.clock = lambda: 0.0  # no refill during the test
    clients: list[TestClient] = []

    def make(peer: str) -> TestClient:
        client = TestClient(app, client=(peer, 40000))
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()
    app.state.ctx.engine.dispose()


def _get(client: TestClient, forwarded: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.get("/v1/licenses", headers=headers).status_code


def test_two_clients_behind_a_trusted_proxy_get_a_bucket_each(behind: Any) -> None:
    proxy = behind(PROXY)
    # 401: let through to the route (no token); 429: refused by the rate limiter.
    assert [_get(proxy, "203.0.113.1") for _ in range(3)] == [401, 401, 429]
    assert [_get(proxy, "203.0.113.2") for _ in range(3)] == [401, 401, 429]
    # What the client wrote left of the proxy's entry is not believed: still 203.0.113.1's bucket.
    assert _get(proxy, "192.0.2.99, 203.0.113.1") == 429
    # Through two trusted proxies, the first untrusted hop from the right is the client.
    assert [_get(proxy, "203.0.113.3, 10.20.5.5") for _ in range(3)] == [401, 401, 429]


def test_a_forged_header_from_an_untrusted_peer_is_ignored(behind: Any) -> None:
    outsider = behind(OUTSIDER)
    codes = [_get(outsider, f"203.0.113.{i}") for i in range(10, 13)]
    assert codes == [401, 401, 429]  # one bucket, the socket address's, whatever the header says
    # And it did not spend the buckets of the addresses it named.
    assert _get(behind(PROXY), "203.0.113.10") == 401


def test_trusted_proxies_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RescindSettings().trusted_proxies == []
    monkeypatch.setenv("RESCIND_TRUSTED_PROXIES", '["10.0.0.0/8", "fd00::/8"]')
    assert RescindSettings().trusted_proxies == ["10.0.0.0/8", "fd00::/8"]
    monkeypatch.setenv("RESCIND_TRUSTED_PROXIES", '["not-a-network"]')
    with pytest.raises(ValidationError, match="not-a-network"):
        RescindSettings()
