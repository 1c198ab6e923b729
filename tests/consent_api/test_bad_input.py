"""Bad input is a 4xx problem that names the field; never a 5xx."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from support.helpers import assert_problem, grant, register, sha

MIB = 1024 * 1024
CONSENT_ID = "cns_00000000000000000000000000"


def _count(client, seller, path: str) -> int:
    r = client.get(path, params={"limit": 500}, headers=seller)
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


# ---- malformed JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v1/samples", "/v1/samples/batch", "/v1/consents", "/v1/revocations", "/v1/rights-requests"],
)
@pytest.mark.parametrize("raw", [b"{", b'{"kind": "face_image",}', b"not json", b'{"a": 1} trailing'])
def test_malformed_json_is_400(client, seller, path, raw):
    r = client.post(path, content=raw, headers={**seller, "Content-Type": "application/json"})
    body = assert_problem(r, 400)
    assert "json" in body["detail"].lower()


def test_malformed_json_on_revoke_and_profile_is_400(client, seller):
    cid = grant(client, seller, register(client, seller))["id"]
    hdrs = {**seller, "Content-Type": "application/json"}
    assert_problem(client.post(f"/v1/consents/{cid}/revoke", content=b"{oops", headers=hdrs), 400)
    assert_problem(client.put("/v1/profile", content=b"{oops", headers=hdrs), 400)
    # The consent was not revoked by the broken request.
    assert client.get(f"/v1/consents/{cid}", headers=seller).json()["status"] == "active"


def test_invalid_utf8_body_is_4xx(client, seller):
    r = client.post(
        "/v1/samples",
        content=b'{"kind":"face_image","sha256":"\xff\xfe"}',
        headers={**seller, "Content-Type": "application/json"},
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


# ---- samples ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sha256": "a" * 64}, "body.kind"),
        ({"kind": "fingerprint", "sha256": "a" * 64}, "body.kind"),
        ({"kind": "face_image"}, "body.sha256"),
        ({"kind": "face_image", "sha256": "abc"}, "body.sha256"),
        ({"kind": "face_image", "sha256": "g" * 64}, "body.sha256"),
        ({"kind": "face_image", "sha256": "a" * 65}, "body.sha256"),
        ({"kind": "face_image", "sha256": 123}, "body.sha256"),
        ({"kind": "face_image", "sha256": "a" * 64, "media_type": "not a media type"}, "body.media_type"),
        ({"kind": "face_image", "sha256": "a" * 64, "attributes": {"x": {"nested": 1}}}, "body.attributes"),
        ({"kind": "face_image", "sha256": "a" * 64, "attributes": [1, 2]}, "body.attributes"),
        ({"kind": "face_image", "sha256": "a" * 64, "attributes": {"": 1}}, "body.attributes"),
        (
            {"kind": "face_image", "sha256": "a" * 64, "attributes": {f"k{i}": i for i in range(33)}},
            "body.attributes",
        ),
        ({"kind": "face_image", "sha256": "a" * 64, "media": "base64..."}, "body.media"),
        ({"kind": "face_image", "sha256": "a" * 64, "subject_id": "sub_x"}, "body.subject_id"),
    ],
)
def test_sample_field_errors_are_422_naming_the_field(client, seller, body, field):
    assert_problem(client.post("/v1/samples", json=body, headers=seller), 422, field)
    assert _count(client, seller, "/v1/samples") == 0


@pytest.mark.parametrize("payload", [[], "x", 1, None])
def test_non_object_body_is_422(client, seller, payload):
    r = client.post(
        "/v1/samples", content=json.dumps(payload), headers={**seller, "Content-Type": "application/json"}
    )
    assert_problem(r, 422)


def test_batch_errors_name_the_index(client, seller):
    good = {"kind": "face_image", "sha256": sha()}
    bad = {"kind": "face_image", "sha256": "zz"}
    r = client.post(
        "/v1/samples/batch", json={"samples": [good, good | {"sha256": sha()}, bad]}, headers=seller
    )
    assert_problem(r, 422, "body.samples[2].sha256")
    assert_problem(
        client.post("/v1/samples/batch", json={"samples": []}, headers=seller), 422, "body.samples"
    )
    assert_problem(client.post("/v1/samples/batch", json={}, headers=seller), 422, "body.samples")
    assert _count(client, seller, "/v1/samples") == 0


def test_duplicate_sha256_in_a_batch_is_422_naming_the_index(client, seller):
    h = sha()
    samples = [
        {"kind": "face_image", "sha256": sha()},
        {"kind": "face_image", "sha256": h},
        {"kind": "voice_recording", "sha256": sha()},
        {"kind": "handwriting", "sha256": h.upper()},  # same hash, other case: still the same content
    ]
    body = assert_problem(
        client.post("/v1/samples/batch", json={"samples": samples}, headers=seller),
        422,
        "body.samples[3].sha256",
    )
    assert "body.samples[1]" in json.dumps(body)
    assert _count(client, seller, "/v1/samples") == 0  # nothing of the batch was stored


def test_reregistering_an_existing_sha256_is_409(client, seller):
    h = sha()
    first = client.post("/v1/samples", json={"kind": "face_image", "sha256": h}, headers=seller)
    assert first.status_code == 201
    body = assert_problem(
        client.post("/v1/samples", json={"kind": "face_image", "sha256": h.upper()}, headers=seller),
        409,
        "body.sha256",
    )
    assert first.json()["id"] in json.dumps(body)  # tells the caller which sample already holds it
    # in a batch: names the index; the new sample of the batch is not stored either
    r = client.post(
        "/v1/samples/batch",
        json={"samples": [{"kind": "other", "sha256": sha()}, {"kind": "other", "sha256": h}]},
        headers=seller,
    )
    assert_problem(r, 409, "body.samples[1].sha256")
    assert _count(client, seller, "/v1/samples") == 1


def test_same_sha256_for_two_sellers_is_a_409_naming_the_field(client, seller, token):
    # One subject per content hash (docs/adr/0006-one-subject-per-content-hash.md).
    from support.helpers import bearer

    h = sha()
    other = bearer(token("subject"))
    assert (
        client.post("/v1/samples", json={"kind": "face_image", "sha256": h}, headers=seller).status_code
        == 201
    )
    r = client.post("/v1/samples", json={"kind": "face_image", "sha256": h}, headers=other)
    assert_problem(r, 409, "body.sha256")


def test_body_over_1_mib_on_samples_is_413(client, seller):
    body = json.dumps({"kind": "face_image", "sha256": sha(), "media_type": "x" * (MIB + 10)}).encode()
    r = client.post("/v1/samples", content=body, headers={**seller, "Content-Type": "application/json"})
    assert_problem(r, 413)
    assert _count(client, seller, "/v1/samples") == 0


def test_body_over_1_mib_sent_chunked_is_413(client, seller):
    """No Content-Length (Transfer-Encoding: chunked): the limit must still hold, as a 413."""
    payload = json.dumps({"kind": "face_image", "sha256": sha(), "media_type": "x" * (MIB + 10)}).encode()

    def chunks():
        for i in range(0, len(payload), 64 * 1024):
            yield payload[i : i + 64 * 1024]

    r = client.post("/v1/samples", content=chunks(), headers={**seller, "Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_problem(r, 413)
    assert _count(client, seller, "/v1/samples") == 0


def test_small_chunked_body_is_accepted(client, seller):
    # Control for the chunked test: chunked transfer itself is fine.
    payload = json.dumps({"kind": "face_image", "sha256": sha()}).encode()
    r = client.post(
        "/v1/samples",
        content=iter([payload[:10], payload[10:]]),
        headers={**seller, "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text


def test_batch_body_over_its_limit_is_413(client, seller):
    r = client.post(
        "/v1/samples/batch",
        content=b'{"samples": [' + b" " * (17 * MIB) + b"]}",
        headers={**seller, "Content-Type": "application/json"},
    )
    assert_problem(r, 413)


def test_batch_over_10000_samples_is_413(client, seller):
    samples = [{"kind": "other", "sha256": f"{i:064x}"} for i in range(10_001)]
    assert_problem(client.post("/v1/samples/batch", json={"samples": samples}, headers=seller), 413)
    assert _count(client, seller, "/v1/samples") == 0


# ---- consents --------------------------------------------------------------------------------


def _future(days: int = 30) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.purposes"),
        ({"purposes": []}, "body.purposes"),
        ({"purposes": ["Model Training!"]}, "body.purposes[0]"),
        ({"purposes": "model_training"}, "body.purposes"),
        ({"purposes": ["p" + str(i) for i in range(17)]}, "body.purposes"),
        ({"purposes": ["model_training"]}, "body.sample_ids"),
        ({"purposes": ["model_training"], "sample_ids": []}, "body.sample_ids"),
        ({"purposes": ["model_training"], "sample_ids": ["not-an-id"]}, "body.sample_ids[0]"),
        ({"purposes": ["model_training"], "licensee_id": "has spaces"}, "body.licensee_id"),
        ({"purposes": ["model_training"], "expires_at": "tomorrow"}, "body.expires_at"),
        ({"purposes": ["model_training"], "expires_at": "2999-01-01T00:00:00"}, "body.expires_at"),  # naive
        (
            {"purposes": ["model_training"], "compensation": {"amount": -1, "currency": "EUR"}},
            "body.compensation",
        ),
        (
            {"purposes": ["model_training"], "compensation": {"amount": 1, "currency": "euro"}},
            "body.compensation",
        ),
        ({"purposes": ["model_training"], "all_samples": True, "forever": True}, "body.forever"),
    ],
)
def test_consent_field_errors_are_422_naming_the_field(client, seller, body, field):
    sid = register(client, seller)
    payload = dict(body)
    if "sample_ids" not in payload and "all_samples" not in payload and field != "body.sample_ids":
        payload["sample_ids"] = sid
    assert_problem(client.post("/v1/consents", json=payload, headers=seller), 422, field)
    assert _count(client, seller, "/v1/consents") == 0


@pytest.mark.parametrize(
    "expires_at",
    [
        "2001-01-01T00:00:00Z",
        (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat(),
        "0001-01-01T00:00:00+05:00",
    ],
)
def test_expires_at_in_the_past_is_422(client, seller, expires_at):
    sid = register(client, seller)
    r = client.post(
        "/v1/consents",
        json={"sample_ids": sid, "purposes": ["evaluation"], "expires_at": expires_at},
        headers=seller,
    )
    assert_problem(r, 422, "body.expires_at")
    assert _count(client, seller, "/v1/consents") == 0


def test_expires_at_at_the_end_of_time_is_not_a_5xx(client, seller):
    sid = register(client, seller)
    for value in ("9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59Z"):
        r = client.post(
            "/v1/consents",
            json={"sample_ids": sid, "purposes": ["evaluation"], "expires_at": value},
            headers=seller,
        )
        assert r.status_code in (201, 422), r.text


def test_sample_ids_and_all_samples_together_is_422(client, seller):
    sid = register(client, seller)
    r = client.post(
        "/v1/consents",
        json={"sample_ids": sid, "all_samples": True, "purposes": ["evaluation"]},
        headers=seller,
    )
    assert_problem(r, 422, "body.sample_ids")


def test_all_samples_without_samples_is_422(client, seller):
    r = client.post("/v1/consents", json={"all_samples": True, "purposes": ["evaluation"]}, headers=seller)
    assert_problem(r, 422, "body.all_samples")


def test_unknown_sample_id_is_422_naming_its_index(client, seller):
    sids = register(client, seller, 2)
    ghost = "smp_" + "0" * 26
    r = client.post(
        "/v1/consents", json={"sample_ids": [*sids, ghost], "purposes": ["evaluation"]}, headers=seller
    )
    body = assert_problem(r, 422, "body.sample_ids[2]")
    assert [e["field"] for e in body["errors"]] == ["body.sample_ids[2]"]
    assert _count(client, seller, "/v1/consents") == 0


# ---- revocations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.scope"),
        ({"scope": "everything"}, "body.scope"),
        ({"scope": "licensee"}, "body.licensee_id"),
        ({"scope": "purpose"}, "body.purpose"),
        ({"scope": "samples"}, "body.sample_ids"),
        ({"scope": "samples", "sample_ids": []}, "body.sample_ids"),
        ({"scope": "samples", "sample_ids": ["bad"]}, "body.sample_ids[0]"),
        ({"scope": "all", "licensee_id": "acme"}, "body.licensee_id"),
        ({"scope": "licensee", "licensee_id": "acme", "purpose": "evaluation"}, "body.purpose"),
        ({"scope": "purpose", "purpose": "evaluation", "sample_ids": ["smp_" + "0" * 26]}, "body.sample_ids"),
        ({"scope": "purpose", "purpose": "Not A Purpose"}, "body.purpose"),
        ({"scope": "all", "why": "because"}, "body.why"),
        ({"scope": "all", "reason": "x" * 2001}, "body.reason"),
    ],
)
def test_revocation_field_errors_are_422_naming_the_field(client, seller, body, field):
    consent = grant(client, seller, register(client, seller), licensee_id="acme", purposes=["evaluation"])
    assert_problem(client.post("/v1/revocations", json=body, headers=seller), 422, field)
    assert client.get(f"/v1/consents/{consent['id']}", headers=seller).json()["status"] == "active"
    assert _count(client, seller, "/v1/revocations") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sample_ids": []}, "body.sample_ids"),
        ({"sample_ids": ["nope"]}, "body.sample_ids[0]"),
        ({"reason": 42}, "body.reason"),
        ({"scope": "all"}, "body.scope"),
    ],
)
def test_consent_revoke_field_errors_are_422(client, seller, body, field):
    cid = grant(client, seller, register(client, seller))["id"]
    assert_problem(client.post(f"/v1/consents/{cid}/revoke", json=body, headers=seller), 422, field)
    assert client.get(f"/v1/consents/{cid}", headers=seller).json()["status"] == "active"


# ---- rights, profile -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "body.type"), ({"type": "delete"}, "body.type"), ({"type": "access", "x": 1}, "body.x")],
)
def test_rights_request_field_errors_are_422(client, seller, body, field):
    assert_problem(client.post("/v1/rights-requests", json=body, headers=seller), 422, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "body.email"),
        ({"email": "a@"}, "body.email"),
        ({"country": "usa"}, "body.country"),
        ({"country": "us"}, "body.country"),
        ({"country": "U1"}, "body.country"),
        ({"display_name": ""}, "body.display_name"),
        ({"display_name": "x" * 201}, "body.display_name"),
        ({"nickname": "x"}, "body.nickname"),
    ],
)
def test_profile_field_errors_are_422(client, seller, body, field):
    assert_problem(client.put("/v1/profile", json=body, headers=seller), 422, field)
    assert_problem(client.get("/v1/profile", headers=seller), 404)  # nothing was stored


# ---- queries, paths --------------------------------------------------------------------------


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/v1/samples", "/v1/consents", "/v1/revocations", "/v1/rights-requests"])
@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "a",
        "%%%",
        _cursor(b"\xff\xfe"),
        _cursor(b"no-underscore"),
        _cursor(b"x_" * 40),
        _cursor(b"a_\x00"),
    ],
)
def test_bad_cursor_is_400(client, seller, path, cursor):
    register(client, seller)  # the subject exists, so the cursor is actually used
    assert_problem(client.get(path, params={"cursor": cursor}, headers=seller), 400, "query.cursor")


@pytest.mark.parametrize("path", ["/v1/samples", "/v1/consents", "/v1/revocations", "/v1/rights-requests"])
@pytest.mark.parametrize("limit", ["0", "-1", "501", "ten", "99999999999999999999"])
def test_bad_limit_is_422(client, seller, path, limit):
    assert_problem(client.get(path, params={"limit": limit}, headers=seller), 422, "query.limit")


def test_bad_status_filter_is_422(client, seller):
    assert_problem(client.get("/v1/consents", params={"status": "gone"}, headers=seller), 422, "query.status")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/consents/{}",
        "/v1/samples/{}",
        "/v1/revocations/{}",
        "/v1/rights-requests/{}",
        "/v1/rights-requests/{}/export",
    ],
)
@pytest.mark.parametrize("bad_id", ["nope", "cns_" + "0" * 26, "a%00b", "%F0%9F%92%A5", "x" * 300])
def test_unknown_or_odd_ids_are_404(client, seller, path, bad_id):
    register(client, seller)
    assert_problem(client.get(path.format(bad_id), headers=seller), 404)


@pytest.mark.parametrize("bad_id", ["nope", "a%00b", "x" * 300])
def test_revoking_odd_consent_ids_is_404(client, seller, bad_id):
    register(client, seller)
    assert_problem(client.post(f"/v1/consents/{bad_id}/revoke", headers=seller), 404)


def test_audit_entries_query_errors_are_4xx(client, operator):
    # Without subject_id it lists every chain (rescind audit verify); a bad cursor is a 400.
    bad = (
        {"subject_id": "a\x00b"},
        {"subject_id": "x", "after_seq": "99999999999999999999"},
        {"cursor": "!!"},
    )
    for params in bad:
        r = client.get("/v1/audit/entries", params=params, headers=operator)
        assert 400 <= r.status_code < 500, (params, r.text)


def test_wrong_method_and_unknown_path_are_problems(client, seller):
    assert_problem(client.delete("/v1/samples", headers=seller), 405)
    assert_problem(client.get("/v1/nothing-here", headers=seller), 404)


def test_consent_over_the_sample_id_limit_is_413(client, seller):
    ids = [f"smp_{i:026d}" for i in range(100_001)]
    r = client.post("/v1/consents", json={"sample_ids": ids, "purposes": ["evaluation"]}, headers=seller)
    assert_problem(r, 413)


# ---- a sweep of odd values: always a problem response, never a 5xx ---------------------------

ODD_VALUES = [
    None,
    True,
    0,
    -1,
    10**30,
    1.5e308,
    "",
    " ",
    "\u0000",
    "x" * 5000,
    "💥" * 50,
    "'; DROP TABLE consents; --",
    [],
    [None],
    {},
    {"$gt": ""},
]


def _templates(client, seller) -> list[tuple[str, dict]]:
    """Valid bodies for every POST endpoint: each odd value below is then the only thing wrong."""
    [sid] = register(client, seller)
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    return [
        (
            "/v1/samples",
            {"kind": "face_image", "sha256": sha(), "media_type": "image/png", "attributes": {"a": 1}},
        ),
        (
            "/v1/consents",
            {"sample_ids": [sid], "purposes": ["evaluation"], "licensee_id": "x", "expires_at": future},
        ),
        ("/v1/revocations", {"scope": "samples", "sample_ids": [sid], "reason": "r"}),
        ("/v1/revocations", {"scope": "licensee", "licensee_id": "nobody"}),
        ("/v1/revocations", {"scope": "purpose", "purpose": "nothing_granted"}),
        ("/v1/rights-requests", {"type": "access"}),
    ]


def test_odd_values_in_every_field_never_give_a_5xx(client, seller):
    for path, template in _templates(client, seller):
        for name in template:
            for value in ODD_VALUES:
                r = client.post(path, json={**template, name: value}, headers=seller)
                assert r.status_code < 500, (path, name, value, r.text)
                if r.status_code >= 400:
                    assert r.headers["content-type"].startswith("application/problem+json"), r.text
                # the same value inside a list, where the field is a list
                if isinstance(template[name], list):
                    r = client.post(path, json={**template, name: [value]}, headers=seller)
                    assert r.status_code < 500, (path, name, [value], r.text)


def test_deeply_nested_json_is_a_4xx(client, seller):
    depth = 100_000
    raw = b"[" * depth + b"]" * depth
    r = client.post("/v1/samples", content=raw, headers={**seller, "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text


def test_huge_integer_literal_is_a_4xx(client, seller):
    raw = b'{"kind":"face_image","sha256":"' + b"a" * 64 + b'","attributes":{"n":' + b"9" * 5000 + b"}}"
    r = client.post("/v1/samples", content=raw, headers={**seller, "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_non_json_content_type_is_a_4xx(client, seller, content_type):
    raw = json.dumps({"kind": "face_image", "sha256": sha()}).encode()
    r = client.post("/v1/samples", content=raw, headers={**seller, "Content-Type": content_type})
    assert 400 <= r.status_code < 500, r.text
