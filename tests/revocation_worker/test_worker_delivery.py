"""revocation-worker delivery, as a buyer's receiver and the operator see it: the signed body,
retries with a stable webhook-id, isolation from hanging endpoints, 410, Retry-After, dead letters
and their re-drive, redelivery and secret rotation. Every delivery is verified with the
`standardwebhooks` library."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import re
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from rescind_common.db import utcnow
from revocation_worker.policy.rules import add_months

from support.helpers import assert_problem, walk
from support.wait import wait_until
from support.worker import Receiver, barrier, outbox_events

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def event_types(w: Any, licensee_id: str) -> list[str]:
    return [row.event_type for row, _ in outbox_events(w.ctx, licensee_id)]


def test_webhook_body_matches_the_contract(worker: Any, receiver: Any) -> None:
    w = worker()
    rcv = receiver()
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    model = {"model_id": "mdl_contract1", "name": "face-embedder", "version": "2.1", "shard_ids": ["s3"]}
    nid = w.make_notice(lic, samples=3, models=[model])
    notice = w.notice(h, nid)
    w.deliver()
    (got,) = rcv.wait_for(1)

    assert got.webhook_id == f"msg_{nid}"
    assert got.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r"\d+", got.headers["webhook-timestamp"])
    assert all(s.startswith("v1,") for s in got.headers["webhook-signature"].split(" "))
    payload = got.verify(secret)
    assert payload["type"] == "revocation.notice"
    assert RFC3339_UTC.match(payload["timestamp"]), payload["timestamp"]
    data = payload["data"]
    assert data["notice_id"] == nid
    assert data["revocation_id"] == notice["revocation_id"]
    assert data["licensee_id"] == lic
    assert RFC3339_UTC.match(data["deadline"])
    # The deadline is one calendar month after the revocation (Art. 12(3)).
    assert parse_time(data["deadline"]) == add_months(parse_time(data["revoked_at"]), 1)
    assert parse_time(data["deadline"]) == parse_time(notice["deadline"])
    assert [set(s) for s in data["samples"]] == [{"sample_id", "sha256", "kind"}] * 3
    assert data["samples"] == [
        {"sample_id": s["sample_id"], "sha256": s["sha256"], "kind": s["kind"]} for s in notice["samples"]
    ]
    assert all(
        re.fullmatch(r"[0-9a-f]{64}", s["sha256"]) and s["kind"] == "face_image" for s in data["samples"]
    )
    assert data["sample_count"] == 3 and data["samples_truncated"] is False
    assert [{k: m[k] for k in ("model_id", "name", "version")} for m in data["models"]] == [
        {"model_id": "mdl_contract1", "name": "face-embedder", "version": "2.1"}
    ]
    assert data["models"][0]["shard_ids"] == ["s3"]
    assert data["ack_url"].endswith(f"/v1/notices/{nid}/ack")
    assert data["samples_url"].endswith(f"/v1/notices/{nid}/samples")

    # A different secret does not verify it; a tampered body does not either.
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body.replace(lic.encode(), b"lic_someone_else"), got.headers)

    done = w.wait_status(h, nid, "delivered")
    assert done["delivered_at"] is not None
    assert done["deliveries"][0]["status"] == "succeeded" and done["deliveries"][0]["attempts"] == 1


def test_500_then_200_same_webhook_id(worker: Any, receiver: Any) -> None:
    w = worker()
    rcv = receiver(lambda n, req: 500 if n == 0 else 200)
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    first, second = rcv.wait_for(2)[:2]
    assert first.webhook_id == second.webhook_id == f"msg_{nid}"
    assert first.verify(secret) == second.verify(secret)  # the same body on every retry
    notice = w.wait_status(h, nid, "delivered")
    d = notice["deliveries"][0]
    assert d["status"] == "succeeded" and d["attempts"] == 2 and d["last_status_code"] == 200
    assert [a.status_code for a in w.attempts(nid)] == [500, 200]
    assert rcv.count() == 2  # nothing more once it succeeded
    delivered = [ev for row, ev in outbox_events(w.ctx, lic) if row.event_type == "notice_delivered"]
    assert len(delivered) == 1 and delivered[0].notice_delivered.attempts == 2


def test_only_2xx_is_success(worker: Any, receiver: Any) -> None:
    answers = [301, 400, 404, 204]
    w = worker()
    rcv = receiver(lambda n, req: answers[min(n, 3)])
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    w.wait_status(h, nid, "delivered")
    got = rcv.wait_for(4)
    assert [a.status_code for a in w.attempts(nid)] == answers
    assert {r.webhook_id for r in got} == {f"msg_{nid}"}
    for r in got:
        r.verify(secret)


def test_hanging_endpoint_does_not_delay_other_licensees(worker: Any, receiver: Any) -> None:
    # A long timeout: the slow licensee's requests stay in flight for the whole test.
    w = worker(worker_delivery_timeout_seconds=30, worker_endpoint_concurrency=2)
    slow = receiver(lambda n, req: "hang")
    fast = receiver()
    slow_lic, slow_h = w.licensee()
    fast_lic, fast_h = w.licensee()
    _, slow_secret = w.register(slow_h, slow.url)
    _, fast_secret = w.register(fast_h, fast.url)
    slow_notices = [w.make_notice(slow_lic) for _ in range(5)]
    w.deliver()
    # The slow endpoint holds its per-endpoint share of the worker (2) and hangs.
    wait_until(lambda: slow.hanging >= 2, what="two hanging requests at the slow endpoint")

    fast_nid = w.make_notice(fast_lic)
    (got,) = fast.wait_for(1)
    assert got.verify(fast_secret)["data"]["notice_id"] == fast_nid
    w.wait_status(fast_h, fast_nid, "delivered")
    # ... while every request to the slow endpoint is still hanging, and its backlog waits its turn.
    assert slow.completed == 0 and slow.hanging == 2 and slow.count() == 2
    assert all(w.notice(slow_h, n)["status"] == "pending" for n in slow_notices)

    # Once it answers, its whole backlog goes through.
    slow.release.set()
    for n in slow_notices:
        w.wait_status(slow_h, n, "delivered")
    got_slow = slow.wait_for(5)
    assert {r.verify(slow_secret)["data"]["notice_id"] for r in got_slow} == set(slow_notices)


def test_timeout_is_retried_with_the_same_webhook_id(worker: Any, receiver: Any) -> None:
    w = worker(worker_delivery_timeout_seconds=0.5)
    rcv = receiver(lambda n, req: "hang" if n == 0 else 200)
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    w.wait_status(h, nid, "delivered")
    first, second = rcv.wait_for(2)[:2]
    assert first.webhook_id == second.webhook_id
    first.verify(secret)
    second.verify(secret)
    attempts = w.attempts(nid)
    assert attempts[0].status_code is None and attempts[0].error == "timeout"
    assert attempts[-1].status_code == 200


def test_410_disables_the_endpoint_and_ops_see_it(worker: Any, receiver: Any) -> None:
    w = worker()
    gone = True
    rcv = receiver(lambda n, req: 410 if gone else 200)
    lic, h = w.licensee()
    ep, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()

    endpoint = w.wait_endpoint(h, ep, "disabled")
    assert "410" in endpoint["disabled_reason"] and endpoint["disabled_at"]
    rcv.wait_for(1)[0].verify(secret)
    ops = walk(w.client, "/v1/operator/endpoints", w.operator, 100, status="disabled")
    assert ep in {e["id"] for e in ops}
    assert ep in {e["id"] for e in walk(w.client, "/v1/operator/endpoints", w.operator, 100)}
    disabled = [ev for row, ev in outbox_events(w.ctx, lic) if row.event_type == "endpoint_disabled"]
    assert len(disabled) == 1 and disabled[0].endpoint_disabled.endpoint_id == ep
    assert "410" in disabled[0].endpoint_disabled.reason
    barrier(w, receiver)
    assert rcv.count() == 1  # no more attempts at a disabled endpoint
    # Nothing can deliver it now: failed, its delivery dead-lettered (not pending with no timer).
    assert w.notice(h, nid)["status"] == "failed"
    assert w.notice(h, nid)["deliveries"][0]["status"] == "dead"

    # The licensee fixes its receiver and re-enables the endpoint: the notice goes through.
    gone = False
    r = w.client.post(f"/v1/endpoints/{ep}/enable", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "active"
    w.wait_status(h, nid, "delivered")
    last = rcv.wait_for(2)[-1]
    assert last.webhook_id == f"msg_{nid}"
    last.verify(secret)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured(worker: Any, receiver: Any, form: str) -> None:
    def respond(n: int, req: Any) -> Any:
        if form == "seconds":
            return 503, {"Retry-After": "120"}
        when = utcnow() + dt.timedelta(seconds=300)
        return 429, {"Retry-After": email.utils.format_datetime(when, usegmt=True)}

    w = worker()
    rcv = receiver(respond)
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    d = wait_until(
        lambda: (x := w.notice(h, nid)["deliveries"][0])["attempts"] >= 1 and x, what="the first attempt"
    )
    rcv.wait_for(1)[0].verify(secret)
    gap = (parse_time(d["next_attempt_at"]) - parse_time(d["last_attempt_at"])).total_seconds()
    # The schedule alone would retry after 50 ms.
    if form == "seconds":
        assert gap >= 120, d
    else:
        assert gap >= 298, d  # the HTTP date has whole seconds
    barrier(w, receiver)
    assert w.notice(h, nid)["deliveries"][0]["status"] == "pending" and rcv.count() == 1


def test_dead_letter_then_operator_redrive(worker: Any, receiver: Any) -> None:
    w = worker(worker_retry_window_seconds=0.5)
    down = True
    rcv = receiver(lambda n, req: 503 if down else 200)
    lic, h = w.licensee()
    ep, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    failed = w.wait_status(h, nid, "failed")
    assert failed["deliveries"][0]["status"] == "dead"
    attempts = rcv.count()
    barrier(w, receiver)
    assert rcv.count() == attempts  # dead: no more attempts until re-driven
    assert attempts >= 2
    for r in rcv.wait_for(attempts):
        assert r.webhook_id == f"msg_{nid}"
        r.verify(secret)

    dead = w.client.get("/v1/operator/dead-letters", params={"licensee_id": lic}, headers=w.operator)
    assert dead.status_code == 200, dead.text
    (item,) = dead.json()["items"]
    assert item["notice_id"] == nid and item["endpoint_id"] == ep and item["last_status_code"] == 503
    assert dead.json()["total"] >= 1
    assert "notice_failed" in event_types(w, lic)
    assert w.client.get("/v1/notices", params={"status": "failed"}, headers=h).json()["items"][0]["id"] == nid

    # The receiver recovers; the operator re-drives this licensee's backlog.
    down = False
    r = w.client.post("/v1/operator/dead-letters/redrive", json={"licensee_id": lic}, headers=w.operator)
    assert r.status_code == 200 and r.json() == {"redriven": 1}
    w.wait_status(h, nid, "delivered")
    last = rcv.wait_for(attempts + 1)[-1]
    assert last.webhook_id == f"msg_{nid}"
    assert last.verify(secret)["data"]["notice_id"] == nid
    dead = w.client.get("/v1/operator/dead-letters", params={"licensee_id": lic}, headers=w.operator)
    assert dead.json()["items"] == []
    assert event_types(w, lic)[-1] == "notice_delivered"


def test_only_operators_see_and_redrive_dead_letters(worker: Any) -> None:
    w = worker()
    _, h = w.licensee()
    assert w.client.get("/v1/operator/dead-letters", headers=h).status_code == 403
    assert w.client.post("/v1/operator/dead-letters/redrive", json={}, headers=h).status_code == 403
    sub = w.headers("subject", "seller-x")
    assert w.client.get("/v1/operator/dead-letters", headers=sub).status_code == 403


def test_licensee_redeliver_resends_with_the_same_webhook_id(worker: Any, receiver: Any) -> None:
    w = worker(worker_redeliver_interval_seconds=0)
    rcv = receiver()
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    w.wait_status(h, nid, "delivered")
    r = w.client.post(f"/v1/notices/{nid}/redeliver", headers=h)
    assert r.status_code == 202, r.text
    first, second = rcv.wait_for(2)
    assert first.webhook_id == second.webhook_id == f"msg_{nid}"
    assert first.verify(secret) == second.verify(secret)
    wait_until(lambda: w.notice(h, nid)["deliveries"][0]["status"] == "succeeded", what="the redelivery")
    assert w.notice(h, nid)["status"] == "delivered"
    assert event_types(w, lic).count("notice_delivered") == 1  # delivered once, as far as the seller cares


def test_notice_before_endpoint_is_delivered_on_registration(worker: Any, receiver: Any) -> None:
    """A licensee that registers its endpoint after a notice was made still receives the notice."""
    w = worker()
    rcv = receiver()
    lic, h = w.licensee()
    nid = w.make_notice(lic)
    assert w.notice(h, nid)["deliveries"] == []
    w.deliver()
    _, secret = w.register(h, rcv.url)
    (got,) = rcv.wait_for(1)
    assert got.verify(secret)["data"]["notice_id"] == nid
    w.wait_status(h, nid, "delivered")


def test_every_active_endpoint_receives_the_notice(worker: Any, receiver: Any) -> None:
    w = worker()
    a, b = receiver(), receiver()
    lic, h = w.licensee()
    _, secret_a = w.register(h, a.url)
    _, secret_b = w.register(h, b.url)
    nid = w.make_notice(lic)
    w.deliver()
    (got_a,) = a.wait_for(1)
    (got_b,) = b.wait_for(1)
    assert got_a.verify(secret_a) == got_b.verify(secret_b)
    assert got_a.webhook_id == got_b.webhook_id == f"msg_{nid}"
    with pytest.raises(WebhookVerificationError):
        got_a.verify(secret_b)  # each endpoint has its own secret


def test_rotation_signs_with_old_and_new_during_grace(worker: Any, receiver: Any) -> None:
    w = worker()
    rcv = receiver()
    lic, h = w.licensee()
    ep, old = w.register(h, rcv.url)
    r = w.client.post(f"/v1/endpoints/{ep}/rotate-secret", headers=h)
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new.startswith("whsec_") and new != old
    expires = parse_time(r.json()["previous_secret_expires_at"])
    assert expires - utcnow() > dt.timedelta(hours=23)
    assert new not in w.client.get(f"/v1/endpoints/{ep}", headers=h).text

    nid = w.make_notice(lic)
    w.deliver()
    (got,) = rcv.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(got.body, got.headers)["data"]["notice_id"] == nid
    assert Webhook(new).verify(got.body, got.headers)["data"]["notice_id"] == nid


def test_rotation_without_grace_drops_the_old_secret(worker: Any, receiver: Any) -> None:
    w = worker(worker_rotation_grace_seconds=0)
    rcv = receiver()
    lic, h = w.licensee()
    ep, old = w.register(h, rcv.url)
    new = w.client.post(f"/v1/endpoints/{ep}/rotate-secret", headers=h).json()["secret"]
    w.make_notice(lic)
    w.deliver()
    (got,) = rcv.wait_for(1)
    got.verify(new)
    with pytest.raises(WebhookVerificationError):
        got.verify(old)


def test_rotation_with_expire_old_now_stops_the_old_secrets_signing_at_once(
    worker: Any, receiver: Any
) -> None:
    """A rotation without expire_old_now keeps the old secret signing; one with it (the secret
    leaked) leaves only the new one: the receiver can no longer verify with either earlier secret."""
    w = worker()
    rcv = receiver()
    lic, h = w.licensee()
    ep, first = w.register(h, rcv.url)
    w.deliver()

    second = w.client.post(f"/v1/endpoints/{ep}/rotate-secret", json={}, headers=h).json()["secret"]
    nid = w.make_notice(lic)
    (got,) = rcv.wait_for(1)
    assert got.verify(first)["data"]["notice_id"] == got.verify(second)["data"]["notice_id"] == nid

    r = w.client.post(f"/v1/endpoints/{ep}/rotate-secret", json={"expire_old_now": True}, headers=h)
    assert r.status_code == 200, r.text
    third = r.json()["secret"]
    assert parse_time(r.json()["previous_secret_expires_at"]) <= utcnow()
    nid = w.make_notice(lic)
    got = rcv.wait_for(2)[1]
    assert len(got.headers["webhook-signature"].split(" ")) == 1
    assert got.verify(third)["data"]["notice_id"] == nid
    for old in (first, second):
        with pytest.raises(WebhookVerificationError):
            got.verify(old)


def test_rotate_refuses_unknown_fields(worker: Any) -> None:
    w = worker()
    _, h = w.licensee()
    ep, _ = w.register(h, "http://127.0.0.1:9/hook")
    r = w.client.post(f"/v1/endpoints/{ep}/rotate-secret", json={"expire_old": True}, headers=h)
    assert_problem(r, 422, "body.expire_old")
    r = w.client.post(f"/v1/endpoints/{ep}/rotate-secret", json={"expire_old_now": "soon"}, headers=h)
    assert_problem(r, 422, "body.expire_old_now")


def test_deleted_endpoint_gets_nothing_more(worker: Any, receiver: Any) -> None:
    w = worker()
    rcv: Receiver = receiver(lambda n, req: 500)
    lic, h = w.licensee()
    ep, _ = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    rcv.wait_for(1)
    assert w.client.delete(f"/v1/endpoints/{ep}", headers=h).status_code == 204
    assert w.client.get(f"/v1/endpoints/{ep}", headers=h).status_code == 404
    barrier(w, receiver, rounds=1)
    n = rcv.count()
    # A second notice, made after the deletion, has nowhere to go; a new endpoint receives both.
    nid2 = w.make_notice(lic)
    other = receiver()
    _, secret = w.register(h, other.url)
    got = other.wait_for(2)
    assert {r.verify(secret)["data"]["notice_id"] for r in got} == {nid, nid2}
    barrier(w, receiver)
    assert rcv.count() == n  # nothing more to the deleted endpoint


def test_endpoint_failing_too_long_is_disabled(worker: Any, receiver: Any) -> None:
    w = worker(worker_disable_after_seconds=0.2)
    rcv = receiver(lambda n, req: 500)
    lic, h = w.licensee()
    ep, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    endpoint = w.wait_endpoint(h, ep, "disabled")
    assert "failing" in endpoint["disabled_reason"] and endpoint["failing_since"]
    for r in rcv.wait_for(2):
        r.verify(secret)
    assert ep in {
        e["id"] for e in walk(w.client, "/v1/operator/endpoints", w.operator, 100, status="disabled")
    }
    assert "endpoint_disabled" in event_types(w, lic)
    metrics = w.client.get("/metrics").text
    assert 'rescind_endpoints_disabled_total{reason="failing"}' in metrics
    # Its notice stays visible to the licensee, with the reason, until it is fixed.
    d = w.notice(h, nid)["deliveries"][0]
    assert d["last_status_code"] == 500 and d["attempts"] >= 2


def test_retry_after_is_capped(worker: Any, receiver: Any) -> None:
    w = worker(worker_max_retry_after_seconds=60)
    rcv = receiver(lambda n, req: (503, {"Retry-After": str(10**9)}))
    lic, h = w.licensee()
    w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    d = wait_until(
        lambda: (x := w.notice(h, nid)["deliveries"][0])["attempts"] >= 1 and x, what="the first attempt"
    )
    gap = (parse_time(d["next_attempt_at"]) - parse_time(d["last_attempt_at"])).total_seconds()
    assert 60 <= gap < 120, d


def test_dead_letter_backlog_is_paginated(worker: Any, receiver: Any) -> None:
    """An operator can walk the whole dead-letter backlog, not only its first page."""
    w = worker(worker_retry_window_seconds=0.2)
    rcv = receiver(lambda n, req: 503)
    lic, h = w.licensee()
    w.register(h, rcv.url)
    notices = [w.make_notice(lic, models=[]) for _ in range(3)]
    w.deliver()
    for nid in notices:
        w.wait_status(h, nid, "failed")
    seen = walk(w.client, "/v1/operator/dead-letters", w.operator, 2, licensee_id=lic)
    assert sorted(d["notice_id"] for d in seen) == sorted(notices)
    first = w.client.get("/v1/operator/dead-letters", params={"licensee_id": lic}, headers=w.operator).json()
    assert first["total"] == 3  # of this licensee's backlog
    bad = base64.urlsafe_b64encode(b"ntc_1").decode()
    assert_problem(
        w.client.get("/v1/operator/dead-letters", params={"cursor": bad}, headers=w.operator),
        400,
        "query.cursor",
    )
    r = w.client.post("/v1/operator/dead-letters/redrive", json={"licensee_id": lic}, headers=w.operator)
    assert r.json() == {"redriven": 3}


def test_licensee_redeliver_after_failure(worker: Any, receiver: Any) -> None:
    w = worker(worker_retry_window_seconds=0.3, worker_redeliver_interval_seconds=0)
    down = True
    rcv = receiver(lambda n, req: 502 if down else 200)
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    w.wait_status(h, nid, "failed")
    down = False
    r = w.client.post(f"/v1/notices/{nid}/redeliver", headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending"
    w.wait_status(h, nid, "delivered")
    got = rcv.wait_for(2)
    assert {x.webhook_id for x in got} == {f"msg_{nid}"}
    assert got[-1].verify(secret)["data"]["notice_id"] == nid


def test_redeliver_does_not_skip_the_backoff(worker: Any, receiver: Any) -> None:
    """A delivery waiting out its backoff keeps its schedule and its attempt count: looping
    redeliver cannot turn a failing endpoint's retries into a flood."""
    w = worker(worker_retry_schedule_seconds=[0.0, 3600.0])
    rcv = receiver(lambda n, req: 500)
    lic, h = w.licensee()
    w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    (before,) = wait_until(
        lambda: [d for d in w.notice(h, nid)["deliveries"] if d["attempts"] == 1] or None,
        what="the first failed attempt",
    )
    assert parse_time(before["next_attempt_at"]) - utcnow() > dt.timedelta(minutes=50)
    for _ in range(3):
        r = w.client.post(f"/v1/notices/{nid}/redeliver", headers=h)
        assert r.status_code == 202, r.text
        (after,) = r.json()["deliveries"]
        assert (after["attempts"], after["next_attempt_at"]) == (1, before["next_attempt_at"]), after
    barrier(w, receiver)  # the loop went round: anything due would have been sent
    assert rcv.count() == 1
    assert w.notice(h, nid)["deliveries"][0]["attempts"] == 1


def test_redeliver_of_a_delivered_notice_waits_the_interval(worker: Any, receiver: Any) -> None:
    """A finished delivery is sent again at most once per interval after its last attempt."""
    w = worker()  # the default interval: a minute
    rcv = receiver()
    lic, h = w.licensee()
    w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    w.wait_status(h, nid, "delivered")
    (done,) = w.notice(h, nid)["deliveries"]
    r = w.client.post(f"/v1/notices/{nid}/redeliver", headers=h)
    assert r.status_code == 202, r.text
    (again,) = r.json()["deliveries"]
    assert again["status"] == "pending" and again["attempts"] == 1, again
    due = parse_time(again["next_attempt_at"])
    assert due - parse_time(done["last_attempt_at"]) >= dt.timedelta(seconds=60), (done, again)
    barrier(w, receiver)
    assert rcv.count() == 1
    assert w.notice(h, nid)["status"] == "delivered"


def test_redeliver_is_rate_limited_per_licensee(worker: Any) -> None:
    w = worker(worker_redeliver_burst=2, worker_redeliver_per_minute=1)
    lic, h = w.licensee()
    w.register(h, "http://127.0.0.1:9/hook")
    nid = w.make_notice(lic)
    for _ in range(2):
        assert w.client.post(f"/v1/notices/{nid}/redeliver", headers=h).status_code == 202
    r = w.client.post(f"/v1/notices/{nid}/redeliver", headers=h)
    body = assert_problem(r, 429)
    assert body["type"].endswith("/redeliver-rate-limited"), body
    assert 1 <= int(r.headers["retry-after"]) <= 60, r.headers
    # Another licensee's redeliveries are its own.
    other, oh = w.licensee()
    w.register(oh, "http://127.0.0.1:9/hook")
    theirs = w.make_notice(other)
    assert w.client.post(f"/v1/notices/{theirs}/redeliver", headers=oh).status_code == 202
