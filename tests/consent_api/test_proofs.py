"""What the seller sees of each holder, erasure that waits for the holders, and the signed proof of a
revocation (issue 14): the worker's real notice events go through consent-api's handler; the proof
is checked with PyJWT against the served JWKS and with `rescind proof verify` offline."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from support.helpers import assert_problem, bearer, get_json, grant, revoke, revoke_scope, sha
from support.notices import Worker, apply

RESCIND = str(Path(sys.executable).parent / "rescind")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DEADLINE = NOW + dt.timedelta(days=30)
EVIDENCE = "sha256:" + "e" * 64
ACK = "sha256:" + "a" * 64


def has(got: dict, expected: dict) -> bool:
    """`got` carries every field of `expected`, with that value."""
    return {k: got.get(k) for k in expected} == expected


def register_hashes(client, seller, hashes):
    r = client.post(
        "/v1/samples/batch",
        json={"samples": [{"kind": "face_image", "sha256": h} for h in hashes]},
        headers=seller,
    )
    assert r.status_code == 201, r.text
    return [s["id"] for s in r.json()["items"]]


def subject_of(consent) -> str:
    return str(jwt.decode(consent["receipt"], options={"verify_signature": False})["sub"])


def two_holders(worker: Worker, consent_id: str) -> list:
    """Acme holds the samples under two licenses and trained one model on both; Babel holds them
    under one license and trained one shard of its model on it."""
    return [
        worker.resolved("lic_acme", "lic_babel"),
        worker.created(
            "lic_acme",
            name="Acme Vision GmbH",
            deadline=DEADLINE,
            at=NOW,
            licenses=[
                {
                    "license_id": "lcn_a1",
                    "consent_id": consent_id,
                    "purposes": ["model_training"],
                    "trigger": "purpose_withdrawal",
                    "sample_count": 2,
                },
                {
                    "license_id": "lcn_a2",
                    "consent_id": consent_id,
                    "purposes": ["model_training"],
                    "trigger": "purpose_withdrawal",
                    "sample_count": 1,
                },
            ],
            models=[
                {
                    "model_id": "mdl_face",
                    "name": "facenet",
                    "version": "3",
                    "whole": True,
                    "license_ids": ["lcn_a1", "lcn_a2"],
                }
            ],
        ),
        worker.created(
            "lic_babel",
            name="Babel Speech Ltd",
            deadline=DEADLINE,
            at=NOW,
            licenses=[
                {
                    "license_id": "lcn_b1",
                    "consent_id": consent_id,
                    "purposes": ["model_training"],
                    "trigger": "purpose_withdrawal",
                    "sample_count": 2,
                }
            ],
            models=[
                {
                    "model_id": "mdl_voice",
                    "name": "babel-asr",
                    "version": "1.2",
                    "whole": False,
                    "shard_ids": ["shard-7"],
                    "license_ids": ["lcn_b1"],
                }
            ],
        ),
        worker.delivered("lic_acme", status_code=204, at=NOW + dt.timedelta(seconds=2)),
        worker.delivered("lic_babel", status_code=200, at=NOW + dt.timedelta(seconds=3)),
    ]


@pytest.fixture
def story(client, seller, db_url):
    """A seller with two samples under one consent for two purposes withdraws one purpose; both
    holders are told and the notices delivered."""
    hashes = [sha("p1"), sha("p2")]
    sids = register_hashes(client, seller, hashes)
    c = grant(client, seller, sids, purposes=["model_training", "evaluation"])
    rev = revoke_scope(client, seller, scope="purpose", purpose="model_training")
    worker = Worker(rev["id"], subject_of(c))
    assert all(apply(db_url, two_holders(worker, c["id"])))
    return {"consent": c, "revocation": rev, "worker": worker, "hashes": hashes, "sample_ids": sids}


def holders(client, seller, rev_id):
    got = get_json(client, f"/v1/revocations/{rev_id}", seller)
    return got, {n["licensee_id"]: n for n in got["notices"]}


def test_the_seller_sees_each_holder_by_name_with_delivery_answer_models_and_evidence(
    client, seller, db_url, story
):
    rev, worker = story["revocation"], story["worker"]
    got, by = holders(client, seller, rev["id"])
    assert got["status"] == "delivered"
    acme, babel = by["lic_acme"], by["lic_babel"]
    assert (acme["licensee_name"], babel["licensee_name"]) == ("Acme Vision GmbH", "Babel Speech Ltd")
    assert acme["status"] == babel["status"] == "delivered"
    assert acme["delivery_status_code"] == 204 and babel["delivery_status_code"] == 200
    assert acme["webhook_id"] == f"msg_{worker.notice('lic_acme')}"
    assert acme["notice_id"] == worker.notice("lic_acme")
    assert dt.datetime.fromisoformat(acme["told_at"]) == NOW
    assert dt.datetime.fromisoformat(acme["delivered_at"]) == NOW + dt.timedelta(seconds=2)
    assert dt.datetime.fromisoformat(acme["deadline"]) == DEADLINE and acme["overdue"] is False
    assert acme["final_status"] is None and acme["evidence_digest"] is None
    assert acme["models"] == [
        {
            "model_id": "mdl_face",
            "name": "facenet",
            "version": "3",
            "scope": "whole",
            "shard_ids": [],
            "action": None,
            "basis": None,
        }
    ]
    assert babel["models"][0]["scope"] == "shards" and babel["models"][0]["shard_ids"] == ["shard-7"]

    # Acme answers in full; Babel only for its samples, not for its model.
    assert all(
        apply(
            db_url,
            [
                worker.answered(
                    "lic_acme",
                    complete=True,
                    outcome="deleted",
                    models=[("mdl_face", "retrained")],
                    evidence_digest=EVIDENCE,
                    ack_digest=ACK,
                ),
                worker.answered(
                    "lic_babel", complete=False, outcome="deleted", ack_digest="sha256:" + "b" * 64
                ),
            ],
        )
    )
    got, by = holders(client, seller, rev["id"])
    acme, babel = by["lic_acme"], by["lic_babel"]
    assert got["status"] == "partially_acknowledged"
    assert acme["status"] == "acknowledged" and babel["status"] == "partially_acknowledged"
    assert (
        acme["final_status"] == "deleted"
        and acme["evidence_digest"] == EVIDENCE
        and acme["ack_digest"] == ACK
    )
    assert acme["models"][0]["action"] == "retrained" and acme["answered_at"] is not None
    assert babel["final_status"] == "deleted" and babel["models"][0]["action"] is None

    # A reminder, then the deadline passes for Babel: overdue, and the seller sees it.
    apply(
        db_url,
        [worker.reminded("lic_babel", deadline=DEADLINE), worker.overdue("lic_babel", deadline=DEADLINE)],
    )
    got, by = holders(client, seller, rev["id"])
    assert got["status"] == "overdue"
    assert by["lic_babel"]["overdue"] is True and by["lic_babel"]["status"] == "overdue"
    assert by["lic_acme"]["overdue"] is False
    # Babel's late full answer is stored; it stays marked as having been overdue.
    apply(
        db_url,
        [
            worker.answered(
                "lic_babel",
                complete=True,
                outcome="not_held",
                basis="never_received",
                models=[("mdl_voice", "exempt", "legal_obligation")],
            )
        ],
    )
    _, by = holders(client, seller, rev["id"])
    babel = by["lic_babel"]
    assert babel["status"] == "acknowledged" and babel["final_status"] == "not_held"
    assert babel["basis"] == "never_received" and babel["overdue"] is True
    assert babel["models"][0] == {
        "model_id": "mdl_voice",
        "name": "babel-asr",
        "version": "1.2",
        "scope": "shards",
        "shard_ids": ["shard-7"],
        "action": "exempt",
        "basis": "legal_obligation",
    }


def test_a_late_partial_answer_never_replaces_a_full_one_and_the_first_delivery_stays(
    client, seller, db_url, story
):
    """Replays and redeliveries: the proof names the first delivery and the full answer."""
    worker = story["worker"]
    full = worker.answered(
        "lic_acme",
        complete=True,
        outcome="deleted",
        models=[("mdl_face", "unlearned")],
        at=NOW + dt.timedelta(hours=2),
    )
    stale = worker.answered("lic_acme", complete=False, outcome="deleted", at=NOW + dt.timedelta(hours=1))
    again = worker.delivered("lic_acme", status_code=202, at=NOW + dt.timedelta(hours=3))
    assert apply(db_url, [full, stale, again, full]) == [True, True, True, False]
    _, by = holders(client, seller, story["revocation"]["id"])
    acme = by["lic_acme"]
    assert acme["status"] == "acknowledged" and acme["models"][0]["action"] == "unlearned"
    assert acme["delivery_status_code"] == 204


def test_every_step_is_on_the_subjects_audit_chain(client, seller, operator, db_url, story):
    worker = story["worker"]
    apply(
        db_url,
        [
            worker.answered(
                "lic_acme",
                complete=True,
                outcome="deleted",
                models=[("mdl_face", "retrained")],
                ack_digest=ACK,
            )
        ],
    )
    subject = subject_of(story["consent"])
    entries = get_json(client, "/v1/audit/entries", operator, subject_id=subject, limit=500)["items"]
    steps = [
        (e["action"], e["data"].get("licensee_id")) for e in entries if e["action"].startswith("notice.")
    ]
    assert steps == [
        ("notice.told", "lic_acme"),
        ("notice.told", "lic_babel"),
        ("notice.delivered", "lic_acme"),
        ("notice.delivered", "lic_babel"),
        ("notice.answered", "lic_acme"),
    ]
    answered = next(e for e in entries if e["action"] == "notice.answered")
    assert answered["data"]["ack_digest"] == ACK and answered["actor"] == "licensee"
    assert get_json(client, "/v1/audit/verify", operator)["ok"] is True


def _erase(client, headers) -> dict:
    r = client.post("/v1/rights-requests", json={"type": "erasure"}, headers=headers)
    assert r.status_code == 202, r.text
    return dict(r.json())


@pytest.mark.parametrize("babel", ["acknowledged", "overdue", "partial_past_deadline"])
def test_erasure_is_in_progress_until_every_holder_answered_or_is_overdue(client, token, db_url, babel):
    seller = bearer(token("subject"))
    c = grant(client, seller, register_hashes(client, seller, [sha("e1")]))
    req = _erase(client, seller)
    assert req["status"] == "in_progress" and req["completed_at"] is None
    worker = Worker(req["revocation_id"], subject_of(c))

    def status() -> dict:
        return get_json(client, f"/v1/rights-requests/{req['id']}", seller)

    apply(db_url, two_holders(worker, c["id"]))
    assert status()["status"] == "in_progress"
    apply(
        db_url,
        [worker.answered("lic_acme", complete=True, outcome="deleted", models=[("mdl_face", "retrained")])],
    )
    assert status()["status"] == "in_progress"
    if babel == "acknowledged":
        apply(
            db_url,
            [
                worker.answered(
                    "lic_babel", complete=True, outcome="deleted", models=[("mdl_voice", "unlearned")]
                )
            ],
        )
        expected = "completed"
    elif babel == "overdue":
        apply(db_url, [worker.overdue("lic_babel", deadline=DEADLINE)])
        expected = "completed_with_exceptions"
    else:
        apply(db_url, [worker.answered("lic_babel", complete=False, outcome="deleted")])
        assert status()["status"] == "in_progress"  # a partial answer before the deadline: wait
        apply(db_url, [worker.overdue("lic_babel", deadline=DEADLINE)])
        expected = "completed_with_exceptions"
    done = status()
    assert done["status"] == expected and done["completed_at"] is not None
    listed = get_json(client, "/v1/rights-requests", seller)["items"]
    assert [r["status"] for r in listed if r["id"] == req["id"]] == [expected]
    # The erased seller's proof still verifies: the record is pseudonymous and outlives erasure.
    proof = client.get(f"/v1/revocations/{req['revocation_id']}/proof", headers=seller).json()["proof"]
    claims = verify_with_pyjwt(client, proof)
    assert claims["revocation"]["trigger"] == "erasure" and claims["sample_count"] == 1
    assert [r["state"] for r in claims["consent_records"]] == ["withdrawn"]


def test_erasure_with_nothing_held_completes_when_the_worker_finds_no_holder(client, token, db_url):
    seller = bearer(token("subject"))
    c = grant(client, seller, register_hashes(client, seller, [sha("e2")]))
    req = _erase(client, seller)
    assert req["status"] == "in_progress"
    apply(db_url, [Worker(req["revocation_id"], subject_of(c)).resolved()])
    assert get_json(client, f"/v1/rights-requests/{req['id']}", seller)["status"] == "completed"
    # Nothing to withdraw at all: completed at once.
    assert _erase(client, bearer(token("subject")))["status"] == "completed"


def rfc6962_root(hex_hashes: list[str]) -> str:
    """An independent RFC 6962 Merkle tree hash (bottom-up, carrying the odd node up)."""
    level = [hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in sorted(set(hex_hashes))]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def served_jwks(client) -> dict:
    return get_json(client, "/.well-known/jwks.json", {})


def verify_with_pyjwt(client, token: str) -> dict:
    header = jwt.get_unverified_header(token)
    keys = {k["kid"]: k for k in served_jwks(client)["keys"]}
    assert header["typ"] == "rescind-proof+jwt" and header["alg"] == "EdDSA"
    return dict(jwt.decode(token, jwt.PyJWK(keys[header["kid"]]), algorithms=["EdDSA"]))


def test_the_proof_verifies_against_the_published_jwks_and_records_every_holder(
    client, seller, operator, db_url, story
):
    worker, rev = story["worker"], story["revocation"]
    apply(
        db_url,
        [
            worker.answered(
                "lic_acme",
                complete=True,
                outcome="deleted",
                models=[("mdl_face", "retrained")],
                evidence_digest=EVIDENCE,
                ack_digest=ACK,
            ),
            worker.answered("lic_babel", complete=False, outcome="deleted"),
        ],
    )
    r = client.get(f"/v1/revocations/{rev['id']}/proof", headers=seller)
    assert r.status_code == 200, r.text
    claims = verify_with_pyjwt(client, r.json()["proof"])
    assert claims["iss"] == "http://127.0.0.1:8001" and claims["issued_at"]
    assert has(
        claims["revocation"],
        {
            "id": rev["id"],
            "scope": "purpose",
            "trigger": "purpose_withdrawal",
            "purposes": ["model_training"],
        },
    )
    assert claims["revocation"]["created_at"] and claims["consents"] == [story["consent"]["id"]]
    assert claims["samples"]["merkle_root"] == rfc6962_root(story["hashes"])
    assert claims["samples"]["count"] == claims["sample_count"] == 2
    # The consent lives on for its other purpose: still given, model_training withdrawn.
    [record] = claims["consent_records"]
    assert has(
        record,
        {
            "id": story["consent"]["id"],
            "state": "given",
            "legal_basis": "consent",
            "withdrawn_purposes": ["model_training"],
        },
    )
    by = {n["licensee_id"]: n for n in claims["notices"]}
    acme, babel = by["lic_acme"], by["lic_babel"]
    assert acme["notice_id"] == worker.notice("lic_acme") and acme["licensee_name"] == "Acme Vision GmbH"
    assert acme["webhook_id"] == f"msg_{worker.notice('lic_acme')}"
    assert acme["first_delivery"]["status_code"] == 204 and acme["first_delivery"]["delivered_at"]
    assert has(acme["final_answer"], {"status": "acknowledged", "outcome": "deleted", "basis": None})
    assert [(m["model_id"], m["action"]) for m in acme["models"]] == [("mdl_face", "retrained")]
    assert acme["evidence_digest"] == EVIDENCE and acme["ack_digest"] == ACK
    assert acme["deadline"] and acme["overdue"] is False
    assert babel["final_answer"]["status"] == "partially_acknowledged"
    # Each step's audit position is the entry the chain holds.
    entries = get_json(client, "/v1/audit/entries", operator, subject_id=claims["sub"], limit=500)["items"]
    by_seq = {e["seq"]: e for e in entries}
    assert [s["step"] for s in acme["audit"]] == ["told", "delivered", "answered"]
    for s in acme["audit"] + babel["audit"]:
        entry = by_seq[s["seq"]]
        assert s["chain_id"] == claims["sub"] and entry["hash"] == s["hash"]
        assert entry["action"] == f"notice.{s['step']}"
    assert by_seq[claims["revocation"]["audit"]["seq"]]["action"] == "consent.revoked"

    # application/jose: the raw token; an operator reads anyone's; another seller gets a 404.
    raw = client.get(f"/v1/revocations/{rev['id']}/proof", headers={**seller, "Accept": "application/jose"})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/jose")
    assert verify_with_pyjwt(client, raw.text)["revocation"]["id"] == rev["id"]
    r = client.get(f"/v1/revocations/{rev['id']}/proof", headers=operator)
    assert r.status_code == 200 and verify_with_pyjwt(client, r.json()["proof"])["sub"] == claims["sub"]


def test_another_seller_gets_404_for_a_proof_and_a_licensee_403(client, seller, token, story):
    rev_id = story["revocation"]["id"]
    theirs = assert_problem(
        client.get(f"/v1/revocations/{rev_id}/proof", headers=bearer(token("subject"))), 404
    )
    missing = assert_problem(client.get("/v1/revocations/rev_nothing/proof", headers=seller), 404)
    assert theirs["title"] == missing["title"]
    assert_problem(client.get(f"/v1/revocations/{rev_id}/proof", headers=bearer(token("licensee"))), 403)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RESCIND, *args], capture_output=True, text=True, timeout=60)


def test_rescind_proof_verify_offline_and_a_changed_byte_fails(client, seller, db_url, story, tmp_path):
    worker = story["worker"]
    apply(
        db_url,
        [
            worker.answered(
                "lic_acme",
                complete=True,
                outcome="deleted",
                models=[("mdl_face", "retrained")],
                evidence_digest=EVIDENCE,
            )
        ],
    )
    proof = client.get(f"/v1/revocations/{story['revocation']['id']}/proof", headers=seller).json()["proof"]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(served_jwks(client)))
    path = tmp_path / "proof.jws"
    path.write_text(proof)

    ok = run_cli("proof", "verify", str(path), "--jwks", str(jwks))
    assert ok.returncode == 0, ok.stderr
    assert "valid: signed by key" in ok.stderr
    assert story["revocation"]["id"] in ok.stdout and "Acme Vision GmbH" in ok.stdout
    assert "facenet: retrained" in ok.stdout and "Babel Speech Ltd" in ok.stdout
    as_json = run_cli("proof", "verify", str(path), "--jwks", str(jwks), "--json")
    assert json.loads(as_json.stdout)["samples"]["merkle_root"] == rfc6962_root(story["hashes"])

    # The seller's own list of hashes matches the signed Merkle root; one sample short does not.
    samples = tmp_path / "samples.txt"
    samples.write_text("\n".join(story["hashes"]) + "\n")
    matched = run_cli("proof", "verify", str(path), "--jwks", str(jwks), "--samples", str(samples))
    assert matched.returncode == 0 and "match the signed merkle root" in matched.stderr, matched.stderr
    samples.write_text(json.dumps(story["hashes"][:1]))
    short = run_cli("proof", "verify", str(path), "--jwks", str(jwks), "--samples", str(samples))
    assert short.returncode == 1 and "not the ones the proof commits to" in short.stderr

    # One changed byte, anywhere in the payload: it no longer verifies.
    header, payload, signature = proof.split(".")
    i = len(payload) // 2
    flipped = payload[:i] + ("A" if payload[i] != "A" else "B") + payload[i + 1 :]
    path.write_text(f"{header}.{flipped}.{signature}")
    bad = run_cli("proof", "verify", str(path), "--jwks", str(jwks))
    assert bad.returncode == 1 and "INVALID" in bad.stderr and "Signature verification failed" in bad.stderr
    # A JWKS without the signing key: not valid either.
    path.write_text(proof)
    jwks.write_text(json.dumps({"keys": []}))
    assert run_cli("proof", "verify", str(path), "--jwks", str(jwks)).returncode == 1


def test_receipts_carry_kantara_controller_and_iso_27560_fields_and_verify_offline(
    client, seller, settings, tmp_path
):
    c = grant(client, seller, register_hashes(client, seller, [sha("r1")]))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(served_jwks(client)))
    # --url points nowhere: only the file is read.
    out = run_cli("receipt", "verify", c["receipt"], "--jwks", str(jwks), "--url", "http://127.0.0.1:9")
    assert out.returncode == 0, out.stderr
    claims = json.loads(out.stdout)
    [controller] = claims["piiControllers"]
    assert has(
        controller,
        {
            "piiController": settings.consent_controller_name,
            "contact": settings.consent_controller_contact,
            "address": settings.consent_controller_address,
            "email": settings.consent_controller_email,
            "phone": settings.consent_controller_phone,
            "piiControllerUrl": settings.consent_controller_url,
        },
    )
    assert controller["address"] and controller["phone"] and controller["email"]
    assert claims["legalBasis"] == "consent" and claims["consentState"] == "given"
    assert claims["withdrawalUrl"].endswith(f"/v1/consents/{c['id']}/revoke")
    assert claims["iso27560"]["state"] == "given" and claims["iso27560"]["withdrawal_method"] == "POST"
    header, payload, signature = c["receipt"].split(".")
    tampered = f"{header}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    bad = run_cli("receipt", "verify", tampered, "--jwks", str(jwks))
    assert bad.returncode == 1 and "INVALID" in bad.stderr


def test_a_revocation_of_one_consent_proves_its_samples_only(client, seller, story):
    """The Merkle root covers what this revocation withdrew, not the seller's other samples."""
    other = register_hashes(client, seller, [sha("o1")])
    c = grant(client, seller, other)
    rev = revoke(client, seller, c["id"])
    claims = verify_with_pyjwt(
        client, client.get(f"/v1/revocations/{rev['id']}/proof", headers=seller).json()["proof"]
    )
    assert claims["notices"] == [] and claims["sample_count"] == 1
    sample = get_json(client, f"/v1/samples/{other[0]}", seller)
    assert claims["samples"]["merkle_root"] == rfc6962_root([sample["sha256"]])
    assert claims["revocation"]["trigger"] == "withdrawal" and claims["revocation"]["scope"] == "consent"
    assert [(r["id"], r["state"]) for r in claims["consent_records"]] == [(c["id"], "withdrawn")]


def test_one_poll_of_several_sellers_steps_keeps_every_chain_whole(client, token, operator, db_url):
    """The consumer applies a poll of many sellers' steps at once: each chain gets its steps in
    order, every chain head matches its last entry."""
    workers = []
    for _ in range(3):
        seller = bearer(token("subject"))
        c = grant(client, seller, register_hashes(client, seller, [sha("m")]))
        workers.append((Worker(revoke(client, seller, c["id"])["id"], subject_of(c)), c))
    poll = []
    for step in range(3):
        for w, c in workers:
            poll += (
                two_holders(w, c["id"])[1 + 2 * step : 3 + 2 * step]
                if step < 2
                else [
                    w.answered(
                        "lic_acme", complete=True, outcome="deleted", models=[("mdl_face", "retrained")]
                    )
                ]
            )
    assert all(apply(db_url, poll))
    assert get_json(client, "/v1/audit/verify", operator)["ok"] is True
    for w, _ in workers:
        entries = get_json(client, "/v1/audit/entries", operator, subject_id=w.subject_id)["items"]
        assert [e["action"] for e in entries if e["action"].startswith("notice.")] == [
            "notice.told",
            "notice.told",
            "notice.delivered",
            "notice.delivered",
            "notice.answered",
        ]


def test_a_step_goes_on_the_chain_of_the_revocations_seller_whatever_the_event_names(
    client, token, operator, db_url
):
    a, b = bearer(token("subject")), bearer(token("subject"))
    ca = grant(client, a, register_hashes(client, a, [sha("a")]))
    cb = grant(client, b, register_hashes(client, b, [sha("b")]))
    rev = revoke(client, a, ca["id"])["id"]
    # The event names seller b; the revocation is seller a's.
    apply(db_url, [Worker(rev, subject_of(cb)).created("lic_acme", name="Acme", deadline=DEADLINE)])

    def notice_steps(subject: str) -> list[str]:
        items = get_json(client, "/v1/audit/entries", operator, subject_id=subject)["items"]
        return [e["action"] for e in items if e["action"].startswith("notice.")]

    assert notice_steps(subject_of(ca)) == ["notice.told"]
    assert notice_steps(subject_of(cb)) == []
