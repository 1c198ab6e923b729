"""Granting consent: the record, its signed receipt (verifiable with nothing but the JWKS), lists."""

from __future__ import annotations

import base64
import datetime as dt
import json

import jwt
import pytest

from support.helpers import assert_problem, bearer, get_json, grant, register, revoke, walk


def _jwks_keys(client) -> dict[str, jwt.PyJWK]:
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    keys = r.json()["keys"]
    assert keys
    for k in keys:
        assert "d" not in k, "a private key component is published"
    return {k["kid"]: jwt.PyJWK(k) for k in keys}


def verify_receipt(client, receipt: str) -> dict:
    """What a seller app or auditor does: fetch the JWKS, pick the key by kid, verify EdDSA."""
    header = jwt.get_unverified_header(receipt)
    assert header["alg"] == "EdDSA"
    keys = _jwks_keys(client)
    assert header["kid"] in keys, "the receipt's kid is not in the published JWKS"
    return jwt.decode(receipt, keys[header["kid"]], algorithms=["EdDSA"], options={"verify_aud": False})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_grant_returns_active_consent_with_verifiable_receipt(client, seller, settings):
    sids = register(client, seller, 3)
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=90)).replace(microsecond=0)
    body = {
        "sample_ids": sids,
        "purposes": ["model_training", "evaluation"],
        "licensee_id": "acme-ai",
        "expires_at": expires.isoformat().replace("+00:00", "Z"),
        "compensation": {"amount": "12.50", "currency": "EUR"},
    }
    r = client.post("/v1/consents", json=body, headers=seller)
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["id"].startswith("cns_")
    assert c["status"] == "active"
    assert c["purposes"] == ["model_training", "evaluation"]
    assert c["licensee_id"] == "acme-ai"
    assert dt.datetime.fromisoformat(c["expires_at"].replace("Z", "+00:00")) == expires
    assert c["compensation"] == {"amount": "12.50", "currency": "EUR"}
    assert c["sample_count"] == c["active_sample_count"] == 3
    assert sorted(c["sample_ids"]) == sorted(sids)
    assert c["revoked_sample_ids"] == [] and c["revoked_purposes"] == []
    assert c["ended_at"] is None

    receipt = c["receipt"]
    assert receipt.count(".") == 2  # compact JWS
    claims = verify_receipt(client, receipt)
    assert claims["jti"] == c["receipt_id"]
    assert claims["consent_id"] == c["id"]
    assert claims["purposes"] == ["model_training", "evaluation"]
    assert claims["licensee_id"] == "acme-ai"
    assert sorted(claims["sample_ids"]) == sorted(sids)
    assert claims["sample_count"] == 3
    assert dt.datetime.fromisoformat(claims["expires_at"].replace("Z", "+00:00")) == expires
    assert claims["compensation"] == {"amount": "12.50", "currency": "EUR"}
    # Kantara / ISO 27560 record fields a consent-receipt reader expects
    assert claims["piiPrincipalId"] and claims["piiPrincipalId"] == claims["sub"]
    assert claims["piiControllers"] and claims["piiControllers"][0]["piiController"]
    assert claims["piiControllers"][0]["contact"]
    assert claims["withdrawal"]["url"].endswith(f"/v1/consents/{c['id']}/revoke")
    assert claims["withdrawal"]["url"].startswith(settings.consent_public_url)
    assert claims["withdrawal"]["method"] == "POST"
    assert claims["sensitive"] is True  # face images are biometric
    assert abs(claims["iat"] - dt.datetime.now(dt.UTC).timestamp()) < 120
    # the seller's token `sub` never appears in the receipt (pseudonymous subject id instead)
    assert "seller-" not in json.dumps(claims)


def test_receipt_of_any_licensee_and_no_expiry(client, seller):
    c = grant(client, seller, register(client, seller))
    assert c["licensee_id"] is None and c["expires_at"] is None and c["compensation"] is None
    claims = verify_receipt(client, c["receipt"])
    assert claims["licensee_id"] is None and claims["expires_at"] is None


def test_receipt_is_also_returned_when_reading_the_consent(client, seller):
    c = grant(client, seller, register(client, seller))
    again = get_json(client, f"/v1/consents/{c['id']}", seller)
    assert again["receipt"] == c["receipt"] and again["receipt_id"] == c["receipt_id"]
    assert verify_receipt(client, again["receipt"])["consent_id"] == c["id"]


def test_receipt_with_one_byte_changed_fails_verification(client, seller):
    c = grant(client, seller, register(client, seller), purposes=["evaluation"])
    header, payload, signature = c["receipt"].split(".")
    keys = _jwks_keys(client)
    key = keys[jwt.get_unverified_header(c["receipt"])["kid"]]

    # 1. a claim changed (widening the purposes), re-encoded, original signature kept
    claims = json.loads(_unb64(payload))
    claims["purposes"] = ["evaluation", "biometric_identification"]
    forged = f"{header}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key, algorithms=["EdDSA"])

    # 2. one byte of the payload flipped
    raw = bytearray(_unb64(payload))
    raw[len(raw) // 2] ^= 0x01
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(f"{header}.{_b64(bytes(raw))}.{signature}", key, algorithms=["EdDSA"])

    # 3. one byte of the signature flipped
    sig = bytearray(_unb64(signature))
    sig[10] ^= 0x80
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{header}.{payload}.{_b64(bytes(sig))}", key, algorithms=["EdDSA"])

    # control: the untouched receipt verifies with the same key
    assert jwt.decode(c["receipt"], key, algorithms=["EdDSA"])["consent_id"] == c["id"]


def test_receipts_of_two_sellers_verify_and_differ(client, seller, token):
    other = bearer(token("subject"))
    a = grant(client, seller, register(client, seller))
    b = grant(client, other, register(client, other))
    ca, cb = verify_receipt(client, a["receipt"]), verify_receipt(client, b["receipt"])
    assert ca["piiPrincipalId"] != cb["piiPrincipalId"]
    assert ca["jti"] != cb["jti"]


def test_all_samples_covers_every_sample_and_only_mine(client, seller, token):
    sids = register(client, seller, 5) + register(client, seller, 1, kind="demographics")
    other = bearer(token("subject"))
    register(client, other, 3)
    r = client.post(
        "/v1/consents", json={"all_samples": True, "purposes": ["synthetic_media"]}, headers=seller
    )
    assert r.status_code == 201, r.text
    c = r.json()
    assert sorted(c["sample_ids"]) == sorted(sids)
    assert c["sample_count"] == c["active_sample_count"] == 6
    claims = verify_receipt(client, c["receipt"])
    assert sorted(claims["sample_ids"]) == sorted(sids)


def test_duplicate_ids_and_purposes_are_counted_once(client, seller):
    sids = register(client, seller, 2)
    c = grant(client, seller, [*sids, sids[0]], purposes=["evaluation", "evaluation", "model_training"])
    assert c["sample_count"] == 2
    assert c["purposes"] == ["evaluation", "model_training"]


def test_get_one_consent(client, seller):
    sids = register(client, seller, 2)
    c = grant(client, seller, sids)
    got = get_json(client, f"/v1/consents/{c['id']}", seller)
    assert got == c


def test_list_filters_by_status_and_paginates(client, seller):
    sids = register(client, seller, 4)
    consents = [grant(client, seller, [sid]) for sid in sids]
    revoke(client, seller, consents[1]["id"])
    revoke(client, seller, consents[3]["id"])

    everything = walk(client, "/v1/consents", seller, limit=1)
    ids = [c["id"] for c in everything]
    assert len(ids) == len(set(ids)) == 4, "limit=1 must walk every consent exactly once"
    assert set(ids) == {c["id"] for c in consents}

    active = walk(client, "/v1/consents", seller, limit=1, status="active")
    revoked = walk(client, "/v1/consents", seller, limit=1, status="revoked")
    assert {c["id"] for c in active} == {consents[0]["id"], consents[2]["id"]}
    assert {c["id"] for c in revoked} == {consents[1]["id"], consents[3]["id"]}
    assert all(c["status"] == "active" for c in active)
    assert all(c["status"] == "revoked" and c["ended_at"] for c in revoked)
    assert walk(client, "/v1/consents", seller, limit=10, status="expired") == []
    # list items carry the receipt too
    assert all(c["receipt"] for c in everything)


def test_new_seller_has_no_consents(client, seller):
    assert get_json(client, "/v1/consents", seller) == {"items": [], "next_cursor": None}


def test_another_sellers_consent_is_404_like_a_missing_one(client, seller, token):
    c = grant(client, seller, register(client, seller))
    other = bearer(token("subject"))
    grant(client, other, register(client, other))
    theirs = assert_problem(client.get(f"/v1/consents/{c['id']}", headers=other), 404)
    ghost_id = "cns_" + "0" * 26
    ghost = assert_problem(client.get(f"/v1/consents/{ghost_id}", headers=other), 404)
    assert theirs["type"] == ghost["type"] and theirs["title"] == ghost["title"]
    assert theirs["detail"].replace(c["id"], "ID") == ghost["detail"].replace(ghost_id, "ID")
    # and their lists never show it, whatever the filter
    for status in (None, "active"):
        listed = walk(client, "/v1/consents", other, limit=100, **({"status": status} if status else {}))
        assert c["id"] not in {x["id"] for x in listed}
    assert len(walk(client, "/v1/consents", other, limit=100)) == 1


def test_granting_over_another_sellers_samples_is_refused(client, seller, token):
    victim_samples = register(client, seller, 2)
    attacker = bearer(token("subject"))
    own = register(client, attacker)
    r = client.post(
        "/v1/consents",
        json={"sample_ids": [*own, *victim_samples], "purposes": ["model_training"]},
        headers=attacker,
    )
    body = assert_problem(r, 422)
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"body.sample_ids[1]", "body.sample_ids[2]"}
    assert get_json(client, "/v1/consents", attacker)["items"] == []  # nothing created
    assert get_json(client, "/v1/consents", seller)["items"] == []


def test_receipt_is_byte_for_byte_what_pyjwt_signs(client, seller):
    """Receipts are built without PyJWT's per-call overhead; they stay exactly what it would sign:
    same protected header (alg, kid, typ), same claims JSON, same Ed25519 signature."""
    sids = register(client, seller, 2)
    c = client.post(
        "/v1/consents", json={"sample_ids": sids, "purposes": ["model_training"]}, headers=seller
    ).json()
    signer = client.app.state.ctx.signer
    header = jwt.get_unverified_header(c["receipt"])
    assert header == {"alg": "EdDSA", "kid": signer.kid, "typ": "JWT"}
    claims = signer.verify(c["receipt"])
    expected = jwt.encode(claims, signer._key, algorithm="EdDSA", headers={"kid": signer.kid, "typ": "JWT"})
    assert c["receipt"] == expected
    assert signer.sign(claims) == expected
