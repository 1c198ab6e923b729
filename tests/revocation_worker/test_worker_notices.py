"""revocation-worker notices API, as a licensee and the operator see it: own notices only,
filters, acknowledgements, large notices paged, overdue deadlines."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from rescind_common.db import utcnow
from revocation_worker.intake.holdings import HoldingsMerger
from revocation_worker.intake.resolver import Withdrawal, affected
from revocation_worker.notices.models import Notice, NoticeSample, RevocationSample
from revocation_worker.sweeps import sweep_overdue

from support.helpers import assert_problem, sha, walk
from support.worker import add_revocation, create_notices, outbox_events

MODEL = {"model_id": "mdl_notices1", "name": "voice-clone", "version": "7"}


def test_licensee_lists_and_reads_only_its_own(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    other_lic, other_h = w.licensee()
    mine = [w.make_notice(lic, samples=2, models=[MODEL]) for _ in range(3)]
    theirs = w.make_notice(other_lic)

    items = walk(w.client, "/v1/notices", h, 2)
    assert [n["id"] for n in items] == sorted(mine)
    assert all(n["licensee_id"] == lic and n["status"] == "pending" for n in items)
    assert [n["id"] for n in walk(w.client, "/v1/notices", other_h, 100)] == [theirs]

    one = w.notice(h, mine[0])
    assert one["sample_count"] == 2 and len(one["samples"]) == 2
    assert one["models"][0]["model_id"] == "mdl_notices1"
    assert one["deadline"] and one["revocation_id"].startswith("rev_")

    # Someone else's notice does not exist for me, whatever I try.
    assert_problem(w.client.get(f"/v1/notices/{theirs}", headers=h), 404)
    assert_problem(w.client.get(f"/v1/notices/{theirs}/samples", headers=h), 404)
    assert_problem(w.client.post(f"/v1/notices/{theirs}/ack", json={"status": "completed"}, headers=h), 404)
    assert_problem(w.client.post(f"/v1/notices/{theirs}/redeliver", headers=h), 404)
    assert_problem(w.client.get("/v1/notices/ntc_doesnotexist", headers=h), 404)
    # ... and my failed attempts changed nothing of theirs.
    assert w.notice(other_h, theirs)["status"] == "pending"


def test_status_filter(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    a, b = w.make_notice(lic, models=[]), w.make_notice(lic, models=[])
    r = w.client.post(f"/v1/notices/{a}/ack", json={"status": "completed"}, headers=h)
    assert r.status_code == 200, r.text
    assert [n["id"] for n in walk(w.client, "/v1/notices", h, 10, status="acknowledged")] == [a]
    assert [n["id"] for n in walk(w.client, "/v1/notices", h, 10, status="pending")] == [b]
    assert walk(w.client, "/v1/notices", h, 10, status="overdue") == []
    assert_problem(w.client.get("/v1/notices", params={"status": "bogus"}, headers=h), 422, "query.status")
    assert_problem(w.client.get("/v1/notices", params={"cursor": "%%%"}, headers=h), 400, "query.cursor")


@pytest.mark.parametrize("role", ["subject", "operator"])
def test_other_roles_are_forbidden_on_licensee_endpoints(worker: Any, role: str) -> None:
    w = worker()
    lic, _ = w.licensee()
    nid = w.make_notice(lic)
    h = w.headers(role, lic)  # even with the licensee's id as its subject
    for method, path, body in [
        ("GET", "/v1/notices", None),
        ("GET", f"/v1/notices/{nid}", None),
        ("GET", f"/v1/notices/{nid}/samples", None),
        ("POST", f"/v1/notices/{nid}/ack", {"status": "completed"}),
        ("POST", f"/v1/notices/{nid}/redeliver", None),
    ]:
        assert_problem(w.client.request(method, path, json=body, headers=h), 403)
    assert_problem(w.client.get(f"/v1/notices/{nid}"), 401)


def test_operator_sees_all_notices(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    nid = w.make_notice(lic)
    r = w.client.get("/v1/operator/notices", params={"licensee_id": lic}, headers=w.operator)
    assert r.status_code == 200 and [n["id"] for n in r.json()["items"]] == [nid]
    rev = w.notice(h, nid)["revocation_id"]
    r = w.client.get("/v1/operator/notices", params={"revocation_id": rev}, headers=w.operator)
    assert [n["id"] for n in r.json()["items"]] == [nid]
    assert_problem(w.client.get("/v1/operator/notices", headers=h), 403)


def test_ack_completes_the_notice_and_cancels_deliveries(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    w.register(h, "http://127.0.0.1:9/hook")  # no delivery loop runs: the delivery stays pending
    nid = w.make_notice(lic, models=[MODEL])
    assert w.notice(h, nid)["deliveries"][0]["status"] == "pending"

    body = {
        "status": "completed",
        "models": [{"model_id": "mdl_notices1", "action": "unlearned"}],
        "evidence": {"deletion_job": "job-42"},
    }
    r = w.client.post(f"/v1/notices/{nid}/ack", json=body, headers=h)
    assert r.status_code == 200, r.text
    acked = r.json()
    assert acked["status"] == "acknowledged" and acked["acknowledged_at"]
    assert acked["ack"]["models"] == [{"model_id": "mdl_notices1", "action": "unlearned"}]
    assert acked["ack"]["evidence"] == {"deletion_job": "job-42"}
    assert [d["status"] for d in acked["deliveries"]] == ["cancelled"]

    # A retried ack is not an error and changes nothing.
    again = w.client.post(f"/v1/notices/{nid}/ack", json={"status": "completed"}, headers=h)
    assert again.status_code == 200, again.text
    assert again.json()["ack"] == acked["ack"]
    assert again.json()["acknowledged_at"] == acked["acknowledged_at"]
    assert [row.event_type for row, _ in outbox_events(w.ctx, lic)].count("notice_acknowledged") == 1
    # Nothing left to redeliver.
    assert_problem(w.client.post(f"/v1/notices/{nid}/redeliver", headers=h), 409)


def test_ack_naming_an_unknown_model_is_refused(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    nid = w.make_notice(lic, models=[MODEL])
    body = {
        "status": "completed",
        "models": [
            {"model_id": "mdl_not_mine", "action": "retrained"},
            {"model_id": "mdl_notices1", "action": "retrained"},
        ],
    }
    assert_problem(
        w.client.post(f"/v1/notices/{nid}/ack", json=body, headers=h), 422, "body.models[0].model_id"
    )
    assert w.notice(h, nid)["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "done"}, "body.status"),
        ({}, "body.outcome"),
        (
            {"status": "completed", "models": [{"model_id": "mdl_notices1", "action": "ignored"}]},
            "body.models",
        ),
        ({"status": "completed", "surprise": 1}, "body.surprise"),
    ],
)
def test_bad_ack_bodies_name_the_field(worker: Any, body: dict[str, Any], field: str) -> None:
    w = worker()
    lic, h = w.licensee()
    nid = w.make_notice(lic, models=[MODEL])
    assert_problem(w.client.post(f"/v1/notices/{nid}/ack", json=body, headers=h), 422, field)
    assert w.notice(h, nid)["status"] == "pending"


def test_large_notice_inlines_some_and_pages_all(worker: Any, receiver: Any) -> None:
    w = worker(worker_inline_samples=5)
    rcv = receiver()
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic, samples=12)
    w.deliver()
    (got,) = rcv.wait_for(1)
    data = got.verify(secret)["data"]
    assert len(data["samples"]) == 5
    assert data["sample_count"] == 12 and data["samples_truncated"] is True
    assert data["samples_url"].endswith(f"/v1/notices/{nid}/samples")

    notice = w.notice(h, nid)
    assert notice["sample_count"] == 12 and len(notice["samples"]) == 5

    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        r = w.client.get(f"/v1/notices/{nid}/samples", params=params, headers=h)
        assert r.status_code == 200, r.text
        pages.append(r.json()["items"])
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert [len(p) for p in pages] == [5, 5, 2]
    every = [s for p in pages for s in p]
    assert len({s["sample_id"] for s in every}) == 12
    assert every[:5] == data["samples"]  # the inline ones are the first page
    assert all(set(s) == {"sample_id", "sha256", "kind"} for s in every)
    assert w.client.get(f"/v1/notices/{nid}/samples", headers=h).json()["items"] == every


def test_past_deadline_turns_overdue_unless_acknowledged(worker: Any) -> None:
    w = worker()
    lic, h = w.licensee()
    long_ago = utcnow() - dt.timedelta(days=31)
    late = w.make_notice(lic, occurred_at=long_ago)
    late_but_acked = w.make_notice(lic, occurred_at=long_ago, models=[])
    in_time = w.make_notice(lic)
    assert (
        w.client.post(
            f"/v1/notices/{late_but_acked}/ack", json={"status": "completed"}, headers=h
        ).status_code
        == 200
    )

    assert sweep_overdue(w.ctx) >= 1
    overdue = w.notice(h, late)
    assert overdue["status"] == "overdue"
    assert w.notice(h, late_but_acked)["status"] == "acknowledged"
    assert w.notice(h, in_time)["status"] == "pending"
    assert [n["id"] for n in walk(w.client, "/v1/notices", h, 10, status="overdue")] == [late]
    ops = w.client.get(
        "/v1/operator/notices", params={"status": "overdue", "licensee_id": lic}, headers=w.operator
    )
    assert [n["id"] for n in ops.json()["items"]] == [late]

    # A second sweep changes nothing and tells nobody twice.
    sweep_overdue(w.ctx)
    events = outbox_events(w.ctx, lic)
    overdue_events = [ev for row, ev in events if row.event_type == "notice_overdue"]
    assert len(overdue_events) == 1 and overdue_events[0].notice_id == late
    assert overdue_events[0].notice_overdue.deadline.ToDatetime(tzinfo=dt.UTC) == dt.datetime.fromisoformat(
        overdue["deadline"].replace("Z", "+00:00")
    )

    # Late is better than never: the overdue notice can still be acknowledged, and stays so; an
    # answer that leaves its model out leaves it overdue.
    r = w.client.post(f"/v1/notices/{late}/ack", json={"status": "completed"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "overdue"
    assert r.json()["answer"]["missing_models"] == [m["model_id"] for m in overdue["models"]]
    model = overdue["models"][0]["model_id"]
    r = w.client.post(
        f"/v1/notices/{late}/ack", json={"models": [{"model_id": model, "action": "withdrawn"}]}, headers=h
    )
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    sweep_overdue(w.ctx)
    assert w.notice(h, late)["status"] == "acknowledged"


def test_tiny_deadline_setting(worker: Any) -> None:
    """worker_notice_deadline_days sets the deadline; a notice whose deadline passed turns overdue."""
    w = worker(worker_notice_deadline_days=1e-6)  # about 86 ms
    lic, h = w.licensee()
    nid = w.make_notice(lic, occurred_at=utcnow() - dt.timedelta(seconds=1))
    n = w.notice(h, nid)
    gap = dt.datetime.fromisoformat(n["deadline"].replace("Z", "+00:00")) - dt.datetime.fromisoformat(
        n["revoked_at"].replace("Z", "+00:00")
    )
    assert abs(gap.total_seconds() - 0.0864) < 0.001
    sweep_overdue(w.ctx)
    assert w.notice(h, nid)["status"] == "overdue"


def _fan_out(
    w: Any, refs: dict[str, dict[str, str]], holders: dict[str, tuple[str, list[str]]], models: list[Any]
) -> list[Any]:
    """Notices for one revocation as the resolver makes them, from a registry `licenses` view
    answer: holders = licensee -> (consent id, samples it holds)."""
    samples = list(refs)
    requested = set(samples)
    licenses = []
    for n, (lic, (consent, held)) in enumerate(sorted(holders.items())):
        every = set(held) == requested
        licenses.append(
            {
                "license_id": f"lcs_fan{n}",
                "licensee_id": lic,
                "licensee_name": lic,
                "status": "active",
                "consent_id": consent,
                "purpose": "model_training",
                "dataset": None,
                "sample_count": len(held),
                "all_requested": every,
                "sample_ids": [] if every else held,
            }
        )
    merger = HoldingsMerger()
    merger.add(
        samples,
        {
            "licenses": licenses,
            "samples": list(refs.values()),
            "models": models,
            "unknown_sample_ids": [],
        },
    )
    told = affected(
        merger.result(), [Withdrawal("cns_fan", frozenset(samples), frozenset({"model_training"}), None)]
    )
    with w.ctx.session_factory() as session, session.begin():
        return create_notices(session, w.ctx, add_revocation(session), told)


KINDS = ["face_image", "voice_recording", "handwriting"]


def test_fan_out_each_licensee_reads_exactly_its_samples(worker: Any, receiver: Any) -> None:
    w = worker()
    samples = [f"smp_{uuid.uuid4().hex[:12]}{i:05d}" for i in range(2500)]
    ref = {
        s: {"sample_id": s, "sha256": sha(i), "kind": KINDS[i % len(KINDS)]} for i, s in enumerate(samples)
    }
    (a, ha), (b, hb), (c, hc), (other, _) = (w.licensee() for _ in range(4))
    subset = samples[::3]  # c holds a third of them
    rcv = {lic: receiver() for lic in (a, b, c)}
    secrets = {lic: w.register(h, rcv[lic].url)[1] for lic, h in ((a, ha), (b, hb), (c, hc))}
    model = {
        "model_id": f"mdl_{uuid.uuid4().hex[:12]}",
        "licensee_id": a,
        "name": "faces",
        "version": "2",
        "shard_ids": [],
        "license_ids": ["lcs_fan0", "lcs_fan1", "lcs_fan2", "lcs_fan3"],
    }
    ids = _fan_out(
        w,
        ref,
        {
            a: ("cns_fan", samples),
            b: ("cns_fan", samples),
            c: ("cns_fan", subset),
            other: ("cns_else", samples),
        },
        [model],
    )
    assert len(ids) == 3  # `other` holds them under a consent that stays

    w.deliver()
    for lic, h in ((a, ha), (b, hb), (c, hc)):
        expected = sorted(subset if lic == c else samples)
        (got,) = rcv[lic].wait_for(1)
        data = got.verify(secrets[lic])["data"]
        assert data["licensee_id"] == lic
        assert data["samples"] == [ref[s] for s in expected[:1000]]
        assert data["sample_count"] == len(expected)
        assert data["samples_truncated"] is (len(expected) > 1000)
        (license,) = data["licenses"]
        assert license["consent_id"] == "cns_fan" and license["purposes"] == ["model_training"]
        assert license["trigger"] == "withdrawal" and license["sample_count"] == len(expected)
        whole = {"scope": "whole", "shard_ids": [], "license_ids": [license["license_id"]]}
        assert data["models"] == (
            [{**{k: model[k] for k in ("model_id", "name", "version")}, **whole}] if lic == a else []
        )
        (notice,) = w.client.get("/v1/notices", headers=h).json()["items"]
        assert notice["sample_count"] == len(expected) and notice["samples"] == data["samples"]
        listed = walk(w.client, f"/v1/notices/{notice['id']}/samples", h, limit=500)
        assert listed == [ref[s] for s in expected]

    # Stored once: the two full holders keep no rows of their own.
    with w.ctx.session_factory() as session:
        rows = dict(
            session.execute(
                select(NoticeSample.notice_id, func.count())
                .where(NoticeSample.notice_id.in_(ids))
                .group_by(NoticeSample.notice_id)
            ).all()
        )
        shared = session.scalar(
            select(func.count())
            .select_from(RevocationSample)
            .join(Notice, Notice.revocation_id == RevocationSample.revocation_id)
            .where(Notice.id == ids[0])
        )
    assert list(rows.values()) == [len(subset)] and shared == 2500

    (notice_a,) = w.client.get("/v1/notices", headers=ha).json()["items"]
    bad = w.client.post(
        f"/v1/notices/{notice_a['id']}/ack",
        json={"status": "completed", "models": [{"model_id": "mdl_nope", "action": "retrained"}]},
        headers=ha,
    )
    assert_problem(bad, 422, "body.models[0].model_id")
    ok = w.client.post(
        f"/v1/notices/{notice_a['id']}/ack",
        json={"status": "completed", "models": [{"model_id": model["model_id"], "action": "retrained"}]},
        headers=ha,
    )
    assert ok.status_code == 200 and ok.json()["status"] == "acknowledged"
