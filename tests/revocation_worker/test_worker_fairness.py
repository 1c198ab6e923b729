"""Delivery fairness as other licensees and third parties see it: one licensee's storm (many
endpoints, many notices, receivers that hang) never delays another licensee's first delivery, and
many endpoints aimed at one host never open more connections to it than the per-host limit.

Real local receivers hang until released: what is in flight stays in flight for the whole test,
so the counts asserted (requests at once, requests received) are causal, not timing guesses.
"""

from __future__ import annotations

from typing import Any

import pytest

from revocation_worker.config import WorkerSettings

from support.wait import wait_until

# Hung requests stay in flight for the whole test.
SLOW: dict[str, Any] = {"worker_delivery_timeout_seconds": 30}


def test_a_licensees_storm_never_delays_another_licensees_first_delivery(worker: Any, receiver: Any) -> None:
    # Eight slots in all, at most four for one licensee: A's ten endpoints (two deliveries each at
    # once) could hold every slot but for the per-licensee cap.
    w = worker(
        **SLOW, worker_delivery_concurrency=8, worker_licensee_concurrency=4, worker_endpoint_concurrency=2
    )
    storm = receiver(lambda n, req: "hang")
    fast = receiver()
    a, ha = w.licensee()
    for i in range(10):
        w.register(ha, f"{storm.url}/{i}")
    a_notices = [w.make_notice(a) for _ in range(20)]  # 200 deliveries
    w.deliver()
    wait_until(lambda: storm.hanging >= 4, what="A's storm to hold its share of the slots")

    b, hb = w.licensee()
    _, secret = w.register(hb, fast.url)
    b_notice = w.make_notice(b)
    (got,) = fast.wait_for(1)
    assert got.verify(secret)["data"]["notice_id"] == b_notice
    w.wait_status(hb, b_notice, "delivered")
    # ... while A's storm is still in flight: its four hung requests, nothing more sent to it.
    assert storm.hanging == 4 and storm.completed == 0 and storm.count() == 4
    assert all(w.notice(ha, n)["status"] == "pending" for n in a_notices)

    # Once A's receivers answer, its backlog drains within its share.
    storm.release.set()
    for n in a_notices:
        w.wait_status(ha, n, "delivered")
    assert storm.peak == 4


def test_a_storm_of_failures_retried_at_once_never_starves_another_licensee(
    worker: Any, receiver: Any
) -> None:
    """A's ten endpoints answer 500 at once and are retried at once: A's deliveries are due again
    as soon as they are recorded, for the whole test. B's first delivery still goes out, and A
    never has more than its share in flight."""
    w = worker(
        worker_retry_schedule_seconds=[0.0],
        worker_delivery_concurrency=8,
        worker_licensee_concurrency=4,
        worker_endpoint_concurrency=2,
    )
    storm = receiver(lambda n, req: 500)
    fast = receiver()
    a, ha = w.licensee()
    for i in range(10):
        w.register(ha, f"{storm.url}/{i}")
    a_notices = [w.make_notice(a) for _ in range(10)]
    w.deliver()
    wait_until(lambda: storm.count() >= 100, what="A's storm of failing attempts")

    b, hb = w.licensee()
    _, secret = w.register(hb, fast.url)
    b_notice = w.make_notice(b)
    (got,) = fast.wait_for(1)
    assert got.verify(secret)["data"]["notice_id"] == b_notice
    seen = storm.count()
    wait_until(lambda: storm.count() > seen, what="A's storm to go on")  # it was never paused
    assert all(w.notice(ha, n)["status"] == "pending" for n in a_notices)
    assert storm.peak <= 4


def test_a_licensees_first_delivery_is_claimed_before_anothers_backlog(worker: Any, receiver: Any) -> None:
    """A's backlog of due deliveries (many endpoints, many notices) is older than B's one
    delivery, yet B's is in the first claim: claims go round-robin over licensees."""
    w = worker(
        **SLOW, worker_delivery_concurrency=3, worker_licensee_concurrency=2, worker_endpoint_concurrency=2
    )
    storm = receiver(lambda n, req: "hang")
    fast = receiver()
    a, ha = w.licensee()
    b, hb = w.licensee()
    for i in range(10):
        w.register(ha, f"{storm.url}/{i}")
    _, secret = w.register(hb, fast.url)
    for _ in range(5):
        w.make_notice(a)  # 50 deliveries, due before B's
    b_notice = w.make_notice(b)
    w.deliver()
    (got,) = fast.wait_for(1)
    assert got.verify(secret)["data"]["notice_id"] == b_notice
    wait_until(lambda: storm.hanging >= 2, what="A's share of the slots")
    assert storm.count() == 2


def test_many_endpoints_at_one_host_stay_within_the_per_host_limit(worker: Any, receiver: Any) -> None:
    """Two licensees' six endpoints at one host could have twelve requests in flight there; the
    host gets three at once, and deliveries to other hosts go on meanwhile."""
    w = worker(**SLOW, worker_host_concurrency=3, worker_endpoint_concurrency=2)
    victim = receiver(lambda n, req: "hang")
    elsewhere = receiver()
    a, ha = w.licensee()
    c, hc = w.licensee()
    for i in range(3):
        w.register(ha, f"{victim.url}/a{i}")
        w.register(hc, f"{victim.url}/c{i}")
    notices = [(ha, w.make_notice(a)) for _ in range(5)] + [(hc, w.make_notice(c)) for _ in range(5)]
    w.deliver()
    wait_until(lambda: victim.hanging >= 3, what="three requests at the host")

    b, hb = w.licensee()
    _, secret = w.register(hb, elsewhere.url)
    b_notice = w.make_notice(b)
    (got,) = elsewhere.wait_for(1)
    assert got.verify(secret)["data"]["notice_id"] == b_notice
    w.wait_status(hb, b_notice, "delivered")
    assert victim.hanging == 3 and victim.count() == 3

    victim.release.set()
    for h, n in notices:
        w.wait_status(h, n, "delivered")
    victim.wait_for(30)  # every notice to each of its licensee's three endpoints
    assert victim.peak == 3


def test_one_licensee_may_not_hold_every_delivery_slot() -> None:
    WorkerSettings(worker_delivery_concurrency=10, worker_licensee_concurrency=9)
    with pytest.raises(ValueError, match="RESCIND_WORKER_LICENSEE_CONCURRENCY"):
        WorkerSettings(worker_delivery_concurrency=10, worker_licensee_concurrency=10)
