"""Final answers per holder (issue 14): a notice is acknowledged only when the samples are deleted or
justified and every model it named is answered; partial answers are stored, shown and announced;
evidence is digested; an ack may carry a detached signature by a key the licensee registered."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.notices.rules import canonical_json, digest

from support.helpers import assert_problem, walk
from support.worker import outbox_events

M1 = {"model_id": "mdl_answers_1", "name": "faces", "version": "1"}
M2 = {"model_id": "mdl_answers_2", "name": "voices", "version": "4"}


def ack(w: Any, h: dict[str, str], nid: str, body: dict[str, Any]) -> dict[str, Any]:
    r = w.client.post(f"/v1/notices/{nid}/ack", json=body, headers=h)
    assert r.status_code == 200, r.text
    return dict(r.json())


def answered(w: Any, lic: str, kind: str) -> list[pb.NoticeAcknowledged]:
    return [getattr(ev, kind) for row, ev in outbox_events(w.ctx, lic) if row.event_type == kind]


def test_samples_deleted_false_without_justification_does_not_acknowledge(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    nid = w.make_notice(lic, models=[])
    got = ack(w, h, nid, {"status": "completed", "samples_deleted": False})
    assert got["status"] == "partially_acknowledged" and got["acknowledged_at"] is None
    assert got["answer"]["outcome"] is None and got["answer"]["samples_answered"] is False
    assert [n["id"] for n in walk(w.client, "/v1/notices", h, 10, status="partially_acknowledged")] == [nid]
    (partial,) = answered(w, lic, "notice_partially_acknowledged")
    assert partial.complete is False and partial.outcome == ""
    assert answered(w, lic, "notice_acknowledged") == []


def test_an_ack_omitting_a_named_model_does_not_acknowledge(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    w.register(h, "http://127.0.0.1:9/hook")  # no loop runs: the delivery stays pending
    nid = w.make_notice(lic, models=[M1, M2])
    got = ack(
        w,
        h,
        nid,
        {
            "status": "completed",
            "samples_deleted": True,
            "models": [{"model_id": M1["model_id"], "action": "retrained"}],
        },
    )
    assert got["status"] == "partially_acknowledged"
    assert got["answer"]["missing_models"] == [M2["model_id"]]
    assert got["answer"]["outcome"] == "deleted" and got["answer"]["complete"] is False
    # Still owed: its delivery is not cancelled.
    assert [d["status"] for d in got["deliveries"]] == ["pending"]


def test_partial_then_complete_accumulates_and_stays_acknowledged(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    nid = w.make_notice(lic, models=[M1, M2])
    first = ack(
        w,
        h,
        nid,
        {
            "outcome": "deleted",
            "models": [{"model_id": M1["model_id"], "action": "unlearned"}],
            "evidence": {"job_ids": ["del-1"], "attestation": "deleted from every store"},
        },
    )
    assert first["status"] == "partially_acknowledged"
    second = ack(
        w,
        h,
        nid,
        {
            "models": [{"model_id": M2["model_id"], "action": "exempt", "basis": "legal_claims"}],
            "evidence": {"job_ids": ["del-2"], "run_ids": ["run-9"]},
        },
    )
    assert second["status"] == "acknowledged" and second["acknowledged_at"]
    a = second["answer"]
    assert a["outcome"] == "deleted" and a["complete"] is True and a["missing_models"] == []
    assert a["models"] == [
        {"model_id": M1["model_id"], "action": "unlearned", "basis": None},
        {"model_id": M2["model_id"], "action": "exempt", "basis": "legal_claims"},
    ]
    evidence = {
        "job_ids": ["del-1", "del-2"],
        "attestation": "deleted from every store",
        "run_ids": ["run-9"],
    }
    assert a["evidence"] == evidence
    assert a["evidence_digest"] == digest(evidence)
    assert a["ack_digest"].startswith("sha256:") and a["signature_verified"] is False
    assert w.notice(h, nid)["answer"] == a

    (partial,) = answered(w, lic, "notice_partially_acknowledged")
    (done,) = answered(w, lic, "notice_acknowledged")
    assert partial.complete is False and done.complete is True
    assert done.action == pb.ACK_ACTION_COMPLETED and done.outcome == "deleted"
    assert [(m.model_id, m.action, m.basis) for m in done.model_answers] == [
        (M1["model_id"], "unlearned", ""),
        (M2["model_id"], "exempt", "legal_claims"),
    ]
    assert list(done.model_ids) == [M1["model_id"]]  # acted on; the exempt one is not
    assert done.evidence_digest == a["evidence_digest"] and done.ack_digest == a["ack_digest"]
    answered_at = dt.datetime.fromisoformat(a["answered_at"].replace("Z", "+00:00"))
    assert done.answered_at.ToDatetime(tzinfo=dt.UTC) == answered_at

    # Acknowledged stays acknowledged: a later ack changes nothing and tells nobody.
    again = ack(w, h, nid, {"status": "completed", "samples_deleted": False})
    assert again["status"] == "acknowledged" and again["answer"] == a
    assert len(answered(w, lic, "notice_acknowledged")) == 1


def test_justified_outcomes_acknowledge(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    not_held = w.make_notice(lic, models=[])
    exempt = w.make_notice(lic, models=[M1])
    got = ack(
        w,
        h,
        not_held,
        {"status": "completed", "samples_deleted": False, "outcome": "not_held", "reason": "never_received"},
    )
    assert got["status"] == "acknowledged" and got["answer"]["reason"] == "never_received"
    got = ack(
        w,
        h,
        exempt,
        {
            "outcome": "exempt",
            "basis": "legal_obligation",
            "models": [{"model_id": M1["model_id"], "action": "withdrawn"}],
        },
    )
    assert got["status"] == "acknowledged" and got["answer"]["basis"] == "legal_obligation"
    (done,) = [e for e in answered(w, lic, "notice_acknowledged") if e.outcome == "exempt"]
    assert done.basis == "legal_obligation"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"outcome": "not_held"}, "body.reason"),
        ({"outcome": "not_held", "reason": "lost_it"}, "body.reason"),
        ({"outcome": "exempt"}, "body.basis"),
        ({"outcome": "exempt", "basis": "we_said_so"}, "body.basis"),
        ({"outcome": "deleted", "reason": "never_received"}, "body.reason"),
        ({"outcome": "shredded"}, "body.outcome"),
        ({"samples_deleted": True, "outcome": "exempt", "basis": "legal_claims"}, "body.samples_deleted"),
        ({"models": [{"model_id": "mdl_answers_1", "action": "exempt"}]}, "body.models[0].basis"),
        ({"models": [{"model_id": "mdl_elsewhere", "action": "retrained"}]}, "body.models[0].model_id"),
        ({"evidence": {"job_ids": "not-a-list"}}, "body.evidence.job_ids"),
        ({"outcome": "deleted", "signature": "not-a-jws"}, "body.signature"),
    ],
)
def test_bad_answers_name_the_field(worker: Any, body: dict[str, Any], field: str) -> None:
    w = worker()
    lic, h = w.licensee()
    nid = w.make_notice(lic, models=[M1])
    assert_problem(w.client.post(f"/v1/notices/{nid}/ack", json=body, headers=h), 422, field)
    got = w.notice(h, nid)
    assert got["status"] == "pending" and got["answer"] is None


# -- signatures ---------------------------------------------------------------------------------


def _ed25519() -> tuple[Any, dict[str, Any]]:
    private = ed25519.Ed25519PrivateKey.generate()
    return private, dict(OKPAlgorithm.to_jwk(private.public_key(), as_dict=True))


def _p256() -> tuple[Any, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    return private, dict(ECAlgorithm.to_jwk(private.public_key(), as_dict=True))


def detached(body: dict[str, Any], private: Any, alg: str, kid: str) -> str:
    """RFC 7515 appendix F: a compact JWS over the canonical body, its payload cut out."""
    token = jwt.api_jws.encode(canonical_json(body), private, algorithm=alg, headers={"kid": kid})
    header, _, signature = token.split(".")
    return f"{header}..{signature}"


@pytest.mark.parametrize(("make", "alg"), [(_ed25519, "EdDSA"), (_p256, "ES256")])
def test_a_signed_ack_verifies_and_a_bad_signature_is_refused(worker: Any, make: Any, alg: str) -> None:
    w = worker()
    lic, h = w.licensee()
    private, jwk = make()
    r = w.client.post("/v1/ack-keys", json={"jwk": {**jwk, "kid": "ack-2026"}}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["alg"] == alg and r.json()["kid"] == "ack-2026" and "d" not in r.json()["jwk"]
    nid = w.make_notice(lic, models=[M1])
    body = {
        "outcome": "deleted",
        "models": [{"model_id": M1["model_id"], "action": "retrained"}],
        "evidence": {"run_ids": ["run-1"], "attestation": "signed by the DPO"},
    }

    # Signed over another body (a changed byte), or by a key nobody registered: refused, nothing stored.
    tampered = detached({**body, "outcome": "exempt"}, private, alg, "ack-2026")
    assert_problem(
        w.client.post(f"/v1/notices/{nid}/ack", json={**body, "signature": tampered}, headers=h),
        422,
        "body.signature",
    )
    stranger, _ = make()
    foreign = detached(body, stranger, alg, "ack-2026")
    assert_problem(
        w.client.post(f"/v1/notices/{nid}/ack", json={**body, "signature": foreign}, headers=h),
        422,
        "body.signature",
    )
    unknown_kid = detached(body, private, alg, "not-registered")
    assert_problem(
        w.client.post(f"/v1/notices/{nid}/ack", json={**body, "signature": unknown_kid}, headers=h),
        422,
        "body.signature",
    )
    assert w.notice(h, nid)["answer"] is None

    got = ack(w, h, nid, {**body, "signature": detached(body, private, alg, "ack-2026")})
    assert got["status"] == "acknowledged" and got["answer"]["signature_verified"] is True
    (done,) = answered(w, lic, "notice_acknowledged")
    assert done.signature_verified is True


def test_another_licensees_key_does_not_verify_my_ack(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    _, other_h = w.licensee()
    private, jwk = _ed25519()
    assert (
        w.client.post("/v1/ack-keys", json={"jwk": {**jwk, "kid": "k"}}, headers=other_h).status_code == 201
    )
    nid = w.make_notice(lic, models=[])
    body = {"outcome": "deleted"}
    r = w.client.post(
        f"/v1/notices/{nid}/ack", json={**body, "signature": detached(body, private, "EdDSA", "k")}, headers=h
    )
    assert_problem(r, 422, "body.signature")


def test_ack_keys_are_own_only(worker: Any) -> None:
    w = worker()
    _, h = w.licensee()
    _, other_h = w.licensee()
    private, jwk = _ed25519()
    created = w.client.post("/v1/ack-keys", json={"jwk": jwk}, headers=h).json()
    assert created["kid"] and created["id"].startswith("akk")  # kid: the RFC 7638 thumbprint
    assert [k["id"] for k in walk(w.client, "/v1/ack-keys", h, 10)] == [created["id"]]
    assert walk(w.client, "/v1/ack-keys", other_h, 10) == []
    assert_problem(w.client.get(f"/v1/ack-keys/{created['id']}", headers=other_h), 404)
    assert_problem(w.client.delete(f"/v1/ack-keys/{created['id']}", headers=other_h), 404)
    assert_problem(w.client.post("/v1/ack-keys", json={"jwk": jwk}, headers=h), 409)

    # A private key, an unsupported curve or kind: refused, naming the member.
    full = dict(OKPAlgorithm.to_jwk(private, as_dict=True))
    assert_problem(w.client.post("/v1/ack-keys", json={"jwk": full}, headers=h), 422, "body.jwk.d")
    assert_problem(
        w.client.post("/v1/ack-keys", json={"jwk": {**jwk, "crv": "X25519"}}, headers=h), 422, "body.jwk.crv"
    )
    assert_problem(
        w.client.post("/v1/ack-keys", json={"jwk": {"kty": "RSA", "n": "x", "e": "AQAB"}}, headers=h),
        422,
        "body.jwk.kty",
    )
    assert_problem(
        w.client.post("/v1/ack-keys", json={"jwk": {**jwk, "x": "AAAA", "kid": "short"}}, headers=h),
        422,
        "body.jwk.x",
    )

    assert w.client.delete(f"/v1/ack-keys/{created['id']}", headers=h).status_code == 204
    assert walk(w.client, "/v1/ack-keys", h, 10) == []
    assert_problem(w.client.get("/v1/ack-keys", headers=w.operator), 403)


# -- deadlines per licensee ------------------------------------------------------------------------


def test_operator_sets_a_licensees_deadline(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    r = w.client.get(f"/v1/licensees/{lic}/policy", headers=w.operator)
    assert r.status_code == 200 and r.json()["default"] is True
    assert r.json()["effective_deadline_months"] == 1

    r = w.client.put(f"/v1/licensees/{lic}/policy", json={"deadline_days": 10}, headers=w.operator)
    assert r.status_code == 200, r.text
    assert r.json()["deadline_days"] == 10 and r.json()["default"] is False
    n = w.notice(h, w.make_notice(lic))
    gap = dt.datetime.fromisoformat(n["deadline"].replace("Z", "+00:00")) - dt.datetime.fromisoformat(
        n["revoked_at"].replace("Z", "+00:00")
    )
    assert gap == dt.timedelta(days=10)

    r = w.client.put(f"/v1/licensees/{lic}/policy", json={"deadline_months": 2}, headers=w.operator)
    assert r.json()["deadline_months"] == 2 and r.json()["deadline_days"] is None
    assert (
        w.client.get(f"/v1/licensees/{lic}/policy", headers=w.operator).json()["effective_deadline_months"]
        == 2
    )

    assert_problem(
        w.client.put(
            f"/v1/licensees/{lic}/policy", json={"deadline_days": 5, "deadline_months": 1}, headers=w.operator
        ),
        422,
        "body.deadline_days",
    )
    assert_problem(
        w.client.put(f"/v1/licensees/{lic}/policy", json={"deadline_days": 0}, headers=w.operator),
        422,
        "body.deadline_days",
    )
    # The licensee itself may neither read nor set it.
    assert_problem(w.client.get(f"/v1/licensees/{lic}/policy", headers=h), 403)
    assert_problem(w.client.put(f"/v1/licensees/{lic}/policy", json={"deadline_days": 90}, headers=h), 403)
    # Neither field: back to the default.
    assert w.client.put(f"/v1/licensees/{lic}/policy", json={}, headers=w.operator).json()["default"] is True
