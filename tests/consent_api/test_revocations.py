"""Withdrawing consent: one consent (whole or some samples), or by scope (all, licensee, purpose, samples)."""

from __future__ import annotations

from support.helpers import assert_problem, bearer, get_json, grant, register, revoke, revoke_scope, walk


def consent(client, headers, cid):
    return get_json(client, f"/v1/consents/{cid}", headers)


def test_revoke_whole_consent(client, seller):
    sids = register(client, seller, 3)
    c = grant(client, seller, sids)
    rev = revoke(client, seller, c["id"], reason="I changed my mind")
    assert rev["id"].startswith("rev_")
    assert rev["status"] == "pending"
    assert rev["notices"] == []
    assert rev["consent_ids"] == [c["id"]]
    assert rev["consent_id"] == c["id"]
    assert rev["sample_count"] == 3
    assert rev["trigger"] == "subject"

    after = consent(client, seller, c["id"])
    assert after["status"] == "revoked"
    assert after["active_sample_count"] == 0
    assert sorted(after["revoked_sample_ids"]) == sorted(sids)
    assert after["ended_at"] is not None

    got = get_json(client, f"/v1/revocations/{rev['id']}", seller)
    assert got["id"] == rev["id"] and got["status"] == "pending" and got["notices"] == []
    assert got["consent_ids"] == [c["id"]]
    assert rev["id"] in {r["id"] for r in walk(client, "/v1/revocations", seller, limit=1)}


def test_revoke_without_a_body_and_with_an_empty_body(client, seller):
    a = grant(client, seller, register(client, seller))
    b = grant(client, seller, register(client, seller))
    r = client.post(f"/v1/consents/{a['id']}/revoke", headers=seller)
    assert r.status_code == 202, r.text
    r = client.post(f"/v1/consents/{b['id']}/revoke", json={}, headers=seller)
    assert r.status_code == 202, r.text
    assert (
        consent(client, seller, a["id"])["status"] == consent(client, seller, b["id"])["status"] == "revoked"
    )


def test_revoke_some_samples_keeps_the_consent_for_the_rest(client, seller):
    sids = register(client, seller, 4)
    c = grant(client, seller, sids)
    rev = revoke(client, seller, c["id"], sample_ids=sids[:2])
    assert rev["sample_count"] == 2 and rev["consent_ids"] == [c["id"]] and rev["status"] == "pending"

    after = consent(client, seller, c["id"])
    assert after["status"] == "active"
    assert after["sample_count"] == 4
    assert after["active_sample_count"] == 2
    assert sorted(after["revoked_sample_ids"]) == sorted(sids[:2])
    assert sorted(after["sample_ids"]) == sorted(sids)

    # withdrawing the rest ends it
    revoke(client, seller, c["id"], sample_ids=sids[2:])
    after = consent(client, seller, c["id"])
    assert after["status"] == "revoked" and after["active_sample_count"] == 0
    assert sorted(after["revoked_sample_ids"]) == sorted(sids)


def test_revoking_an_already_revoked_consent_is_409(client, seller):
    c = grant(client, seller, register(client, seller))
    revoke(client, seller, c["id"])
    assert_problem(client.post(f"/v1/consents/{c['id']}/revoke", headers=seller), 409)
    assert len(walk(client, "/v1/revocations", seller, limit=10)) == 1  # no second revocation


def test_revoking_samples_not_in_the_consent_is_422_naming_them(client, seller):
    inside = register(client, seller, 2)
    outside = register(client, seller)
    c = grant(client, seller, inside)
    r = client.post(
        f"/v1/consents/{c['id']}/revoke", json={"sample_ids": [inside[0], outside[0]]}, headers=seller
    )
    body = assert_problem(r, 422, "body.sample_ids[1]")
    assert [e["field"] for e in body["errors"]] == ["body.sample_ids[1]"]
    after = consent(client, seller, c["id"])
    assert after["status"] == "active" and after["active_sample_count"] == 2  # nothing withdrawn


def test_another_seller_cannot_revoke_or_read(client, seller, token):
    c = grant(client, seller, register(client, seller))
    rev = revoke(client, seller, grant(client, seller, register(client, seller))["id"])
    other = bearer(token("subject"))
    register(client, other)

    theirs = assert_problem(client.post(f"/v1/consents/{c['id']}/revoke", headers=other), 404)
    ghost_id = "cns_" + "0" * 26
    ghost = assert_problem(client.post(f"/v1/consents/{ghost_id}/revoke", headers=other), 404)
    assert theirs["type"] == ghost["type"]
    assert theirs["detail"].replace(c["id"], "ID") == ghost["detail"].replace(ghost_id, "ID")
    assert consent(client, seller, c["id"])["status"] == "active"

    assert_problem(client.get(f"/v1/revocations/{rev['id']}", headers=other), 404)
    assert walk(client, "/v1/revocations", other, limit=10) == []

    # scope revocations by the other seller never touch this seller's consents
    revoke_scope(client, other, scope="all")
    revoke_scope(client, other, scope="purpose", purpose="model_training")
    assert consent(client, seller, c["id"])["status"] == "active"
    r = client.post(
        "/v1/revocations",
        json={"scope": "samples", "sample_ids": consent(client, seller, c["id"])["sample_ids"]},
        headers=other,
    )
    assert_problem(r, 422, "body.sample_ids[0]")
    assert consent(client, seller, c["id"])["status"] == "active"


def test_scope_all_ends_every_active_consent(client, seller):
    a = grant(client, seller, register(client, seller, 2))
    b = grant(client, seller, register(client, seller), licensee_id="acme", purposes=["evaluation"])
    gone = grant(client, seller, register(client, seller))
    revoke(client, seller, gone["id"])

    rev = revoke_scope(client, seller, scope="all")
    assert rev["status"] == "pending" and rev["scope"] == "all"
    assert sorted(rev["consent_ids"]) == sorted([a["id"], b["id"]])
    assert rev["sample_count"] == 3
    for c in (a, b):
        assert consent(client, seller, c["id"])["status"] == "revoked"
    assert walk(client, "/v1/consents", seller, limit=10, status="active") == []


def test_scope_licensee_ends_only_that_licensees_consents(client, seller):
    acme = grant(client, seller, register(client, seller), licensee_id="acme")
    acme2 = grant(client, seller, register(client, seller), licensee_id="acme", purposes=["evaluation"])
    other = grant(client, seller, register(client, seller), licensee_id="globex")
    rev = revoke_scope(client, seller, scope="licensee", licensee_id="acme")
    assert sorted(rev["consent_ids"]) == sorted([acme["id"], acme2["id"]])
    assert rev["licensee_id"] == "acme"
    assert consent(client, seller, acme["id"])["status"] == "revoked"
    assert consent(client, seller, acme2["id"])["status"] == "revoked"
    assert consent(client, seller, other["id"])["status"] == "active"


def test_scope_licensee_excludes_that_licensee_from_consents_open_to_any(client, seller):
    open_to_all = grant(client, seller, register(client, seller, 2))  # licensee_id null: any licensee
    rev = revoke_scope(client, seller, scope="licensee", licensee_id="acme")
    assert rev["consent_ids"] == [open_to_all["id"]] and rev["sample_count"] == 2
    after = consent(client, seller, open_to_all["id"])
    # Still open to everyone else, but no longer to acme.
    assert after["status"] == "active" and after["active_sample_count"] == 2
    assert after["excluded_licensees"] == ["acme"]
    again = revoke_scope(client, seller, scope="licensee", licensee_id="acme")
    assert again["consent_ids"] == [] and again["status"] == "completed"


def test_scope_purpose_withdraws_one_purpose(client, seller):
    both = grant(client, seller, register(client, seller, 2), purposes=["model_training", "evaluation"])
    only = grant(client, seller, register(client, seller), purposes=["evaluation"])
    unrelated = grant(client, seller, register(client, seller), purposes=["model_training"])

    rev = revoke_scope(client, seller, scope="purpose", purpose="evaluation")
    assert sorted(rev["consent_ids"]) == sorted([both["id"], only["id"]])
    assert rev["purpose"] == "evaluation" and rev["status"] == "pending"

    after = consent(client, seller, both["id"])
    assert after["status"] == "active"  # still good for model_training
    assert after["revoked_purposes"] == ["evaluation"]
    assert after["active_sample_count"] == 2

    ended = consent(client, seller, only["id"])
    assert ended["status"] == "revoked" and ended["revoked_purposes"] == ["evaluation"]
    assert ended["active_sample_count"] == 0 and ended["ended_at"]

    assert consent(client, seller, unrelated["id"])["status"] == "active"
    assert consent(client, seller, unrelated["id"])["revoked_purposes"] == []

    # the same purpose again: nothing left to withdraw
    again = revoke_scope(client, seller, scope="purpose", purpose="evaluation")
    assert again["status"] == "completed" and again["consent_ids"] == []

    # withdrawing the last live purpose ends the consent
    last = revoke_scope(client, seller, scope="purpose", purpose="model_training")
    assert sorted(last["consent_ids"]) == sorted([both["id"], unrelated["id"]])
    after = consent(client, seller, both["id"])
    assert after["status"] == "revoked"
    assert sorted(after["revoked_purposes"]) == ["evaluation", "model_training"]


def test_scope_samples_withdraws_them_from_every_consent(client, seller):
    s1, s2, s3 = register(client, seller, 3)
    a = grant(client, seller, [s1, s2])
    b = grant(client, seller, [s1, s3], purposes=["evaluation"])
    c = grant(client, seller, [s3])
    rev = revoke_scope(client, seller, scope="samples", sample_ids=[s1])
    assert sorted(rev["consent_ids"]) == sorted([a["id"], b["id"]])
    assert rev["sample_count"] == 1
    for x in (a, b):
        after = consent(client, seller, x["id"])
        assert after["status"] == "active" and after["active_sample_count"] == 1
        assert after["revoked_sample_ids"] == [s1]
    assert consent(client, seller, c["id"])["revoked_sample_ids"] == []

    # s3 is c's only sample and b's last active one: both end, a is untouched
    rev = revoke_scope(client, seller, scope="samples", sample_ids=[s3])
    assert sorted(rev["consent_ids"]) == sorted([b["id"], c["id"]])
    assert consent(client, seller, b["id"])["status"] == "revoked"
    assert consent(client, seller, c["id"])["status"] == "revoked"
    assert consent(client, seller, a["id"])["status"] == "active"


def test_scope_samples_with_unknown_ids_is_422(client, seller):
    [mine] = register(client, seller)
    grant(client, seller, [mine])
    ghost = "smp_" + "0" * 26
    r = client.post("/v1/revocations", json={"scope": "samples", "sample_ids": [mine, ghost]}, headers=seller)
    assert_problem(r, 422, "body.sample_ids[1]")
    assert walk(client, "/v1/consents", seller, limit=10, status="active") != []


def test_scope_needing_a_field_without_it_is_422(client, seller):
    grant(client, seller, register(client, seller))
    for scope, field in (
        ("licensee", "body.licensee_id"),
        ("purpose", "body.purpose"),
        ("samples", "body.sample_ids"),
    ):
        assert_problem(client.post("/v1/revocations", json={"scope": scope}, headers=seller), 422, field)
    assert walk(client, "/v1/revocations", seller, limit=10) == []


def test_scope_matching_nothing_completes_at_once(client, seller):
    c = grant(client, seller, register(client, seller), licensee_id="acme", purposes=["evaluation"])
    for body in (
        {"scope": "licensee", "licensee_id": "nobody-holds-this"},
        {"scope": "purpose", "purpose": "synthetic_media"},
    ):
        rev = revoke_scope(client, seller, **body)
        assert rev["status"] == "completed" and rev["consent_ids"] == [] and rev["sample_count"] == 0
        assert get_json(client, f"/v1/revocations/{rev['id']}", seller)["status"] == "completed"
    assert consent(client, seller, c["id"])["status"] == "active"


def test_scope_all_for_a_brand_new_seller_completes(client, seller):
    rev = revoke_scope(client, seller, scope="all")
    assert rev["status"] == "completed" and rev["consent_ids"] == []


def test_revocation_list_paginates(client, seller):
    sids = register(client, seller, 3)
    revs = [revoke(client, seller, grant(client, seller, [s])["id"])["id"] for s in sids]
    listed = [r["id"] for r in walk(client, "/v1/revocations", seller, limit=1)]
    assert len(listed) == len(set(listed)) == 3 and set(listed) == set(revs)


def test_notice_statuses_from_one_batch_match_applying_the_events_one_at_a_time(client, seller, db_url):
    """What the seller reads on each revocation does not depend on how the consumer's polls cut
    the notice topic: one scrambled batch with repeats gives what one event at a time gives."""
    import random

    from consent_api.notices import handler
    from rescind_common.db import make_engine, make_session_factory
    from rescind_common.ids import new_id
    from rescind_common.proto.rescind.v1 import notice_events_pb2 as npb

    payloads = {
        "pending": ("notice_created", npb.NoticeCreated()),
        "delivered": ("notice_delivered", npb.NoticeDelivered()),
        "acknowledged": ("notice_acknowledged", npb.NoticeAcknowledged()),
        "overdue": ("notice_overdue", npb.NoticeOverdue()),
        "failed": ("notice_failed", npb.NoticeFailed()),
    }
    # Per revocation, per licensee, what the worker said, in the order it said it.
    script = [
        {
            "lic_a": ["pending", "delivered", "acknowledged"],
            "lic_b": ["pending", "failed", "delivered"],
            "lic_c": ["pending", "delivered", "overdue"],
        },
        {
            "lic_a": ["pending", "failed"],
            "lic_b": ["pending", "delivered", "failed", "delivered", "acknowledged"],
        },
        {"lic_a": ["pending", "delivered", "overdue", "acknowledged"], "lic_c": ["pending"]},
        {"lic_b": ["pending", "delivered"]},
    ]

    def revocation() -> str:
        return revoke(client, seller, grant(client, seller, register(client, seller))["id"])["id"]

    def stream(revocations: list[str]) -> list[npb.NoticeEvent]:
        """The script's events for these revocations, scrambled, with repeats (same event id)."""
        out = []
        for rev, notices in zip(revocations, script, strict=True):
            resolved = npb.NoticeEvent(event_id=new_id("evt"), revocation_id=rev)
            resolved.revocation_resolved.CopyFrom(npb.RevocationResolved(notice_count=len(notices)))
            out.append(resolved)
            for lic, statuses in notices.items():
                notice = new_id("ntc")
                for status in statuses:
                    e = npb.NoticeEvent(
                        event_id=new_id("evt"), revocation_id=rev, licensee_id=lic, notice_id=notice
                    )
                    field, message = payloads[status]
                    getattr(e, field).CopyFrom(message)
                    out.append(e)
        rng = random.Random(7)
        out += rng.sample(out, len(out) // 2)
        rng.shuffle(out)
        return out

    def seen(revocations: list[str]) -> list[tuple[str, list[tuple[str, str]]]]:
        out = []
        for rev in revocations:
            got = get_json(client, f"/v1/revocations/{rev}", seller)
            out.append((got["status"], [(n["licensee_id"], n["status"]) for n in got["notices"]]))
        return out

    in_batch = [revocation() for _ in script]
    one_by_one = [revocation() for _ in script]
    batch = stream(in_batch)
    # The same events for the other revocations: same order, same repeats.
    renamed: dict[str, str] = {}
    to_other = dict(zip(in_batch, one_by_one, strict=True))
    singles = []
    for e in batch:
        copy = npb.NoticeEvent()
        copy.CopyFrom(e)
        copy.event_id = renamed.setdefault(e.event_id, new_id("evt"))
        copy.revocation_id = to_other[e.revocation_id]
        singles.append(copy)

    engine = make_engine(db_url, pool_size=1)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session, session.begin():
            applied = handler.apply_events(session, batch)
        assert sum(applied) == len({e.event_id for e in batch})
        for e in singles:
            with sessions() as session, session.begin():
                handler.apply(session, e)
    finally:
        engine.dispose()

    # Out of order, a status never moves back; among equals (failed/delivered) the later one wins.
    expected = []
    for rev, notices in zip(in_batch, script, strict=True):
        final: dict[str, str] = {}
        firsts = {e.event_id: e for e in reversed(batch) if e.revocation_id == rev and e.licensee_id}
        for e in sorted(firsts.values(), key=batch.index):
            new = handler.STATUS[e.WhichOneof("payload")]
            if e.licensee_id not in final or handler.RANK[new] >= handler.RANK[final[e.licensee_id]]:
                final[e.licensee_id] = new
        assert set(final) == set(notices)
        expected.append(sorted(final.items()))
    assert [notices for _, notices in seen(in_batch)] == expected
    assert seen(in_batch) == seen(one_by_one)
    assert {status for status, _ in seen(in_batch)} >= {"overdue", "failed"}


def test_a_licensee_told_after_the_resolution_shows_and_never_stands_in_for_one_still_missing(
    client, seller, db_url
):
    """A license recorded while the registry lagged behind the revocation is told late: its
    NoticeCreated comes after the revocation's RevocationResolved, which did not name it. The
    seller sees it among the licensees told, and the revocation is not `delivered` while a licensee
    the resolution named has still not been heard of."""
    from consent_api.notices import handler
    from rescind_common.db import make_engine, make_session_factory
    from rescind_common.ids import new_id
    from rescind_common.proto.rescind.v1 import notice_events_pb2 as npb

    engine = make_engine(db_url, pool_size=1)
    sessions = make_session_factory(engine)

    def worker_says(rev: str, licensee: str = "", **payload) -> None:
        e = npb.NoticeEvent(
            event_id=new_id("evt"), revocation_id=rev, licensee_id=licensee, notice_id="ntc_x"
        )
        ((field, message),) = payload.items()
        getattr(e, field).CopyFrom(message)
        with sessions() as session, session.begin():
            assert handler.apply(session, e)

    def seen(rev: str) -> tuple[str, dict[str, str]]:
        got = get_json(client, f"/v1/revocations/{rev}", seller)
        return got["status"], {n["licensee_id"]: n["status"] for n in got["notices"]}

    def revocation() -> str:
        return revoke(client, seller, grant(client, seller, register(client, seller))["id"])["id"]

    try:
        rev = revocation()
        resolved = npb.RevocationResolved(notice_count=2, licensee_ids=["lic_a", "lic_b"])
        worker_says(rev, revocation_resolved=resolved)
        for lic in ("lic_a", "lic_late"):
            worker_says(rev, lic, notice_created=npb.NoticeCreated())
            worker_says(rev, lic, notice_delivered=npb.NoticeDelivered())
        # Two notices delivered, as many as the resolution counted, but lic_b's is not in yet.
        assert seen(rev) == ("pending", {"lic_a": "delivered", "lic_late": "delivered"})
        worker_says(rev, "lic_b", notice_created=npb.NoticeCreated())
        worker_says(rev, "lic_b", notice_delivered=npb.NoticeDelivered())
        assert seen(rev) == (
            "delivered",
            {"lic_a": "delivered", "lic_b": "delivered", "lic_late": "delivered"},
        )

        # Nobody held the samples at the resolution; a licensee told later makes it pending again.
        rev = revocation()
        worker_says(rev, revocation_resolved=npb.RevocationResolved(notice_count=0))
        assert seen(rev) == ("completed", {})
        worker_says(rev, "lic_late", notice_created=npb.NoticeCreated())
        assert seen(rev) == ("pending", {"lic_late": "pending"})
        worker_says(rev, "lic_late", notice_delivered=npb.NoticeDelivered())
        assert seen(rev) == ("delivered", {"lic_late": "delivered"})
    finally:
        engine.dispose()
