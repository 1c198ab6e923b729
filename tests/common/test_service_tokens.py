"""The tokens the services really send each other (captured by a real HTTP receiver standing in for
the registry) open the one call each was made for, and nothing else: a leaked worker or consent-api
token cannot read audit entries, record licenses, create licensees or re-drive dead letters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from consent_api import recipients
from rescind_common.ids import new_id
from revocation_worker.intake.registry_client import RegistryClient

from support.helpers import assert_problem
from support.security import RegistryWorld, SecurityStack, World
from support.worker import Receiver


def sent_token(send: Callable[[str], Any]) -> dict[str, str]:
    """The Authorization header `send(url)` puts on its call to the registry at `url`."""
    receiver = Receiver()
    try:
        send(f"http://127.0.0.1:{receiver.port}")
        (request,) = receiver.requests
    finally:
        receiver.close()
    assert request.path == "/v1/holders"
    return {"Authorization": request.headers["authorization"]}


def workers_token(stack: SecurityStack) -> dict[str, str]:
    def send(url: str) -> None:
        ctx = stack.worker.ctx
        ctx = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update={"worker_registry_url": url}))
        client = RegistryClient(ctx)
        with pytest.raises(ValueError):  # the receiver answers no JSON
            client.holders([new_id("smp")])
        client.close()

    return sent_token(send)


def consent_apis_token(stack: SecurityStack) -> dict[str, str]:
    settings = stack.consent_app.state.ctx.settings

    def send(url: str) -> None:
        answer = recipients.lookup(settings.model_copy(update={"consent_registry_url": url}), [new_id("smp")])
        assert answer["status"] == "unavailable"

    return sent_token(send)


def refused_everywhere_else(worlds: dict[str, World], token: dict[str, str]) -> None:
    registry = worlds["registry"]
    assert isinstance(registry, RegistryWorld)
    # The registry (the token's audience): every other call is 403.
    for method, path, body in (
        ("POST", "/v1/licenses", registry.license_body("a")),
        ("GET", "/v1/licenses", None),
        ("POST", "/v1/licensees", {"name": "Leaked Inc"}),
        ("GET", "/v1/licensees", None),
        ("GET", f"/v1/licensees/{registry.subs['a']}", None),
    ):
        r = registry.client.request(method, path, json=body, headers=token)
        assert assert_problem(r, 403)["type"].endswith("/forbidden"), (path, r.text)
    # The other services do not take it at all: their audience is not the registry's.
    r = worlds["consent"].client.get("/v1/audit/entries", params={"subject_id": "sub_x"}, headers=token)
    assert assert_problem(r, 401)["detail"] == "The token's audience is wrong."
    worker = worlds["worker"].client
    for r in (
        worker.post(
            "/v1/operator/dead-letters/redrive", json={"licensee_id": registry.subs["a"]}, headers=token
        ),
        worker.get("/v1/operator/dead-letters", headers=token),
    ):
        assert_problem(r, 401)


@pytest.mark.parametrize(
    ("caller", "view", "other_view"),
    [(workers_token, "licenses", "samples"), (consent_apis_token, "samples", "licenses")],
    ids=["revocation-worker", "consent-api"],
)
def test_a_services_registry_token_opens_its_own_lookup_alone(
    sec_stack: SecurityStack, sec_worlds: dict[str, World], caller: Any, view: str, other_view: str
) -> None:
    token = caller(sec_stack)
    registry = sec_worlds["registry"]
    assert isinstance(registry, RegistryWorld)
    body = {"sample_ids": registry.samples_of["a"]}
    # Its own call works: the real answer names tenant a's licensee.
    r = registry.client.post("/v1/holders", json={**body, "view": view}, headers=token)
    assert r.status_code == 200 and registry.subs["a"] in r.text, r.text
    # The other caller's view of the same lookup does not.
    r = registry.client.post("/v1/holders", json={**body, "view": other_view}, headers=token)
    assert_problem(r, 403)
    refused_everywhere_else(sec_worlds, token)
