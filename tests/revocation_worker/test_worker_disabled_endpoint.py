"""Deliveries to a disabled endpoint (410 Gone, or failing too long) never hang out of sight: they
end dead-lettered (the operator's backlog, its metric, its re-drive), the notice turns `failed`
with a NoticeFailed event when none of its deliveries can still succeed, and re-enabling the
endpoint or registering a new one delivers them. Real local receivers; PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update

from rescind_common.db import utcnow
from revocation_worker import sweeps
from revocation_worker.endpoints.models import Endpoint
from revocation_worker.notices.models import Delivery

from support.wait import wait_until
from support.worker import barrier, outbox_events


def dead_letters(w: Any, licensee_id: str) -> dict[str, Any]:
    r = w.client.get("/v1/operator/dead-letters", params={"licensee_id": licensee_id}, headers=w.operator)
    assert r.status_code == 200, r.text
    return dict(r.json())


def failed_events(w: Any, licensee_id: str) -> list[Any]:
    return [ev for row, ev in outbox_events(w.ctx, licensee_id) if row.event_type == "notice_failed"]


def wait_disabled(w: Any, h: dict[str, str], ep: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        e = dict(w.client.get(f"/v1/endpoints/{ep}", headers=h).json())
        return e if e["status"] == "disabled" else None

    return wait_until(check, what="the endpoint to be disabled")


def test_410_dead_letters_the_endpoints_whole_backlog_and_re_enabling_delivers_it(
    worker: Any, receiver: Any
) -> None:
    # One request at a time to the endpoint: the first notice's 410 leaves two never attempted.
    w = worker(worker_endpoint_concurrency=1)
    gone = True
    rcv = receiver(lambda n, req: 410 if gone else 200)
    lic, h = w.licensee()
    ep, secret = w.register(h, rcv.url)
    notices = [w.make_notice(lic, models=[]) for _ in range(3)]
    w.deliver()
    wait_disabled(w, h, ep)

    # Every notice ends failed, each of its deliveries dead: none waits for a retry that never comes.
    for nid in notices:
        failed = w.wait_status(h, nid, "failed")
        (d,) = failed["deliveries"]
        assert d["status"] == "dead" and d["next_attempt_at"] is None, d
    assert rcv.count() == 1 and rcv.requests[0].verify(secret)
    # The operator sees the whole backlog, and the seller-side event stream says failed for each.
    backlog = dead_letters(w, lic)
    assert backlog["total"] == 3
    assert sorted(x["notice_id"] for x in backlog["items"]) == sorted(notices)
    assert {x["endpoint_id"] for x in backlog["items"]} == {ep}
    assert sorted(ev.notice_id for ev in failed_events(w, lic)) == sorted(notices)
    listed = w.client.get("/v1/notices", params={"status": "failed"}, headers=h).json()["items"]
    assert sorted(n["id"] for n in listed) == sorted(notices)

    # A re-drive while the endpoint is still disabled leaves them dead and visible (pending, they
    # would hang again), and sends nothing.
    r = w.client.post("/v1/operator/dead-letters/redrive", json={"licensee_id": lic}, headers=w.operator)
    assert r.status_code == 200 and r.json() == {"redriven": 0}
    assert dead_letters(w, lic)["total"] == 3
    barrier(w, receiver, rounds=1)
    assert rcv.count() == 1

    # The licensee fixes its receiver and re-enables the endpoint: the backlog goes through.
    gone = False
    r = w.client.post(f"/v1/endpoints/{ep}/enable", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "active"
    for nid in notices:
        w.wait_status(h, nid, "delivered")
    got = rcv.wait_for(4)[1:]
    assert sorted(x.verify(secret)["data"]["notice_id"] for x in got) == sorted(notices)
    assert {x.webhook_id for x in got} == {f"msg_{nid}" for nid in notices}
    assert dead_letters(w, lic)["total"] == 0


def test_410_with_a_working_endpoint_besides_delivers_and_a_new_endpoint_takes_over(
    worker: Any, receiver: Any
) -> None:
    w = worker()
    gone = receiver(lambda n, req: 410)
    lic, h = w.licensee()
    ep_gone, _ = w.register(h, gone.url)
    w.deliver()

    # Another working endpoint: the notice is delivered, not failed; the dead delivery is visible.
    ok = receiver()
    ep_ok, secret_ok = w.register(h, ok.url)
    nid = w.make_notice(lic, models=[])
    wait_disabled(w, h, ep_gone)
    w.wait_status(h, nid, "delivered")
    wait_until(
        lambda: (
            {d["endpoint_id"]: d["status"] for d in w.notice(h, nid)["deliveries"]}
            == {ep_gone: "dead", ep_ok: "succeeded"}
        ),
        what="one delivery dead, the other succeeded",
    )
    ok.wait_for(1)[0].verify(secret_ok)
    assert failed_events(w, lic) == []

    # The working endpoint is deleted; the next notice reaches nothing (no endpoint is active):
    # pending, as for a licensee that has not registered one yet. A new endpoint receives it.
    assert w.client.delete(f"/v1/endpoints/{ep_ok}", headers=h).status_code == 204
    nid2 = w.make_notice(lic, models=[])
    new = receiver()
    _, secret_new = w.register(h, new.url)
    (got,) = new.wait_for(1)
    assert got.verify(secret_new)["data"]["notice_id"] == nid2
    w.wait_status(h, nid2, "delivered")
    assert gone.count() == 1


def test_failed_notices_go_to_a_newly_registered_endpoint(worker: Any, receiver: Any) -> None:
    w = worker()
    gone = receiver(lambda n, req: 410)
    lic, h = w.licensee()
    ep, _ = w.register(h, gone.url)
    nid = w.make_notice(lic, models=[])
    w.deliver()
    w.wait_status(h, nid, "failed")

    other = receiver()
    _, secret = w.register(h, other.url)
    (got,) = other.wait_for(1)
    assert got.verify(secret)["data"]["notice_id"] == nid
    w.wait_status(h, nid, "delivered")
    # The delivery to the disabled endpoint stays in the backlog, dead, until it is enabled again.
    assert [(x["endpoint_id"], x["notice_id"]) for x in dead_letters(w, lic)["items"]] == [(ep, nid)]
    assert gone.count() == 1


def test_endpoint_failing_too_long_dead_letters_and_fails(worker: Any, receiver: Any) -> None:
    w = worker(worker_disable_after_seconds=0.2)
    rcv = receiver(lambda n, req: 500)
    lic, h = w.licensee()
    ep, _ = w.register(h, rcv.url)
    nid = w.make_notice(lic, models=[])
    w.deliver()
    wait_disabled(w, h, ep)
    failed = w.wait_status(h, nid, "failed")
    (d,) = failed["deliveries"]
    assert d["status"] == "dead" and d["last_status_code"] == 500 and d["attempts"] >= 2
    assert [ev.notice_id for ev in failed_events(w, lic)] == [nid]
    assert dead_letters(w, lic)["total"] == 1


def test_sweep_dead_letters_what_is_left_pending_to_a_disabled_endpoint(worker: Any, receiver: Any) -> None:
    """Deliveries pending to an endpoint that is already disabled (left so before this was fixed,
    or made while it was being disabled) are dead-lettered by the periodic sweep; one an attempt
    still holds is left to that attempt. Overdue still follows the deadline."""
    w = worker()
    lic, h = w.licensee()
    ep, _ = w.register(h, receiver().url)
    past = utcnow() - dt.timedelta(days=31)
    old, held = w.make_notice(lic, models=[], occurred_at=past), w.make_notice(lic, models=[])
    with w.ctx.session_factory() as session, session.begin():
        session.execute(update(Endpoint).where(Endpoint.id == ep).values(status="disabled"))
        session.execute(
            update(Delivery)
            .where(Delivery.notice_id == held)
            .values(lease_until=utcnow() + dt.timedelta(minutes=5), lease_owner="someone")
        )

    assert sweeps.dead_letter_disabled(w.ctx) == 1
    assert w.notice(h, old)["status"] == "failed"
    assert w.notice(h, old)["deliveries"][0]["status"] == "dead"
    assert w.notice(h, held)["status"] == "pending"
    assert w.notice(h, held)["deliveries"][0]["status"] == "pending"
    assert [ev.notice_id for ev in failed_events(w, lic)] == [old]
    assert sweeps.dead_letter_disabled(w.ctx) == 0  # nothing twice

    # The deadline logic is untouched: a failed notice past its deadline still turns overdue.
    sweeps.sweep_overdue(w.ctx)
    assert w.notice(h, old)["status"] == "overdue"
    assert "notice_overdue" in [row.event_type for row, _ in outbox_events(w.ctx, lic)]
