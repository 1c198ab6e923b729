"""revocation-worker: outcomes recorded in batches, as buyers and operators see them.

Many deliveries to several endpoints (one answering 500, one 410, one 200) finished together are
recorded in one transaction and leave each delivery, notice and endpoint exactly as recording them
one by one would; a worker killed between a POST and its record redelivers with the same
webhook-id once the lease runs out."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, update

from rescind_cli.processes import Launcher, stack_env
from rescind_common.db import utcnow
from revocation_worker.delivery.client import make_session
from revocation_worker.delivery.loop import Deliverer, Job, Outcome
from revocation_worker.notices.models import Delivery

from support.wait import wait_until
from support.worker import outbox_events


def claim_send_record(w: Any) -> tuple[list[Job], list[Outcome], int]:
    """Claim everything due, POST it all, then record every outcome in ONE `record_many` call;
    returns the jobs, their outcomes and how many transactions the recording committed."""
    deliverer = Deliverer(w.ctx)
    jobs = deliverer.claim()

    async def send_all() -> list[Outcome]:
        async with make_session(w.ctx.policy, concurrency=100, timeout=5) as http:
            return list(await asyncio.gather(*(deliverer.send(http, j) for j in jobs)))

    outcomes = asyncio.run(send_all())
    commits = 0

    def count(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(w.ctx.engine, "commit", count)
    try:
        deliverer.record_many(list(zip(jobs, outcomes, strict=True)))
    finally:
        event.remove(w.ctx.engine, "commit", count)
    return jobs, outcomes, commits


def events(w: Any, licensee_id: str, kind: str) -> list[Any]:
    return [ev for row, ev in outbox_events(w.ctx, licensee_id) if row.event_type == kind]


def test_500_410_and_200_recorded_in_one_pass(worker: Any, receiver: Any) -> None:
    w = worker()
    failing, gone, fine = receiver(lambda n, r: 500), receiver(lambda n, r: 410), receiver(lambda n, r: 200)
    parties = {}
    for name, rcv in (("failing", failing), ("gone", gone), ("fine", fine)):
        lic, h = w.licensee()
        ep, secret = w.register(h, rcv.url)
        parties[name] = (lic, h, ep, secret, [w.make_notice(lic) for _ in range(4)])

    jobs, outcomes, commits = claim_send_record(w)
    assert len(jobs) == 12
    assert sorted(o.status_code or 0 for o in outcomes) == [200] * 4 + [410] * 4 + [500] * 4
    assert commits == 1  # every outcome in one transaction

    # 200: every notice delivered, once, with one NoticeDelivered each.
    lic, h, ep, secret, nids = parties["fine"]
    for nid in nids:
        notice = w.notice(h, nid)
        assert notice["status"] == "delivered" and notice["delivered_at"]
        (d,) = notice["deliveries"]
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("succeeded", 1, 200)
        assert [a.status_code for a in w.attempts(nid)] == [200]
    delivered = events(w, lic, "notice_delivered")
    assert sorted(e.notice_id for e in delivered) == sorted(nids)
    assert all(e.notice_delivered.attempts == 1 and e.notice_delivered.endpoint_id == ep for e in delivered)
    endpoint = w.client.get(f"/v1/endpoints/{ep}", headers=h).json()
    assert (
        endpoint["status"] == "active" and endpoint["last_success_at"] and endpoint["failing_since"] is None
    )
    for r in fine.wait_for(4):
        r.verify(secret)

    # 500: every delivery stays pending with one attempt and a retry scheduled; no delivery event.
    lic, h, ep, _, nids = parties["failing"]
    now = utcnow()
    for nid in nids:
        notice = w.notice(h, nid)
        assert notice["status"] == "pending" and notice["delivered_at"] is None
        (d,) = notice["deliveries"]
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("pending", 1, 500)
        assert d["next_attempt_at"] is not None
        assert [a.status_code for a in w.attempts(nid)] == [500]
    assert events(w, lic, "notice_delivered") == [] and events(w, lic, "notice_failed") == []
    endpoint = w.client.get(f"/v1/endpoints/{ep}", headers=h).json()
    assert endpoint["status"] == "active" and endpoint["failing_since"]
    with w.ctx.session_factory() as session:
        for nid in nids:
            (row,) = session.scalars(select(Delivery).where(Delivery.notice_id == nid)).all()
            assert row.lease_until is None and row.lease_owner is None  # the lease is cleared
            assert row.last_attempt_at is not None and row.next_attempt_at > row.last_attempt_at

    # 410: the endpoint is disabled once (one EndpointDisabled, though four deliveries saw 410);
    # nothing claims a disabled endpoint, so its deliveries are dead-lettered in the same pass and
    # its notices fail, once each (a future or re-enabled endpoint still receives them).
    lic, h, ep, _, nids = parties["gone"]
    endpoint = w.client.get(f"/v1/endpoints/{ep}", headers=h).json()
    assert endpoint["status"] == "disabled" and "410" in endpoint["disabled_reason"]
    disabled = events(w, lic, "endpoint_disabled")
    assert len(disabled) == 1 and disabled[0].endpoint_disabled.endpoint_id == ep
    for nid in nids:
        notice = w.notice(h, nid)
        assert notice["status"] == "failed"
        (d,) = notice["deliveries"]
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("dead", 1, 410)
    assert sorted(e.notice_id for e in events(w, lic, "notice_failed")) == sorted(nids)

    # Nothing is left leased: the next claim picks the 500s again once they are due (not the
    # disabled endpoint's, not the delivered ones).
    wait_until(lambda: utcnow() > now + dt.timedelta(seconds=0.2), what="the retry")
    again, outcomes, _ = claim_send_record(w)
    assert sorted(j.notice_id for j in again) == sorted(parties["failing"][4])
    assert {o.status_code for o in outcomes} == {500}
    for nid in parties["failing"][4]:
        assert w.notice(parties["failing"][1], nid)["deliveries"][0]["attempts"] == 2


def test_dead_deliveries_in_one_pass_fail_a_notice_once(worker: Any, receiver: Any) -> None:
    """A notice fails only when no delivery of it remains, even when all of them die in the same
    pass; a notice that one endpoint took is delivered, not failed."""
    # The first failure holds its retry to the end of the (tiny) window; the second, there, is dead.
    w = worker(worker_retry_window_seconds=0.01)
    down_a, down_b, up = receiver(lambda n, r: 503), receiver(lambda n, r: 500), receiver(lambda n, r: 200)
    lic_dead, h_dead = w.licensee()
    w.register(h_dead, down_a.url)
    w.register(h_dead, down_b.url)
    lic_mixed, h_mixed = w.licensee()
    w.register(h_mixed, down_a.url)
    w.register(h_mixed, up.url)
    dead_nids = [w.make_notice(lic_dead) for _ in range(3)]
    mixed_nids = [w.make_notice(lic_mixed) for _ in range(3)]

    jobs, _, commits = claim_send_record(w)
    assert len(jobs) == 12 and commits == 1
    assert all(w.notice(h_dead, nid)["status"] == "pending" for nid in dead_nids)
    assert events(w, lic_dead, "notice_failed") == []
    start = utcnow()
    wait_until(lambda: utcnow() > start + dt.timedelta(seconds=0.05), what="the window's end")
    jobs, _, commits = claim_send_record(w)
    assert len(jobs) == 9 and commits == 1  # the 503s and 500s again, not the delivered ones

    for nid in dead_nids:
        notice = w.notice(h_dead, nid)
        assert notice["status"] == "failed"
        assert sorted(d["status"] for d in notice["deliveries"]) == ["dead", "dead"]
    failed = events(w, lic_dead, "notice_failed")
    assert sorted(e.notice_id for e in failed) == sorted(dead_nids)  # exactly one each
    for nid in mixed_nids:
        notice = w.notice(h_mixed, nid)
        assert notice["status"] == "delivered"
        assert sorted(d["status"] for d in notice["deliveries"]) == ["dead", "succeeded"]
    assert events(w, lic_mixed, "notice_failed") == []
    assert sorted(e.notice_id for e in events(w, lic_mixed, "notice_delivered")) == sorted(mixed_nids)
    dead = w.client.get("/v1/operator/dead-letters", params={"licensee_id": lic_dead}, headers=w.operator)
    assert len(dead.json()["items"]) == 6


def test_record_one_outcome_still_works(worker: Any, receiver: Any) -> None:
    w = worker()
    rcv = receiver(lambda n, r: 200)
    lic, h = w.licensee()
    w.register(h, rcv.url)
    nid = w.make_notice(lic)
    deliverer = Deliverer(w.ctx)
    (job,) = deliverer.claim()
    deliverer.record(job, Outcome(204, None, 0.01))
    notice = w.notice(h, nid)
    assert notice["status"] == "delivered" and notice["deliveries"][0]["attempts"] == 1
    assert len(events(w, lic, "notice_delivered")) == 1


def test_worker_killed_between_post_and_record_redelivers_with_the_same_webhook_id(
    worker: Any, receiver: Any, worker_db_url: str, state_dir: Path, tmp_path: Path
) -> None:
    """`revocation-worker worker --role delivery` POSTs, then is SIGKILLed before the answer is
    recorded: once the lease runs out, the next worker sends the same webhook-id and body, and
    exactly one attempt (the one that was recorded) shows."""
    w = worker()
    rcv = receiver(lambda n, r: "hang" if n == 0 else 200)
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    proc, log = delivery_process(w, worker_db_url, state_dir, tmp_path)
    try:
        try:
            wait_until(lambda: rcv.hanging == 1 or proc.poll() is not None, 60, "the worker's POST")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker log: {log.read_text()[-3000:]}") from None
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    rcv.release.set()
    first = rcv.requests[0]
    assert first.webhook_id == f"msg_{nid}"
    notice = w.notice(h, nid)
    assert notice["status"] == "pending" and notice["deliveries"][0]["attempts"] == 0  # never recorded

    # The lease (minutes long) runs out; a test does not wait for it.
    with w.ctx.session_factory() as session, session.begin():
        session.execute(
            update(Delivery)
            .where(Delivery.notice_id == nid)
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )
    w.deliver()
    notice = w.wait_status(h, nid, "delivered")
    second = rcv.wait_for(2)[1]
    assert second.webhook_id == first.webhook_id == f"msg_{nid}"
    assert second.verify(secret) == first.verify(secret)  # the same body
    assert notice["deliveries"][0]["attempts"] == 1
    assert len(events(w, lic, "notice_delivered")) == 1


def delivery_process(
    w: Any, worker_db_url: str, state_dir: Path, log_dir: Path, **env: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """`revocation-worker worker --role delivery` on this test's database, as a process: it and
    its log."""
    full = {
        **os.environ,
        **stack_env({}, state=state_dir, db_urls={"worker": worker_db_url}),
        "RESCIND_WORKER_POLL_INTERVAL_SECONDS": "0.05",
        "RESCIND_WORKER_PUBLIC_URL": w.settings.worker_public_url,
        **env,
    }
    full.pop("RESCIND_METRICS_PORT", None)
    proc = Launcher(full, {}, log_dir=log_dir).start("worker-delivery")
    assert proc.log is not None
    return proc.popen, proc.log


def test_intake_role_wakes_a_delivery_process_at_once(
    worker: Any, receiver: Any, worker_db_url: str, state_dir: Path, tmp_path: Path
) -> None:
    """With the roles split, new notices reach the delivery process by NOTIFY, not by its
    fallback timer (set to a minute here)."""
    if not worker_db_url.startswith("postgresql"):
        return  # the delivery role polls on SQLite
    from revocation_worker.runner import Worker

    w = worker()
    rcv = receiver(lambda n, r: 200)
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    first = w.make_notice(lic)
    proc, log = delivery_process(w, worker_db_url, state_dir, tmp_path, RESCIND_WORKER_IDLE_WAKE_SECONDS="60")
    try:
        rcv.wait_for(1, timeout=60)  # claimed at start-up; it LISTENs from then on
        w.wait_status(h, first, "delivered")
        intake = Worker(w.ctx, consume=False, relay=False, role="intake")
        second = w.make_notice(lic)
        intake.wake_delivery()  # what the resolver does after making notices
        intake.join(0.1)
        got = rcv.wait_for(2, timeout=20)
        assert proc.poll() is None, log.read_text()
        assert got[1].webhook_id == f"msg_{second}"
        assert got[1].verify(secret)["data"]["notice_id"] == second
        w.wait_status(h, second, "delivered")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, log.read_text()
