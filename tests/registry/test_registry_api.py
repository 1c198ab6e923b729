"""registry over HTTP, on PostgreSQL and on SQLite. The consent projection is fed through the real
handler with synthetic consent events (the broker path is in test_registry_bus.py)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from registry.db import Outbox
from registry.holders.schemas import HoldersByLicenseOut, HoldersOut
from registry.licensees.models import Licensee
from registry.licenses.models import License, LicenseSample
from registry.licenses.schemas import LicenseIn
from registry.licenses.service import record
from registry.main import create_app
from rescind_common.db import make_engine, make_session_factory
from rescind_common.ids import new_id, new_ids
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb
from rescind_common.proto.rescind.v1 import license_events_pb2 as lpb

from support.helpers import assert_problem, auth
from support.registry import Projection, new_registry_db, snapshot

TRAINING = "model_training"


def new_licensee(registry: TestClient, operator: dict[str, str], name: str = "Acme AI") -> str:
    r = registry.post(
        "/v1/licensees", json={"name": name, "contact_email": "dpo@acme.example"}, headers=operator
    )
    assert r.status_code == 201, r.text
    assert r.json()["id"].startswith("lic_")
    return str(r.json()["id"])


def as_licensee(token: Any, licensee_id: str) -> dict[str, str]:
    return auth(token("licensee", sub=licensee_id))


def license_body(licensee_id: str, consent_id: str, sample_ids: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "licensee_id": licensee_id,
        "consent_id": consent_id,
        "purpose": TRAINING,
        "sample_ids": sample_ids,
        **extra,
    }


def make_license(
    registry: TestClient, operator: dict[str, str], status: int = 201, **body: Any
) -> dict[str, Any]:
    r = registry.post("/v1/licenses", json=body, headers=operator)
    assert r.status_code == status, r.text
    return dict(r.json())


def license_rows(projection: Projection, license_id: str) -> int:
    with projection.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(LicenseSample).where(LicenseSample.license_id == license_id)
            )
            or 0
        )


# -- licenses need an active consent -------------------------------------------------------------


def test_license_refused_without_consent_and_accepted_with_it(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(3)
    consent_id = new_id("cns")

    refused = registry.post("/v1/licenses", json=license_body(lic, consent_id, samples), headers=operator)
    body = assert_problem(refused, 409, "body.consent_id")
    assert body["type"].endswith("/consent-not-active") and body["reason"] == "unknown_consent"

    projection.grant(subject, samples, licensee_id=lic, consent_id=consent_id)
    created = make_license(registry, operator, **license_body(lic, consent_id, samples))
    assert created["id"].startswith("lcs_")
    assert created["status"] == "active" and created["sample_count"] == 3
    assert (
        created["licensee_id"] == lic
        and created["consent_id"] == consent_id
        and created["purpose"] == TRAINING
    )

    mine = registry.get(f"/v1/licenses/{created['id']}", headers=as_licensee(token, lic))
    assert mine.status_code == 200 and mine.json() == created
    page = registry.get(
        "/v1/licenses/{}/samples".format(created["id"]), headers=as_licensee(token, lic)
    ).json()
    assert sorted(s["sample_id"] for s in page["items"]) == sorted(samples)
    assert all(
        s["kind"] == "face_image" and len(s["sha256"]) == 64 and s["revoked_at"] is None
        for s in page["items"]
    )


def test_license_refused_when_the_consent_does_not_cover_it(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    lic, other = new_licensee(registry, operator), new_licensee(registry, operator, "Other Co")
    subject, samples = projection.samples(3)
    _, strangers = projection.samples(1)
    consent = projection.grant(subject, samples[:2], purposes=(TRAINING, "evaluation"), licensee_id=lic)

    def refused(field: str, reason: str, **body: Any) -> None:
        payload = {**license_body(lic, consent, samples[:2]), **body}
        problem = assert_problem(registry.post("/v1/licenses", json=payload, headers=operator), 409, field)
        assert reason in problem["reasons"], problem
        assert problem["type"].endswith("/consent-does-not-cover")

    refused("body.licensee_id", "licensee_not_covered", licensee_id=other)
    refused("body.purpose", "purpose_not_covered", purpose="synthetic_media")
    refused("body.sample_ids[1]", "samples_not_covered", sample_ids=[samples[0], samples[2]])
    refused("body.sample_ids[0]", "samples_not_covered", sample_ids=strangers)

    # One purpose withdrawn: licenses for it are refused, the other purpose still works.
    projection.revoke(subject, consent, samples[:2], ["evaluation"], ended=False)
    refused("body.purpose", "purpose_revoked", purpose="evaluation")
    make_license(registry, operator, **license_body(lic, consent, samples[:2]))

    # One sample withdrawn: licensing it is refused, naming it.
    projection.revoke(subject, consent, [samples[1]], [TRAINING], ended=False)
    refused(
        "body.sample_ids[1]", "samples_revoked", sample_ids=samples[:2], dataset={"name": "d", "version": "1"}
    )

    # The whole consent ended.
    projection.revoke(subject, consent, [samples[0]], [TRAINING], ended=True)
    problem = assert_problem(
        registry.post(
            "/v1/licenses", json=license_body(lic, consent, samples[:1], purpose=TRAINING), headers=operator
        ),
        409,
        "body.consent_id",
    )
    assert problem["type"].endswith("/consent-not-active") and problem["consent_status"] == "revoked"


def test_consent_for_any_licensee_covers_every_licensee(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    a, b = new_licensee(registry, operator), new_licensee(registry, operator)
    subject, samples = projection.samples(2)
    consent = projection.grant(subject, samples, licensee_id=None)
    assert make_license(registry, operator, **license_body(a, consent, samples))["status"] == "active"
    assert make_license(registry, operator, **license_body(b, consent, samples))["status"] == "active"


def test_expired_consent_refuses_licenses_even_before_its_events_arrive(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(1)
    now = dt.datetime.now(dt.UTC)
    later = projection.grant(subject, samples, expires_at=now + dt.timedelta(hours=1))
    make_license(registry, operator, **license_body(lic, later, samples))
    # Past its expires_at, but consent-api's expiry events have not reached the projection yet.
    consent = projection.grant(subject, samples, expires_at=now - dt.timedelta(seconds=1))
    problem = assert_problem(
        registry.post("/v1/licenses", json=license_body(lic, consent, samples), headers=operator),
        409,
        "body.consent_id",
    )
    assert problem["consent_status"] == "expired"


def test_license_waits_for_a_projection_that_is_behind(
    registry_settings: Any, operator: dict[str, str], projection: Projection, registry: TestClient
) -> None:
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(2)
    grant = projection.grant_event(subject, samples, licensee_id=lic)
    settings = registry_settings.model_copy(update={"registry_projection_wait_seconds": 10.0})
    # The grant reaches the projection 0.5 s after the license request arrives.
    applier = threading.Timer(0.5, projection.apply, args=(grant,))
    with TestClient(create_app(settings)) as patient:
        applier.start()
        try:
            r = patient.post(
                "/v1/licenses",
                json=license_body(lic, grant.consent_granted.consent_id, samples),
                headers=operator,
            )
        finally:
            applier.join()
    assert r.status_code == 201, r.text


# -- bad input ------------------------------------------------------------------------------------


def test_unknown_and_malformed_ids_are_named(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(2)
    consent = projection.grant(subject, samples)

    unknown_licensee = new_id("lic")
    r = registry.post("/v1/licenses", json=license_body(unknown_licensee, consent, samples), headers=operator)
    assert assert_problem(r, 422, "body.licensee_id")["errors"][0]["value"] == unknown_licensee

    never_seen = new_id("smp")
    r = registry.post(
        "/v1/licenses", json=license_body(lic, consent, [samples[0], never_seen]), headers=operator
    )
    problem = assert_problem(r, 422, "body.sample_ids[1]")
    assert [e["value"] for e in problem["errors"]] == [never_seen]

    r = registry.post("/v1/licenses", json=license_body(lic, "consent-42", samples), headers=operator)
    assert_problem(r, 422, "body.consent_id")
    r = registry.post("/v1/licenses", json=license_body(lic, consent, ["smp_nope"]), headers=operator)
    assert_problem(r, 422, "body.sample_ids[0]")
    r = registry.post("/v1/licenses", json=license_body(lic, consent, []), headers=operator)
    assert_problem(r, 422, "body.sample_ids")
    r = registry.post("/v1/licensees", json={"name": "x", "contact_email": "not-an-email"}, headers=operator)
    assert_problem(r, 422, "body.contact_email")

    for path in (
        f"/v1/licenses/{new_id('lcs')}",
        f"/v1/models/{new_id('mdl')}",
        f"/v1/licensees/{new_id('lic')}",
    ):
        assert_problem(registry.get(path, headers=operator), 404)


def test_oversized_bulk_is_413(
    registry: TestClient, operator: dict[str, str], registry_settings: Any
) -> None:
    lic = new_licensee(registry, operator)
    too_many = new_ids("smp", registry_settings.registry_max_license_samples + 1)
    r = registry.post("/v1/licenses", json=license_body(lic, new_id("cns"), too_many), headers=operator)
    assert assert_problem(r, 413)["limit"] == registry_settings.registry_max_license_samples
    too_many = new_ids("smp", registry_settings.registry_max_holder_samples + 1)
    r = registry.post("/v1/holders", json={"sample_ids": too_many}, headers=operator)
    assert assert_problem(r, 413)["limit"] == registry_settings.registry_max_holder_samples


def test_duplicate_license_is_idempotent(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(4)
    consent = projection.grant(subject, samples)
    first = make_license(registry, operator, **license_body(lic, consent, samples[:3]))
    again = make_license(registry, operator, status=200, **license_body(lic, consent, samples[:3]))
    assert again == first
    assert license_rows(projection, first["id"]) == 3
    # Same sample twice in one request: one row.
    again = make_license(
        registry, operator, status=200, **license_body(lic, consent, [samples[0], samples[0]])
    )
    assert again["id"] == first["id"] and license_rows(projection, first["id"]) == 3
    # More samples under the same consent and purpose join the same license.
    grown = make_license(registry, operator, status=200, **license_body(lic, consent, samples[2:]))
    assert grown["id"] == first["id"] and grown["sample_count"] == 4
    assert license_rows(projection, first["id"]) == 4
    # A dataset snapshot is its own license, and is idempotent too.
    snap = {"name": "faces-eu", "version": "2026-11"}
    ds = make_license(registry, operator, **license_body(lic, consent, samples, dataset=snap))
    assert ds["id"] != first["id"] and ds["dataset"] == snap
    assert (
        make_license(registry, operator, status=200, **license_body(lic, consent, samples, dataset=snap))
        == ds
    )
    listed = registry.get("/v1/licenses", headers=as_licensee(token, lic)).json()["items"]
    assert sorted(x["id"] for x in listed) == sorted([first["id"], ds["id"]])


def test_bulk_license_of_100k_samples(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(100_000)
    consent = projection.grant(subject, samples)
    created = make_license(registry, operator, **license_body(lic, consent, samples))
    assert created["sample_count"] == 100_000
    assert (
        make_license(registry, operator, status=200, **license_body(lic, consent, samples))["id"]
        == created["id"]
    )
    assert license_rows(projection, created["id"]) == 100_000
    held = registry.post("/v1/holders", json={"sample_ids": samples[-10_000:]}, headers=operator).json()
    (holder,) = [h for h in held["holders"] if h["licensee_id"] == lic]
    assert len(holder["samples"]) == 10_000


# -- models, lineage and the holders lookup -------------------------------------------------------


def test_model_lineage_appears_in_holders_lookup(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    lic = new_licensee(registry, operator, "Faces Inc")
    me = as_licensee(token, lic)
    subject, samples = projection.samples(4)
    consent = projection.grant(subject, samples, licensee_id=lic)
    l1 = make_license(registry, operator, **license_body(lic, consent, samples[:2]))["id"]
    l2 = make_license(
        registry,
        operator,
        **license_body(lic, consent, samples[2:], dataset={"name": "voices", "version": "3"}),
    )["id"]

    r = registry.post(
        "/v1/models",
        json={
            "name": "face-embedder",
            "version": "1.0",
            "license_ids": [l1],
            "shards": [{"shard_id": "shard-07", "datasets": [{"name": "voices", "version": "3"}]}],
        },
        headers=me,
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["id"].startswith("mdl_") and model["license_ids"] == [l1]
    assert model["shards"] == [{"shard_id": "shard-07", "license_ids": [l2]}]
    assert registry.get(f"/v1/models/{model['id']}", headers=me).json() == model
    assert [m["id"] for m in registry.get("/v1/models", headers=me).json()["items"]] == [model["id"]]

    dup = registry.post(
        "/v1/models", json={"name": "face-embedder", "version": "1.0", "license_ids": [l1]}, headers=me
    )
    assert_problem(dup, 409, "body.version")

    held = registry.post("/v1/holders", json={"sample_ids": [samples[3], samples[0]]}, headers=operator)
    assert held.status_code == 200, held.text
    HoldersOut.model_validate(held.json())  # the documented shape (the route serialises without it)
    (holder,) = held.json()["holders"]
    assert holder["licensee_id"] == lic and holder["licensee_name"] == "Faces Inc"
    assert [(s["sample_id"], s["license_ids"]) for s in holder["samples"]] == [
        (samples[3], [l2]),
        (samples[0], [l1]),
    ]
    assert all(s["kind"] == "face_image" and len(s["sha256"]) == 64 for s in holder["samples"])
    (m,) = holder["models"]
    assert (m["model_id"], m["name"], m["version"]) == (model["id"], "face-embedder", "1.0")
    # l1 went into the whole model, l2 into shard-07: both hit, the whole model is named.
    assert m["whole"] is True and m["shard_ids"] == [] and m["sample_ids"] == [samples[3], samples[0]]
    assert m["links"] == sorted(
        [{"license_id": l1, "shard_id": None}, {"license_id": l2, "shard_id": "shard-07"}],
        key=lambda x: x["license_id"],
    )
    assert {x["license_id"]: x["status"] for x in holder["licenses"]} == {l1: "active", l2: "active"}

    # Only the shard's sample: the model's shard is named.
    (holder,) = registry.post("/v1/holders", json={"sample_ids": [samples[2]]}, headers=operator).json()[
        "holders"
    ]
    assert holder["models"][0]["shard_ids"] == ["shard-07"] and holder["models"][0]["whole"] is False
    assert holder["models"][0]["links"] == [{"license_id": l2, "shard_id": "shard-07"}]
    # Only a whole-model sample: no shard to retrain alone.
    (holder,) = registry.post("/v1/holders", json={"sample_ids": [samples[1]]}, headers=operator).json()[
        "holders"
    ]
    assert holder["models"][0]["shard_ids"] == [] and holder["models"][0]["whole"] is True
    assert holder["models"][0]["links"] == [{"license_id": l1, "shard_id": None}]

    # The consent ends: the licenses are revoked but the buyer still holds the data.
    projection.revoke(subject, consent, samples, [TRAINING], ended=True)
    assert registry.get(f"/v1/licenses/{l1}", headers=me).json()["status"] == "revoked"
    (holder,) = registry.post("/v1/holders", json={"sample_ids": samples}, headers=operator).json()["holders"]
    assert {x["license_id"]: x["status"] for x in holder["licenses"]} == {l1: "revoked", l2: "revoked"}
    assert holder["models"][0]["model_id"] == model["id"]
    assert sorted(
        registry.get(f"/v1/models/{model['id']}", headers=me).json()["revoked_license_ids"]
    ) == sorted([l1, l2])
    # Revoked licenses cannot back a new model.
    r = registry.post(
        "/v1/models", json={"name": "face-embedder", "version": "2.0", "license_ids": [l1]}, headers=me
    )
    assert_problem(r, 409, "body.license_ids[0]")


def test_models_name_only_own_licenses(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    a, b = new_licensee(registry, operator), new_licensee(registry, operator)
    subject, samples = projection.samples(1)
    consent = projection.grant(subject, samples)
    la = make_license(registry, operator, **license_body(a, consent, samples))["id"]
    lb = make_license(registry, operator, **license_body(b, consent, samples))["id"]
    body = {
        "name": "m",
        "version": "1",
        "license_ids": [la],
        "shards": [{"shard_id": "s1", "license_ids": [lb]}],
    }
    problem = assert_problem(registry.post("/v1/models", json=body, headers=as_licensee(token, a)), 422)
    assert [e["field"] for e in problem["errors"]] == ["body.shards[0].license_ids[0]"]
    r = registry.post(
        "/v1/models",
        json={"name": "m", "version": "1", "license_ids": [new_id("lcs")]},
        headers=as_licensee(token, a),
    )
    assert_problem(r, 422, "body.license_ids[0]")
    r = registry.post("/v1/models", json={"name": "m", "version": "1"}, headers=as_licensee(token, a))
    assert_problem(r, 422, "body.license_ids")
    r = registry.post(
        "/v1/models",
        json={"name": "m", "version": "1", "datasets": [{"name": "nope", "version": "1"}]},
        headers=as_licensee(token, a),
    )
    assert_problem(r, 422, "body.datasets[0]")


def test_holders_licenses_view_counts_and_lists_only_partial_licenses(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    full, part = new_licensee(registry, operator, "Full Co"), new_licensee(registry, operator, "Part Co")
    subject, samples = projection.samples(6)
    consent = projection.grant(subject, samples)
    l_full = make_license(registry, operator, **license_body(full, consent, samples))["id"]
    l_part = make_license(registry, operator, **license_body(part, consent, samples[1:4]))["id"]
    l_ds = make_license(
        registry,
        operator,
        **license_body(part, consent, samples[:1], dataset={"name": "faces", "version": "2"}),
    )["id"]
    r = registry.post(
        "/v1/models",
        json={
            "name": "m",
            "version": "1",
            "license_ids": [l_part],
            "shards": [{"shard_id": "s9", "license_ids": [l_ds]}],
        },
        headers=as_licensee(token, part),
    )
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    never = new_id("smp")
    unlicensed = samples[4]  # known to the registry, held by `full` only

    requested = [samples[3], samples[0], samples[1], never, unlicensed, samples[2], samples[5], samples[0]]
    r = registry.post("/v1/holders", json={"sample_ids": requested, "view": "licenses"}, headers=operator)
    assert r.status_code == 200, r.text
    body = HoldersByLicenseOut.model_validate(r.json()).model_dump()
    by_id = {x["license_id"]: x for x in body["licenses"]}
    assert set(by_id) == {l_full, l_part, l_ds}
    # `never` is requested but no license holds it: nobody holds every requested sample.
    assert by_id[l_full]["all_requested"] is False and by_id[l_full]["sample_count"] == 6
    assert by_id[l_full]["sample_ids"] == [
        samples[3],
        samples[0],
        samples[1],
        unlicensed,
        samples[2],
        samples[5],
    ]
    assert by_id[l_part]["sample_count"] == 3 and by_id[l_part]["sample_ids"] == [
        samples[3],
        samples[1],
        samples[2],
    ]
    assert by_id[l_ds]["sample_ids"] == [samples[0]] and by_id[l_ds]["dataset"] == {
        "name": "faces",
        "version": "2",
    }
    assert (by_id[l_part]["licensee_id"], by_id[l_part]["licensee_name"]) == (part, "Part Co")
    assert by_id[l_full]["consent_id"] == consent and by_id[l_full]["purpose"] == TRAINING
    assert by_id[l_full]["status"] == "active"
    assert [s["sample_id"] for s in body["samples"]] == [
        samples[3],
        samples[0],
        samples[1],
        unlicensed,
        samples[2],
        samples[5],
    ]
    assert all(s["kind"] == "face_image" and len(s["sha256"]) == 64 for s in body["samples"])
    assert body["unknown_sample_ids"] == [never]
    assert body["models"] == [
        {
            "model_id": model_id,
            "licensee_id": part,
            "name": "m",
            "version": "1",
            # l_part went into the whole model: the whole model, whatever shard l_ds went into.
            "shard_ids": [],
            "license_ids": sorted([l_part, l_ds]),
            "whole": True,
            "links": sorted(
                [{"license_id": l_part, "shard_id": None}, {"license_id": l_ds, "shard_id": "s9"}],
                key=lambda x: str(x["license_id"]),
            ),
        }
    ]

    # Every requested sample held: counted, not listed.
    r = registry.post("/v1/holders", json={"sample_ids": samples[1:3], "view": "licenses"}, headers=operator)
    by_id = {x["license_id"]: x for x in r.json()["licenses"]}
    assert set(by_id) == {l_full, l_part}
    for lic in (l_full, l_part):
        assert (by_id[lic]["all_requested"], by_id[lic]["sample_count"], by_id[lic]["sample_ids"]) == (
            True,
            2,
            [],
        )
    assert [m["model_id"] for m in r.json()["models"]] == [model_id]
    assert r.json()["models"][0]["license_ids"] == [l_part] and r.json()["models"][0]["shard_ids"] == []

    # Revoked licenses are still holders (the data is there until deletion is confirmed).
    projection.revoke(subject, consent, samples, [TRAINING], ended=True)
    r = registry.post("/v1/holders", json={"sample_ids": samples, "view": "licenses"}, headers=operator)
    by_id = {x["license_id"]: x for x in r.json()["licenses"]}
    assert {k: v["status"] for k, v in by_id.items()} == {
        l_full: "revoked",
        l_part: "revoked",
        l_ds: "revoked",
    }
    assert by_id[l_full]["all_requested"] is True and by_id[l_part]["all_requested"] is False
    # The default view is unchanged.
    r = registry.post("/v1/holders", json={"sample_ids": samples[:1]}, headers=operator)
    HoldersOut.model_validate(r.json())
    assert {h["licensee_id"] for h in r.json()["holders"]} == {full, part}
    r = registry.post("/v1/holders", json={"sample_ids": samples[:1], "view": "pairs"}, headers=operator)
    assert_problem(r, 422, "body.view")
    never_only = registry.post(
        "/v1/holders", json={"sample_ids": [never], "view": "licenses"}, headers=operator
    )
    assert never_only.json() == {"licenses": [], "samples": [], "models": [], "unknown_sample_ids": [never]}


def test_holders_lookup_of_unheld_samples(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    _, samples = projection.samples(1)
    never = new_id("smp")
    r = registry.post("/v1/holders", json={"sample_ids": [samples[0], never]}, headers=operator)
    assert r.status_code == 200 and r.json() == {"holders": [], "unknown_sample_ids": [never]}


# -- who may see what -----------------------------------------------------------------------------


def test_authorization(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any, seller: dict[str, str]
) -> None:
    a, b = new_licensee(registry, operator, "A"), new_licensee(registry, operator, "B")
    subject, samples = projection.samples(1)
    consent = projection.grant(subject, samples)
    la = make_license(registry, operator, **license_body(a, consent, samples))["id"]
    lb = make_license(registry, operator, **license_body(b, consent, samples))["id"]
    ha, hb = as_licensee(token, a), as_licensee(token, b)
    ma = registry.post(
        "/v1/models", json={"name": "m", "version": "1", "license_ids": [la]}, headers=ha
    ).json()["id"]

    every_endpoint: list[tuple[str, str, Any]] = [
        ("POST", "/v1/licensees", {"name": "x"}),
        ("GET", "/v1/licensees", None),
        ("GET", f"/v1/licensees/{a}", None),
        ("POST", "/v1/licenses", license_body(a, consent, samples)),
        ("GET", "/v1/licenses", None),
        ("GET", f"/v1/licenses/{la}", None),
        ("GET", f"/v1/licenses/{la}/samples", None),
        ("POST", "/v1/models", {"name": "m", "version": "9", "license_ids": [la]}),
        ("GET", "/v1/models", None),
        ("GET", f"/v1/models/{ma}", None),
        ("POST", "/v1/holders", {"sample_ids": samples}),
    ]
    for method, path, body in every_endpoint:
        assert_problem(registry.request(method, path, json=body, headers=seller), 403)
        assert_problem(registry.request(method, path, json=body), 401)

    operator_only = [
        e
        for e in every_endpoint
        if e[1] in ("/v1/licensees", "/v1/licenses", "/v1/holders") and e[0] == "POST"
    ]
    operator_only.append(("GET", "/v1/licensees", None))
    for method, path, body in operator_only:
        assert_problem(registry.request(method, path, json=body, headers=ha), 403)
    # Models are declared by their licensee, not by operators.
    assert_problem(
        registry.post(
            "/v1/models", json={"name": "m", "version": "2", "license_ids": [la]}, headers=operator
        ),
        403,
    )

    # A licensee sees itself and its own records only; others' are 404s.
    assert registry.get(f"/v1/licensees/{a}", headers=ha).json()["id"] == a
    assert_problem(registry.get(f"/v1/licensees/{a}", headers=hb), 404)
    assert_problem(registry.get(f"/v1/licenses/{la}", headers=hb), 404)
    assert_problem(registry.get(f"/v1/licenses/{la}/samples", headers=hb), 404)
    assert_problem(registry.get(f"/v1/models/{ma}", headers=hb), 404)
    assert [x["id"] for x in registry.get("/v1/licenses", headers=hb).json()["items"]] == [lb]
    assert registry.get("/v1/licenses", params={"licensee_id": a}, headers=hb).json()["items"] == []
    assert registry.get("/v1/models", headers=hb).json()["items"] == []

    # Operators see everyone's.
    assert registry.get(f"/v1/licenses/{la}", headers=operator).status_code == 200
    assert registry.get(f"/v1/models/{ma}", headers=operator).status_code == 200
    assert [
        x["id"]
        for x in registry.get("/v1/licenses", params={"licensee_id": a}, headers=operator).json()["items"]
    ] == [la]


def test_license_list_pagination_and_status_filter(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(5)
    consents = [projection.grant(subject, [s]) for s in samples]
    ids = [
        make_license(registry, operator, **license_body(lic, c, [s]))["id"]
        for c, s in zip(consents, samples, strict=True)
    ]
    projection.revoke(subject, consents[0], [samples[0]], [TRAINING], ended=True)

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = registry.get("/v1/licenses", params=params, headers=as_licensee(token, lic)).json()
        assert len(page["items"]) <= 2
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    revoked = registry.get(
        "/v1/licenses", params={"status": "revoked", "licensee_id": lic}, headers=operator
    ).json()
    assert [x["id"] for x in revoked["items"]] == [ids[0]]
    assert_problem(
        registry.get("/v1/licenses", params={"cursor": "%%%"}, headers=operator), 400, "query.cursor"
    )


def test_health_and_readiness(registry: TestClient) -> None:
    assert registry.get("/healthz").json()["status"] == "ok"
    r = registry.get("/readyz")  # no broker in these tests
    assert r.status_code == 503 and r.json()["checks"] == {"database": "ok", "kafka": "down"}
    assert "rescind_http_requests_total" in registry.get("/metrics").text


# -- the projection handler, without a broker -----------------------------------------------------


def test_revocations_mark_exactly_the_withdrawn_samples_and_purposes(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    lic = new_licensee(registry, operator)
    me = as_licensee(token, lic)
    subject, samples = projection.samples(3)
    consent = projection.grant(subject, samples, purposes=(TRAINING, "evaluation"))
    training = make_license(registry, operator, **license_body(lic, consent, samples))["id"]
    evaluation = make_license(
        registry, operator, **license_body(lic, consent, samples, purpose="evaluation")
    )["id"]

    # One sample withdrawn for every purpose: both licenses lose it, neither is revoked.
    rev1 = projection.revoke(subject, consent, [samples[0]], [TRAINING, "evaluation"], ended=False)
    for lid in (training, evaluation):
        got = registry.get(f"/v1/licenses/{lid}", headers=me).json()
        assert (got["status"], got["revoked_sample_count"]) == ("active", 1)
    page = registry.get(f"/v1/licenses/{training}/samples", headers=me).json()["items"]
    assert {s["sample_id"]: s["revocation_id"] for s in page} == {
        samples[0]: rev1,
        samples[1]: None,
        samples[2]: None,
    }

    # One purpose withdrawn: only that purpose's license is revoked.
    rev2 = projection.revoke(subject, consent, samples[1:], ["evaluation"], ended=False)
    got = registry.get(f"/v1/licenses/{evaluation}", headers=me).json()
    assert (got["status"], got["revoked_sample_count"]) == ("revoked", 3) and got["revoked_at"]
    assert registry.get(f"/v1/licenses/{training}", headers=me).json()["status"] == "active"
    page = registry.get(f"/v1/licenses/{evaluation}/samples", headers=me).json()["items"]
    assert {s["sample_id"]: s["revocation_id"] for s in page} == {
        samples[0]: rev1,
        samples[1]: rev2,
        samples[2]: rev2,
    }

    # Expiry: ConsentRevoked (trigger EXPIRY, consent ended) and ConsentExpired.
    rev3 = new_id("rev")
    projection.revoke(
        subject,
        consent,
        samples[1:],
        [TRAINING],
        ended=True,
        trigger=pb.REVOCATION_TRIGGER_EXPIRY,
        revocation_id=rev3,
    )
    projection.apply(
        projection.event(subject, consent_expired=pb.ConsentExpired(consent_id=consent, revocation_id=rev3))
    )
    got = registry.get(f"/v1/licenses/{training}", headers=me).json()
    assert (got["status"], got["revoked_sample_count"]) == ("revoked", 3)
    problem = assert_problem(
        registry.post("/v1/licenses", json=license_body(lic, consent, samples[1:2]), headers=operator), 409
    )
    assert problem["consent_status"] == "expired"


def test_handler_applies_each_event_once(
    db_url: str, pg_database: Any, tmp_path: Any, registry: TestClient, operator: dict[str, str]
) -> None:
    # A database of its own, so that the before/after snapshot holds only this test's rows.
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    engine = make_engine(new_registry_db(backend, pg_database, tmp_path), pool_size=1)
    registry_sessions = make_session_factory(engine)
    projection = Projection(registry_sessions)
    lic = new_id("lic")
    with registry_sessions.begin() as session:
        session.add(Licensee(id=lic, name="Acme"))
    subject_id = new_id("sub")
    samples = new_ids("smp", 3)
    events = [
        projection.event(
            subject_id,
            sample_registered=pb.SampleRegistered(
                samples=[
                    pb.SampleRef(sample_id=s, sha256="ab" * 32, kind=pb.SAMPLE_KIND_VOICE_RECORDING)
                    for s in samples
                ]
            ),
        ),
        projection.grant_event(subject_id, samples, licensee_id=lic),
    ]
    assert [projection.apply(e) for e in events] == [True, True]
    consent = events[1].consent_granted.consent_id
    with registry_sessions.begin() as session:
        lid, created = record(session, LicenseIn(**license_body(lic, consent, samples)))
        lid = lid.id
    assert created
    events.append(projection.revoke_event(subject_id, consent, samples[:1], [TRAINING], ended=False))
    events.append(
        projection.event(
            subject_id, subject_erased=pb.SubjectErased(revocation_id=new_id("rev"), sample_count=3)
        )
    )
    assert [projection.apply(e) for e in events[2:]] == [True, True]
    before = snapshot(registry_sessions)
    assert [projection.apply(e) for e in events] == [False] * len(events)
    assert snapshot(registry_sessions) == before
    with registry_sessions() as session:
        got = session.get(License, lid)
        assert got is not None and (got.status, got.revoked_sample_count) == ("active", 1)
    engine.dispose()


def test_revocation_seen_before_its_grant_never_activates_the_consent(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(2)
    grant = projection.grant_event(subject, samples)
    consent = grant.consent_granted.consent_id
    projection.revoke(subject, consent, samples, [TRAINING], ended=True)
    projection.apply(grant)  # a replay delivered it late
    problem = assert_problem(
        registry.post("/v1/licenses", json=license_body(lic, consent, samples), headers=operator), 409
    )
    assert problem["consent_status"] == "revoked"


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xff\xff\xff",
        b"garbage that is not protobuf",
        b"",
        pb.ConsentEvent(event_id="evt_x").SerializeToString(),
    ],
)
def test_undecodable_records_are_poison(value: bytes) -> None:
    from registry.consumer import decode
    from rescind_common.consumer import PoisonMessage

    with pytest.raises(PoisonMessage):
        decode(value)


def test_events_with_ids_longer_than_the_columns_are_refused(projection: Projection) -> None:
    from registry.projection.service import InvalidEvent

    subject = new_id("sub")
    for event in (
        projection.samples_event(subject, ["smp_" + "x" * 60]),
        projection.grant_event(subject, [new_id("smp")], consent_id="cns_" + "y" * 60),
        projection.event("s" * 41, subject_erased=pb.SubjectErased(revocation_id=new_id("rev"))),
    ):
        with pytest.raises(InvalidEvent):
            projection.apply(event)


def test_withdrawing_one_licensee_from_an_open_consent_spares_the_others(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    acme, bolt = new_licensee(registry, operator, "Acme"), new_licensee(registry, operator, "Bolt")
    subject, samples = projection.samples(2)
    consent = projection.grant(subject, samples)  # open to any licensee
    acme_license = make_license(registry, operator, **license_body(acme, consent, samples))["id"]
    bolt_license = make_license(registry, operator, **license_body(bolt, consent, samples))["id"]

    projection.revoke(subject, consent, samples, [TRAINING], ended=False, only_licensee_id=acme)

    got = registry.get(f"/v1/licenses/{acme_license}", headers=as_licensee(token, acme)).json()
    assert got["status"] == "revoked"
    assert (
        registry.get(f"/v1/licenses/{bolt_license}", headers=as_licensee(token, bolt)).json()["status"]
        == "active"
    )
    # Acme can no longer be licensed under it; a newcomer still can.
    r = registry.post("/v1/licenses", json=license_body(acme, consent, samples[:1]), headers=operator)
    assert r.status_code == 409 and any(e["field"] == "body.licensee_id" for e in r.json()["errors"])
    newcomer = new_licensee(registry, operator, "Cyan")
    make_license(registry, operator, **license_body(newcomer, consent, samples[:1]))


def _revocation_world(
    registry: TestClient, operator: dict[str, str], projection: Projection, licensees: list[str]
) -> tuple[list[str], list[str], list[pb.ConsentEvent]]:
    """Three consents licensed to two licensees, and the revocations of one poll: two ordered parts
    of the first consent (one sample for every purpose, then the rest for one purpose, then the end),
    one licensee withdrawn from the second, the third ended; plus a consent granted and revoked in
    the same poll and one revoked without a grant. Returns (licenses, samples, events), the ids in
    the same order in every world so that two worlds compare position by position."""
    acme, bolt = licensees
    s1, one = projection.samples(3)
    s2, two = projection.samples(2)
    s3, three = projection.samples(2)
    c1 = projection.grant(s1, one, purposes=(TRAINING, "evaluation"))
    c2, c3 = projection.grant(s2, two), projection.grant(s3, three)
    licenses = [
        make_license(registry, operator, **license_body(who, consent, samples, purpose=purpose))["id"]
        for who, consent, samples, purpose in (
            (acme, c1, one, TRAINING),
            (acme, c1, one, "evaluation"),
            (bolt, c1, one[:2], TRAINING),
            (acme, c2, two, TRAINING),
            (bolt, c2, two, TRAINING),
            (acme, c3, three, TRAINING),
            (bolt, c3, three[1:], TRAINING),
        )
    ]
    s4, four = new_id("sub"), new_ids("smp", 2)
    late = projection.grant_event(s4, four)
    c4 = late.consent_granted.consent_id
    p = projection
    events = [
        p.revoke_event(s1, c1, one[:1], [TRAINING, "evaluation"], ended=False),
        p.revoke_event(s2, c2, two, [TRAINING], ended=False, only_licensee_id=acme),
        p.revoke_event(s1, c1, one[1:], ["evaluation"], ended=False),
        p.samples_event(s4, four),
        late,
        p.revoke_event(s3, c3, three, [TRAINING], ended=True),
        p.revoke_event(s4, c4, four[:1], [TRAINING], ended=False),
        p.revoke_event(s1, c1, one[1:], [TRAINING], ended=True),
        p.revoke_event(new_id("sub"), new_id("cns"), four[1:], [TRAINING], ended=True),
    ]
    return licenses, [*one, *two, *three, *four], events


def _seen(
    registry: TestClient,
    operator: dict[str, str],
    licenses: list[str],
    samples: list[str],
    events: list[pb.ConsentEvent],
) -> Any:
    """What licensees and operators see of a world, its ids replaced by their positions."""
    names = {lid: f"license{i}" for i, lid in enumerate(licenses)}
    names |= {sid: f"sample{i}" for i, sid in enumerate(samples)}
    revoked = [(i, e.consent_revoked) for i, e in enumerate(events) if e.HasField("consent_revoked")]
    names |= {msg.revocation_id: f"revocation{i}" for i, msg in revoked}
    names |= {msg.consent_id: f"consent{i}" for i, msg in revoked}

    def canon(value: Any) -> Any:
        if isinstance(value, dict):
            # Times differ between worlds; whether one is set does not.
            return {
                k: (v is not None if k.endswith("_at") else canon(v))
                for k, v in value.items()
                if k != "sha256"
            }
        if isinstance(value, list):
            return sorted((canon(v) for v in value), key=repr)
        return names.get(value, value) if isinstance(value, str) else value

    seen: dict[str, Any] = {}
    for lid in licenses:
        seen[names[lid]] = registry.get(f"/v1/licenses/{lid}", headers=operator).json()
        seen[names[lid] + "/samples"] = registry.get(f"/v1/licenses/{lid}/samples", headers=operator).json()
    for view in ("samples", "licenses"):
        r = registry.post("/v1/holders", json={"sample_ids": samples, "view": view}, headers=operator)
        assert r.status_code == 200, r.text
        seen[f"holders/{view}"] = r.json()
    return canon(seen)


def test_revocations_in_one_poll_match_them_applied_one_at_a_time(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    from registry.projection.service import apply_events

    licensees = [new_licensee(registry, operator, "Acme"), new_licensee(registry, operator, "Bolt")]
    one_by_one = _revocation_world(registry, operator, projection, licensees)
    together = _revocation_world(registry, operator, projection, licensees)

    assert [projection.apply(e) for e in one_by_one[2]] == [True] * len(one_by_one[2])
    with projection.sessions() as session, session.begin():
        assert apply_events(session, together[2]) == [True] * len(together[2])

    expected = _seen(registry, operator, *one_by_one)
    assert _seen(registry, operator, *together) == expected
    # What the poll did, as a buyer notices it: revoked licenses and which revocation took which sample.
    statuses = [expected[f"license{i}"]["status"] for i in range(7)]
    assert statuses == ["revoked", "revoked", "revoked", "revoked", "active", "revoked", "revoked"]
    first = {s["sample_id"]: s["revocation_id"] for s in expected["license1/samples"]["items"]}
    assert first == {"sample0": "revocation0", "sample1": "revocation2", "sample2": "revocation2"}
    training = {s["sample_id"]: s["revocation_id"] for s in expected["license0/samples"]["items"]}
    assert training == {"sample0": "revocation0", "sample1": "revocation7", "sample2": "revocation7"}
    assert (
        expected["license3"]["revoked_sample_count"] == 2
        and expected["license4"]["revoked_sample_count"] == 0
    )


# -- license events: the projection tells the worker which licenses a revocation reached ----------


def license_events(projection: Projection, *licensees: str) -> list[tuple[Any, lpb.LicenseEvent]]:
    """The registry's outbox rows keyed by these licensees, oldest first, with their events."""
    with projection.sessions() as session:
        rows = list(session.scalars(select(Outbox).where(Outbox.key.in_(licensees)).order_by(Outbox.id)))
        session.expunge_all()
    return [(row, lpb.LicenseEvent.FromString(row.payload)) for row in rows]


def withdrawn(events: list[tuple[Any, lpb.LicenseEvent]]) -> dict[str, tuple[str, list[str], bool]]:
    """license id -> (revocation id, samples withdrawn, license ended), chunks joined."""
    out: dict[str, tuple[str, list[str], bool]] = {}
    for _, e in events:
        msg = e.license_samples_withdrawn
        _, samples, _ = out.get(e.license_id, ("", [], False))
        out[e.license_id] = (msg.revocation_id, sorted([*samples, *msg.sample_ids]), msg.license_ended)
    return out


def test_a_revocation_tells_each_license_it_took_samples_from_once_in_its_own_transaction(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    from registry.projection.service import LICENSE_TOPIC, apply_event

    acme, bolt, cyan = (new_licensee(registry, operator, n) for n in ("Acme", "Bolt", "Cyan"))
    subject, samples = projection.samples(3)
    consent = projection.grant(subject, samples, purposes=(TRAINING, "evaluation"))
    acme_license = make_license(registry, operator, **license_body(acme, consent, samples))["id"]
    bolt_license = make_license(registry, operator, **license_body(bolt, consent, samples[:2]))["id"]
    cyan_license = make_license(
        registry, operator, **license_body(cyan, consent, samples, purpose="evaluation")
    )["id"]

    # Withdrawing the evaluation purpose reaches Cyan's license alone.
    first = projection.revoke_event(subject, consent, samples, ["evaluation"], ended=False)
    with projection.sessions() as session:
        session.begin()
        assert apply_event(session, first)
        inside = session.scalars(select(Outbox).where(Outbox.key == cyan)).all()
        assert len(inside) == 1  # written by the transaction that withdraws the samples ...
        session.rollback()
    assert license_events(projection, acme, bolt, cyan) == []  # ... and gone with it
    assert registry.get(f"/v1/licenses/{cyan_license}", headers=operator).json()["status"] == "active"
    assert projection.apply(first)
    events = license_events(projection, acme, bolt, cyan)
    assert withdrawn(events) == {cyan_license: (first.consent_revoked.revocation_id, sorted(samples), True)}
    row, event = events[0]
    assert (row.topic, row.key, row.event_type) == (LICENSE_TOPIC, cyan, "license_samples_withdrawn")
    msg = event.license_samples_withdrawn
    assert (event.licensee_id, event.producer, msg.consent_id, msg.purpose) == (
        cyan,
        "registry",
        consent,
        "evaluation",
    )
    assert (msg.chunk_index, msg.chunk_count) == (0, 1) and event.event_id == row.event_id

    # One sample withdrawn for every purpose: Acme and Bolt lose it; Cyan's license is already empty.
    second = projection.revoke(subject, consent, samples[:1], [TRAINING, "evaluation"], ended=False)
    got = withdrawn(license_events(projection, acme, bolt, cyan)[1:])
    assert got == {acme_license: (second, samples[:1], False), bolt_license: (second, samples[:1], False)}

    # The same event again (a redelivery) writes nothing; nor does a revocation no license holds.
    before = len(license_events(projection, acme, bolt, cyan))
    assert not projection.apply(first)
    other_subject, other_samples = projection.samples(1)
    unlicensed = projection.grant(other_subject, other_samples)
    projection.revoke(other_subject, unlicensed, other_samples, [TRAINING], ended=True)
    assert len(license_events(projection, acme, bolt, cyan)) == before

    # The end of the consent: each license loses what it still had, and ends.
    third = projection.revoke(subject, consent, samples[1:], [TRAINING], ended=True)
    got = withdrawn(license_events(projection, acme, bolt, cyan)[before:])
    assert got == {
        acme_license: (third, sorted(samples[1:]), True),
        bolt_license: (third, samples[1:2], True),
    }


def test_a_large_withdrawal_is_split_into_numbered_chunks(
    registry: TestClient, operator: dict[str, str], projection: Projection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry import events as registry_events

    monkeypatch.setattr(registry_events, "EVENT_CHUNK", 2)
    lic = new_licensee(registry, operator)
    subject, samples = projection.samples(5)
    consent = projection.grant(subject, samples)
    license_id = make_license(registry, operator, **license_body(lic, consent, samples))["id"]
    revocation = projection.revoke(subject, consent, samples, [TRAINING], ended=True)
    events = [e for _, e in license_events(projection, lic)]
    chunks = [
        (e.license_samples_withdrawn.chunk_index, e.license_samples_withdrawn.chunk_count) for e in events
    ]
    assert chunks == [(0, 3), (1, 3), (2, 3)]
    assert [len(e.license_samples_withdrawn.sample_ids) for e in events] == [2, 2, 1]
    assert len({e.event_id for e in events}) == 3
    assert withdrawn([(None, e) for e in events]) == {license_id: (revocation, sorted(samples), True)}


def test_a_license_recorded_after_the_projection_applied_the_revocation_is_refused_naming_the_field(
    registry: TestClient, operator: dict[str, str], projection: Projection
) -> None:
    """Whatever the revocation withdrew (the whole consent, one purpose, one licensee of an open
    consent), a license asked for once the projection knows is refused, with the field named."""
    acme, bolt = new_licensee(registry, operator, "Acme"), new_licensee(registry, operator, "Bolt")
    cases = [
        ("body.consent_id", {"purposes": [TRAINING], "ended": True}),
        ("body.purpose", {"purposes": [TRAINING], "ended": False}),
        (
            "body.licensee_id",
            {"purposes": [TRAINING, "evaluation"], "ended": False, "only_licensee_id": acme},
        ),
    ]
    for field, revocation in cases:
        subject, samples = projection.samples(2)
        consent = projection.grant(subject, samples, purposes=(TRAINING, "evaluation"))
        purposes = revocation.pop("purposes")
        projection.revoke(subject, consent, samples, purposes, **revocation)
        problem = assert_problem(
            registry.post("/v1/licenses", json=license_body(acme, consent, samples), headers=operator),
            409,
            field,
        )
        assert problem["type"].endswith(("/consent-not-active", "/consent-does-not-cover")), problem
        assert license_events(projection, acme) == []  # nothing recorded, nothing to tell
    # The licensee-only withdrawal leaves the consent open to the others.
    make_license(registry, operator, **license_body(bolt, consent, samples))
