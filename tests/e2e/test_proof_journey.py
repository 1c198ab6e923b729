"""Issue 14's journey as a user plays it (`make run`, then `make demo`), on PostgreSQL and a real
broker: a purpose withdrawal reaches two holders exactly (a whole model for one, one shard for the
other), one answers completely, the other partially, the seller sees both by name, and the signed
proof verifies offline with `rescind proof verify` and with PyJWT against the published JWKS; one
changed byte fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from rescind_cli.demo import Outcome, Urls, story

from support.stack import Stack, running_on_postgres

RESCIND = str(Path(sys.executable).with_name("rescind"))


@pytest.fixture(scope="module")
def stack(pg_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_on_postgres("journey", pg_database, tmp_path_factory.mktemp("journey")) as s:
        yield s


@pytest.fixture(scope="module")
def outcome(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    urls = Urls(stack.url("consent"), stack.url("registry"), stack.url("worker"))
    return story(urls, stack.token, tmp_path_factory.mktemp("proofs"))


def verify_offline(proof: Path, jwks: Path) -> subprocess.CompletedProcess[str]:
    # No service URL in the environment: the command must not need the network.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESCIND_")}
    return subprocess.run(
        [RESCIND, "proof", "verify", str(proof), "--jwks", str(jwks)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_each_holder_is_told_exactly_what_to_act_on(outcome: Outcome) -> None:
    acme = {m["model_id"]: m for m in outcome.acme_notice["models"]}
    bolt = {m["model_id"]: m for m in outcome.bolt_notice["models"]}
    assert acme[outcome.acme_model]["scope"] == "whole"
    assert len(acme[outcome.acme_model]["license_ids"]) == 2
    assert bolt[outcome.bolt_model]["scope"] == "shards"
    assert bolt[outcome.bolt_model]["shard_ids"] == ["s1"]
    for notice in (outcome.acme_notice, outcome.bolt_notice):
        assert {lic["trigger"] for lic in notice["licenses"]} == {"purpose_withdrawal"}
        assert all(lic["purposes"] == ["model_training"] for lic in notice["licenses"])
    # Bolt's evaluation license was left alone: only its training license is named.
    assert len(outcome.bolt_notice["licenses"]) == 1


def test_the_seller_sees_every_holder_by_name_with_its_answer(outcome: Outcome) -> None:
    holders = {n["licensee_id"]: n for n in outcome.view["notices"]}
    acme, bolt = holders[outcome.acme_id], holders[outcome.bolt_id]
    assert (acme["licensee_name"], acme["status"], acme["final_status"]) == (
        "Acme Vision",
        "acknowledged",
        "deleted",
    )
    assert (bolt["licensee_name"], bolt["status"]) == ("Bolt Voice", "partially_acknowledged")
    assert {m["model_id"]: m["action"] for m in acme["models"]} == {outcome.acme_model: "retrained"}
    assert {m["model_id"]: m.get("action") for m in bolt["models"]} == {outcome.bolt_model: None}
    for holder in (acme, bolt):
        assert holder["evidence_digest"].startswith("sha256:")
        assert holder["told_at"] and holder["delivered_at"] and holder["deadline"]
        assert holder["overdue"] is False
    assert acme["evidence_digest"] != bolt["evidence_digest"]


def test_the_proof_verifies_offline_and_against_the_published_jwks(stack: Stack, outcome: Outcome) -> None:
    done = verify_offline(outcome.proof_file, outcome.jwks_file)
    assert done.returncode == 0, done.stdout + done.stderr

    token = outcome.proof_file.read_text().strip()
    client = jwt.PyJWKClient(f"{stack.url('consent')}/.well-known/jwks.json")
    key = client.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, key, algorithms=[header["alg"]], options={"verify_aud": False})
    assert claims["revocation"]["id"] == outcome.revocation_id
    told = {h["licensee_id"]: h for h in claims["notices"]}
    assert set(told) == {outcome.acme_id, outcome.bolt_id}
    for holder in told.values():
        assert holder["webhook_id"] and holder["notice_id"]
        assert holder["evidence_digest"].startswith("sha256:")
    assert told[outcome.acme_id]["final_answer"]["status"] == "acknowledged"
    assert told[outcome.acme_id]["final_answer"]["outcome"] == "deleted"
    assert told[outcome.bolt_id]["final_answer"]["status"] == "partially_acknowledged"
    assert told[outcome.acme_id]["first_delivery"]["status_code"] in (200, 204)
    assert {m["model_id"]: m["action"] for m in told[outcome.acme_id]["models"]} == {
        outcome.acme_model: "retrained"
    }


def test_one_changed_byte_fails_verification(outcome: Outcome, tmp_path: Path) -> None:
    token = outcome.proof_file.read_text().strip()
    header, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["notices"][0]["evidence_digest"] = "sha256:" + "0" * 64
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    for i, bad in enumerate(
        (f"{header}.{forged}.{signature}", token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])
    ):
        path = tmp_path / f"bad-{i}.jws"
        path.write_text(bad + "\n")
        done = verify_offline(path, outcome.jwks_file)
        assert done.returncode != 0, f"a changed proof verified: {done.stdout}"


def test_the_proof_says_one_purpose_was_withdrawn(outcome: Outcome) -> None:
    claims = jwt.decode(outcome.proof_file.read_text().strip(), options={"verify_signature": False})
    assert claims["revocation"]["trigger"] == "purpose_withdrawal"
    assert claims["revocation"]["purposes"] == ["model_training"]
    assert claims["samples"]["merkle_root"] and claims["samples"]["count"] == 4
