"""Registering samples: one, or 10,000 in one call; reading them back, paginated."""

from __future__ import annotations

import datetime as dt

from support.helpers import assert_problem, bearer, get_json, register, sha, walk

ATTRS = {"age_band": "30-39", "accent": "Glaswegian", "takes": 3, "score": 0.75, "consented_on_camera": True}


def test_register_one_sample(client, seller):
    h = sha()
    r = client.post(
        "/v1/samples",
        json={"kind": "voice_recording", "sha256": h.upper(), "media_type": "audio/wav", "attributes": ATTRS},
        headers=seller,
    )
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["id"].startswith("smp_")
    assert s["kind"] == "voice_recording"
    assert s["sha256"] == h  # normalised to lower case
    assert s["media_type"] == "audio/wav"
    assert s["attributes"] == ATTRS
    created = dt.datetime.fromisoformat(s["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60

    # read back: one, and in the list
    assert get_json(client, f"/v1/samples/{s['id']}", seller) == s
    assert get_json(client, "/v1/samples", seller)["items"] == [s]


def test_every_kind_is_accepted(client, seller):
    kinds = ["face_image", "voice_recording", "handwriting", "demographics", "other"]
    for kind in kinds:
        r = client.post("/v1/samples", json={"kind": kind, "sha256": sha()}, headers=seller)
        assert r.status_code == 201, r.text
        assert r.json()["attributes"] is None and r.json()["media_type"] is None
    assert sorted(s["kind"] for s in get_json(client, "/v1/samples", seller)["items"]) == sorted(kinds)


def test_new_seller_lists_nothing(client, seller):
    assert get_json(client, "/v1/samples", seller) == {"items": [], "next_cursor": None}


def test_batch_of_10000_in_one_call(client, seller):
    samples = [
        {
            "kind": "face_image" if i % 2 else "voice_recording",
            "sha256": sha(i),
            "media_type": "image/jpeg" if i % 2 else "audio/ogg",
            "attributes": {"i": i, "session": f"s{i // 100}"} if i % 3 == 0 else None,
        }
        for i in range(10_000)
    ]
    r = client.post("/v1/samples/batch", json={"samples": samples}, headers=seller)
    assert r.status_code == 201, r.text[:500]
    items = r.json()["items"]
    assert len(items) == 10_000
    ids = [s["id"] for s in items]
    assert len(set(ids)) == 10_000 and all(i.startswith("smp_") for i in ids)
    # the response is in request order, with every field echoed
    for sent, got in zip(samples, items, strict=True):
        assert (got["sha256"], got["kind"], got["media_type"], got["attributes"]) == (
            sent["sha256"],
            sent["kind"],
            sent["media_type"],
            sent["attributes"],
        )

    # the listing shows all of them, once each, page by page
    listed = walk(client, "/v1/samples", seller, limit=500)
    assert len(listed) == 10_000
    assert {s["id"] for s in listed} == set(ids)
    by_id = {s["id"]: s for s in items}
    for s in listed[::97]:
        assert s == by_id[s["id"]]  # attributes round-trip through storage (sealed) too

    # a small page size paginates too, without overlaps
    first = get_json(client, "/v1/samples", seller, limit=3)
    second = get_json(client, "/v1/samples", seller, limit=3, cursor=first["next_cursor"])
    assert len(first["items"]) == len(second["items"]) == 3
    assert not {s["id"] for s in first["items"]} & {s["id"] for s in second["items"]}

    # consenting to all of them works in one call too
    r = client.post(
        "/v1/consents", json={"all_samples": True, "purposes": ["model_training"]}, headers=seller
    )
    assert r.status_code == 201, r.text[:500]
    assert r.json()["sample_count"] == 10_000


def test_pagination_walks_every_sample_exactly_once(client, seller):
    ids = register(client, seller, 7)
    for limit in (1, 2, 3, 7, 100):
        listed = walk(client, "/v1/samples", seller, limit=limit)
        listed_ids = [s["id"] for s in listed]
        assert len(listed_ids) == len(set(listed_ids)) == 7, limit
        assert set(listed_ids) == set(ids), limit


def test_last_page_has_no_cursor(client, seller):
    register(client, seller, 4)
    page = get_json(client, "/v1/samples", seller, limit=4)
    assert len(page["items"]) == 4 and page["next_cursor"] is None


def test_another_sellers_sample_is_404_like_a_missing_one(client, seller, token):
    [mine] = register(client, seller)
    other = bearer(token("subject"))
    register(client, other)  # the other seller exists too
    theirs = assert_problem(client.get(f"/v1/samples/{mine}", headers=other), 404)
    ghost_id = "smp_" + "0" * 26
    ghost = assert_problem(client.get(f"/v1/samples/{ghost_id}", headers=other), 404)
    assert theirs["type"] == ghost["type"] and theirs["title"] == ghost["title"]
    assert theirs["detail"].replace(mine, "ID") == ghost["detail"].replace(ghost_id, "ID")
    assert mine not in {s["id"] for s in get_json(client, "/v1/samples", other)["items"]}
    # a cursor pointing into another seller's ids reveals nothing either
    assert all(s["id"] != mine for s in walk(client, "/v1/samples", other, limit=1))


def test_content_registered_by_another_subject_is_refused(client, seller, token):
    # The laundering path: a first subject registers and licenses content, then withdraws; a second
    # subject registering the same bytes would make them licensable again under its own consent.
    content = sha()
    first = client.post("/v1/samples", json={"kind": "face_image", "sha256": content}, headers=seller)
    assert first.status_code == 201, first.text
    consent = client.post(
        "/v1/consents",
        json={"sample_ids": [first.json()["id"]], "purposes": ["model_training"]},
        headers=seller,
    ).json()
    assert client.post(f"/v1/consents/{consent['id']}/revoke", headers=seller).status_code == 202

    other = bearer(token("subject"))
    r = client.post("/v1/samples", json={"kind": "face_image", "sha256": content.upper()}, headers=other)
    body = assert_problem(r, 409, "body.sha256")
    assert body["type"] == "https://rescind.dev/problems/content-registered-by-another-subject"
    assert first.json()["id"] not in r.text  # the other subject's sample is not revealed
    # In a batch: the field is named and nothing of the batch is registered.
    fresh = sha()
    r = client.post(
        "/v1/samples/batch",
        json={"samples": [{"kind": "other", "sha256": fresh}, {"kind": "face_image", "sha256": content}]},
        headers=other,
    )
    assert_problem(r, 409, "body.samples[1].sha256")
    assert get_json(client, "/v1/samples", other)["items"] == []
    # So there is nothing the second subject could consent to, and nothing to license.
    r = client.post("/v1/samples", json={"kind": "other", "sha256": fresh}, headers=other)
    assert r.status_code == 201, r.text  # the rest of the batch was never held


def test_erased_content_stays_blocked(client, seller, token):
    # A suppression record: erasure must not free the content for someone else to sell.
    content = sha()
    assert (
        client.post("/v1/samples", json={"kind": "face_image", "sha256": content}, headers=seller).status_code
        == 201
    )
    assert client.post("/v1/rights-requests", json={"type": "erasure"}, headers=seller).status_code == 202
    r = client.post(
        "/v1/samples", json={"kind": "face_image", "sha256": content}, headers=bearer(token("subject"))
    )
    assert_problem(r, 409, "body.sha256")
