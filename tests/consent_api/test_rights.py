"""Rights requests: access (everything held about the subject) and erasure (revoke all, shred PII)."""

from __future__ import annotations

from support.helpers import assert_problem, bearer, get_json, grant, register, revoke, sha, walk

PROFILE = {"display_name": "Ada Example", "email": "ada@example.com", "country": "DE"}
ATTRS = {"age_band": "40-49", "accent": "Berlin"}


def _setup(client, seller):
    """A seller with a profile, two samples (one with attributes), two consents, one revocation."""
    r = client.put("/v1/profile", json=PROFILE, headers=seller)
    assert r.status_code == 200, r.text
    r = client.post(
        "/v1/samples",
        json={"kind": "face_image", "sha256": sha(), "media_type": "image/png", "attributes": ATTRS},
        headers=seller,
    )
    assert r.status_code == 201, r.text
    with_attrs = r.json()["id"]
    [plain] = register(client, seller, kind="voice_recording")
    kept = grant(client, seller, [with_attrs, plain], licensee_id="acme")
    dropped = grant(client, seller, [plain], purposes=["evaluation"])
    rev = revoke(client, seller, dropped["id"], reason="my neighbour Bob told me to")
    return with_attrs, plain, kept, dropped, rev


def _access(client, seller) -> dict:
    r = client.post("/v1/rights-requests", json={"type": "access"}, headers=seller)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_profile_round_trip(client, seller):
    assert_problem(client.get("/v1/profile", headers=seller), 404)
    r = client.put("/v1/profile", json=PROFILE, headers=seller)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in PROFILE} == PROFILE
    got = get_json(client, "/v1/profile", seller)
    assert {k: got[k] for k in PROFILE} == PROFILE
    assert got["subject_id"] == r.json()["subject_id"]
    # replacing it drops fields not sent again
    r = client.put("/v1/profile", json={"country": "FR"}, headers=seller)
    assert r.status_code == 200
    got = get_json(client, "/v1/profile", seller)
    assert got["country"] == "FR" and got["email"] is None


def test_profile_is_per_seller(client, seller, token):
    client.put("/v1/profile", json=PROFILE, headers=seller)
    other = bearer(token("subject"))
    assert_problem(client.get("/v1/profile", headers=other), 404)


def test_profile_validation_names_the_field(client, seller):
    assert_problem(
        client.put("/v1/profile", json={"email": "ada-at-example"}, headers=seller), 422, "body.email"
    )
    assert_problem(
        client.put("/v1/profile", json={"country": "Germany"}, headers=seller), 422, "body.country"
    )
    assert_problem(client.get("/v1/profile", headers=seller), 404)


def test_access_returns_everything_held(client, seller):
    with_attrs, plain, kept, dropped, rev = _setup(client, seller)
    req = _access(client, seller)
    assert req["id"].startswith("rr_") and req["type"] == "access" and req["status"] == "completed"
    export = req["export"]
    assert export is not None

    assert {k: export["subject"]["profile"][k] for k in PROFILE} == PROFILE
    assert export["subject"]["erased_at"] is None

    samples = {s["id"]: s for s in export["samples"]}
    assert set(samples) == {with_attrs, plain}
    assert samples[with_attrs]["attributes"] == ATTRS
    registered = get_json(client, f"/v1/samples/{with_attrs}", seller)["sha256"]
    assert samples[with_attrs]["sha256"] == registered and samples[with_attrs]["media_type"] == "image/png"

    consents = {c["id"]: c for c in export["consents"]}
    assert set(consents) == {kept["id"], dropped["id"]}
    assert consents[kept["id"]]["receipt"] == kept["receipt"]
    assert consents[kept["id"]]["status"] == "active" and consents[kept["id"]]["licensee_id"] == "acme"
    assert consents[dropped["id"]]["status"] == "revoked"
    assert sorted(consents[kept["id"]]["sample_ids"]) == sorted([with_attrs, plain])

    [r] = export["revocations"]
    assert r["id"] == rev["id"] and r["consent_ids"] == [dropped["id"]]
    assert r["reason"] == "my neighbour Bob told me to"

    actions = [e["action"] for e in export["audit_log"]]
    assert actions.count("samples.registered") == 2
    assert actions.count("consent.granted") == 2
    assert actions.count("consent.revoked") == 1
    assert actions[-1] == "rights.access"
    assert [e["seq"] for e in export["audit_log"]] == list(range(1, len(actions) + 1))
    # No registry in this test: the export says the recipients are unavailable instead of failing.
    assert export["recipients"]["status"] == "unavailable"

    assert req["id"] in {x["id"] for x in export["rights_requests"]}


def test_export_is_also_at_export_url(client, seller):
    *_, rev = _setup(client, seller)
    req = _access(client, seller)
    assert req["export_url"]
    export = get_json(client, req["export_url"], seller)
    assert {s["id"] for s in export["samples"]} == {s["id"] for s in req["export"]["samples"]}
    assert {c["id"]: c["receipt"] for c in export["consents"]} == {
        c["id"]: c["receipt"] for c in req["export"]["consents"]
    }
    assert [r["id"] for r in export["revocations"]] == [rev["id"]]
    assert export["subject"] == req["export"]["subject"]
    assert export["audit_log"] == req["export"]["audit_log"]
    # the request itself is readable and listed
    assert get_json(client, f"/v1/rights-requests/{req['id']}", seller)["type"] == "access"
    assert req["id"] in {x["id"] for x in walk(client, "/v1/rights-requests", seller, limit=1)}


def test_another_seller_cannot_read_a_rights_request_or_export(client, seller, token):
    _setup(client, seller)
    req = _access(client, seller)
    other = bearer(token("subject"))
    _access(client, other)
    assert_problem(client.get(f"/v1/rights-requests/{req['id']}", headers=other), 404)
    assert_problem(client.get(f"/v1/rights-requests/{req['id']}/export", headers=other), 404)
    assert req["id"] not in {x["id"] for x in walk(client, "/v1/rights-requests", other, limit=10)}
    # and the other seller's own export holds nothing of the first seller
    theirs = _access(client, other)["export"]
    assert theirs["samples"] == [] and theirs["consents"] == [] and theirs["revocations"] == []
    assert theirs["subject"]["id"] != req["export"]["subject"]["id"]


def test_erasure_revokes_everything_and_shreds_personal_data(client, seller):
    with_attrs, plain, kept, dropped, rev = _setup(client, seller)
    more = grant(client, seller, [with_attrs], purposes=["synthetic_media"])

    r = client.post("/v1/rights-requests", json={"type": "erasure"}, headers=seller)
    assert r.status_code == 202, r.text
    req = r.json()
    assert req["type"] == "erasure" and req["revocation_id"]
    assert req.get("export") is None

    # every consent that was active is now revoked, by one revocation triggered by the erasure
    erasure_rev = get_json(client, f"/v1/revocations/{req['revocation_id']}", seller)
    assert erasure_rev["trigger"] == "erasure"
    assert sorted(erasure_rev["consent_ids"]) == sorted([kept["id"], more["id"]])
    assert erasure_rev["status"] == "pending"
    for c in (kept, more, dropped):
        assert get_json(client, f"/v1/consents/{c['id']}", seller)["status"] == "revoked"
    assert walk(client, "/v1/consents", seller, limit=10, status="active") == []

    # personal data is gone
    assert_problem(client.get("/v1/profile", headers=seller), 404)
    assert get_json(client, f"/v1/samples/{with_attrs}", seller)["attributes"] is None
    export = _access(client, seller)["export"]
    assert export["subject"]["profile"] is None
    assert export["subject"]["erased_at"] is not None
    assert all(s["attributes"] is None for s in export["samples"])
    assert {s["id"] for s in export["samples"]} == {with_attrs, plain}
    revs = {r["id"]: r for r in export["revocations"]}
    assert revs[rev["id"]]["reason"] is None  # the free-text reason could name people

    # the pseudonymous revocation records stay readable (holders must still be chased)
    old = get_json(client, f"/v1/revocations/{rev['id']}", seller)
    assert old["consent_ids"] == [dropped["id"]]
    assert req["revocation_id"] in revs
    assert (
        get_json(client, f"/v1/rights-requests/{req['id']}", seller)["revocation_id"] == req["revocation_id"]
    )


def test_erasure_of_a_seller_without_consents(client, seller):
    r = client.post("/v1/rights-requests", json={"type": "erasure"}, headers=seller)
    assert r.status_code == 202, r.text
    rev = get_json(client, f"/v1/revocations/{r.json()['revocation_id']}", seller)
    assert rev["consent_ids"] == [] and rev["status"] == "completed"
    # asking twice is harmless
    assert client.post("/v1/rights-requests", json={"type": "erasure"}, headers=seller).status_code == 202


def test_erasure_leaves_other_sellers_alone(client, seller, token):
    other = bearer(token("subject"))
    client.put("/v1/profile", json=PROFILE, headers=other)
    theirs = grant(client, other, register(client, other))
    grant(client, seller, register(client, seller))
    assert client.post("/v1/rights-requests", json={"type": "erasure"}, headers=seller).status_code == 202
    assert get_json(client, f"/v1/consents/{theirs['id']}", other)["status"] == "active"
    assert get_json(client, "/v1/profile", other)["email"] == PROFILE["email"]


def test_erasure_destroys_the_subject_key_and_ciphertexts(client, seller, settings):
    """Crypto-shredding, checked in the database itself: no key left, no sealed data left."""
    from sqlalchemy import select

    from consent_api.revocations.models import Revocation
    from consent_api.samples.models import Sample
    from consent_api.subjects.models import Subject, SubjectKey
    from rescind_common.db import make_engine

    _setup(client, seller)
    sub_id = _access(client, seller)["export"]["subject"]["id"]
    engine = make_engine(settings.consent_database_url, pool_size=1)
    try:

        def state():
            with engine.connect() as conn:
                return (
                    conn.execute(select(SubjectKey.subject_id).where(SubjectKey.subject_id == sub_id)).all(),
                    conn.execute(select(Subject.profile_sealed).where(Subject.id == sub_id)).scalar_one(),
                    conn.execute(select(Sample.attributes_sealed).where(Sample.subject_id == sub_id))
                    .scalars()
                    .all(),
                    conn.execute(select(Revocation.reason_sealed).where(Revocation.subject_id == sub_id))
                    .scalars()
                    .all(),
                )

        keys, profile, attrs, reasons = state()
        assert keys and profile and any(attrs) and any(reasons)  # control: there was something to shred
        assert client.post("/v1/rights-requests", json={"type": "erasure"}, headers=seller).status_code == 202
        keys, profile, attrs, reasons = state()
        assert keys == [] and profile is None
        assert not any(attrs) and not any(reasons)
    finally:
        engine.dispose()
