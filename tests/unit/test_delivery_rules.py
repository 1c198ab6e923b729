"""The delivery rules as a buyer relies on them, tested as plain values: no database, no broker,
no receiver (`revocation_worker.delivery.rules`)."""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
from collections.abc import Mapping, Sequence

from revocation_worker.delivery.rules import (
    Caps,
    Delivery,
    Due,
    Endpoint,
    InFlight,
    Notice,
    NoticeDelivered,
    NoticeFailed,
    Outcome,
    Policy,
    Recorded,
    Uniform,
    backoff,
    choose,
    host_key,
    record,
    redeliver_at,
    retry_after,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
HOUR = 3600.0
POLICY = Policy(
    retry_schedule=(0.0, 10.0, 60.0, 600.0),
    retry_jitter=0.2,
    retry_window=72 * HOUR,
    max_retry_after=HOUR,
    disable_after=5 * 24 * HOUR,
)


def no_jitter(low: float, high: float) -> float:
    return 0.0


def delivery(
    id: int = 1,
    *,
    notice: str = "ntc_1",
    endpoint: str = "ep_1",
    attempts: int = 0,
    first: dt.datetime | None = None,
) -> Delivery:
    return Delivery(id, notice, endpoint, "pending", attempts, first, NOW, None)


def endpoint(
    *, failing_since: dt.datetime | None = None, status: str = "active", id: str = "ep_1"
) -> Endpoint:
    return Endpoint(id, status, failing_since, None)


def notice(id: str = "ntc_1", *, status: str = "pending") -> Notice:
    return Notice(id, "lic_1", "rev_1", "sub_1", status, None, NOW - dt.timedelta(seconds=30))


def run(
    outcomes: Sequence[tuple[int, Outcome]],
    deliveries: Sequence[Delivery] = (),
    endpoints: Sequence[Endpoint] = (),
    notices: Sequence[Notice] = (),
    *,
    stored: Mapping[str, Mapping[int, str]] | None = None,
    policy: Policy = POLICY,
    uniform: Uniform = no_jitter,
) -> Recorded:
    ds = list(deliveries) or [delivery()]
    return record(
        outcomes,
        {d.id: d for d in ds},
        {e.id: e for e in (list(endpoints) or [endpoint()])},
        {n.id: n for n in (list(notices) or [notice()])},
        policy,
        NOW,
        statuses_of=lambda nid: (stored or {}).get(nid, {d.id: d.status for d in ds if d.notice_id == nid}),
        uniform=uniform,
    )


def failed(code: int | None = 503, *, retry: float | None = None) -> Outcome:
    return Outcome(code, None if code else "timeout", 0.05, retry)


def test_a_2xx_delivers_the_delivery_its_notice_and_heals_the_endpoint() -> None:
    out = run(
        [(1, Outcome(204, None, 0.12))], endpoints=[endpoint(failing_since=NOW - dt.timedelta(hours=1))]
    )
    (d,) = out.deliveries
    assert (d.status, d.succeeded_at, d.attempts, d.first_attempt_at) == ("succeeded", NOW, 1, NOW)
    (e,) = out.endpoints
    assert (e.failing_since, e.last_success_at) == (None, NOW)
    (n,) = out.notices
    assert (n.status, n.delivered_at) == ("delivered", NOW)
    assert out.events == (NoticeDelivered(n, "ep_1", 1, 30.0, 204, NOW),)
    (a,) = out.attempts
    assert (a.delivery_id, a.status_code, a.duration_ms) == (1, 204, 120)


def test_only_2xx_is_success() -> None:
    for code in (301, 404, 500):
        (d,) = run([(1, Outcome(code, None, 0.01))]).deliveries
        assert d.status == "pending" and d.succeeded_at is None


def test_a_notice_is_delivered_once_even_when_several_deliveries_succeed() -> None:
    ds = [delivery(1, endpoint="ep_1"), delivery(2, endpoint="ep_2")]
    out = run(
        [(1, Outcome(200, None, 0.01)), (2, Outcome(200, None, 0.01))],
        ds,
        [endpoint(id="ep_1"), endpoint(id="ep_2")],
    )
    assert [type(e) for e in out.events] == [NoticeDelivered]
    assert [d.status for d in out.deliveries] == ["succeeded", "succeeded"]


def test_a_success_after_the_notice_failed_delivers_it_after_all() -> None:
    out = run([(1, Outcome(200, None, 0.01))], notices=[notice(status="failed")])
    (n,) = out.notices
    assert n.status == "delivered" and isinstance(out.events[0], NoticeDelivered)


def test_a_success_keeps_an_acknowledged_notice_acknowledged() -> None:
    out = run([(1, Outcome(200, None, 0.01))], notices=[notice(status="acknowledged")])
    (n,) = out.notices
    assert (n.status, n.delivered_at) == ("acknowledged", NOW)


def test_failures_follow_the_retry_schedule() -> None:
    for attempts, step in [(0, 10.0), (1, 60.0), (2, 600.0), (3, 600.0), (9, 600.0)]:
        first = NOW - dt.timedelta(minutes=5) if attempts else None
        (d,) = run([(1, failed())], [delivery(attempts=attempts, first=first)]).deliveries
        assert d.attempts == attempts + 1 and d.status == "pending"
        assert d.next_attempt_at == NOW + dt.timedelta(seconds=step)
        assert (d.last_status_code, d.last_attempt_at) == (503, NOW)


def test_jitter_stays_within_its_bounds() -> None:
    assert backoff(1, [0.0, 10.0], 0.2, lambda lo, hi: lo) == 8.0
    assert backoff(1, [0.0, 10.0], 0.2, lambda lo, hi: hi) == 12.0
    for _ in range(500):  # the real random source
        assert 8.0 <= backoff(1, [0.0, 10.0], 0.2) <= 12.0
    assert backoff(0, [0.0, 10.0], 0.2) == 0.0
    assert backoff(1, [5.0], 1.0, lambda lo, hi: lo) == 0.0  # never negative


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert retry_after({"Retry-After": "120"}, NOW) == 120.0
    assert retry_after({"retry-after": "-5"}, NOW) == 0.0
    date = email.utils.format_datetime(NOW + dt.timedelta(minutes=10), usegmt=True)
    assert retry_after({"Retry-After": date}, NOW) == 600.0
    past = email.utils.format_datetime(NOW - dt.timedelta(minutes=10), usegmt=True)
    assert retry_after({"Retry-After": past}, NOW) == 0.0
    assert retry_after({"Retry-After": "soon"}, NOW) is None
    assert retry_after({}, NOW) is None


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    (d,) = run([(1, failed(429, retry=300.0))]).deliveries
    assert d.next_attempt_at == NOW + dt.timedelta(seconds=300)
    # Shorter than the schedule's step: the step wins.
    (d,) = run([(1, failed(429, retry=1.0))]).deliveries
    assert d.next_attempt_at == NOW + dt.timedelta(seconds=10)
    # Longer than the cap: the cap.
    (d,) = run([(1, failed(503, retry=10 * HOUR))]).deliveries
    assert d.next_attempt_at == NOW + dt.timedelta(seconds=HOUR)


def test_a_retry_that_would_pass_the_window_is_held_to_its_end_and_only_a_failure_there_is_dead() -> None:
    first = NOW - dt.timedelta(seconds=72 * HOUR - 700)
    (d,) = run([(1, failed())], [delivery(attempts=5, first=first)]).deliveries
    assert d.status == "pending" and d.next_attempt_at == NOW + dt.timedelta(seconds=600)  # fits
    first = NOW - dt.timedelta(seconds=72 * HOUR - 500)
    out = run([(1, failed())], [delivery(attempts=5, first=first)])
    (d,) = out.deliveries
    # 600 s more would pass the window: the last retry is made when the window closes.
    assert d.status == "pending" and d.next_attempt_at == first + dt.timedelta(seconds=72 * HOUR)
    assert out.dead == ()
    # That last attempt fails at (or after) the end: now the delivery is dead.
    first = NOW - dt.timedelta(seconds=72 * HOUR)
    out = run([(1, failed())], [delivery(attempts=6, first=first)])
    (d,) = out.deliveries
    assert d.status == "dead" and d.attempts == 7
    assert [x.endpoint_disabled for x in out.dead] == [False]


def test_410_gone_disables_the_endpoint_at_once_and_its_delivery_is_dead() -> None:
    out = run([(1, failed(410))])
    (disabled,) = out.disabled
    assert (disabled.endpoint_id, disabled.label) == ("ep_1", "gone")
    assert "410" in disabled.reason
    (d,) = out.deliveries
    assert d.status == "dead" and out.dead[0].endpoint_disabled


def test_an_endpoint_failing_without_success_for_disable_after_is_disabled() -> None:
    recent = endpoint(failing_since=NOW - dt.timedelta(days=4))
    assert run([(1, failed())], endpoints=[recent]).disabled == ()
    long_ago = endpoint(failing_since=NOW - dt.timedelta(days=5, seconds=1))
    (disabled,) = run([(1, failed())], endpoints=[long_ago]).disabled
    assert disabled.label == "failing"


def test_a_first_failure_marks_the_endpoint_failing_since_now() -> None:
    (e,) = run([(1, failed())]).endpoints
    assert (e.failing_since, e.status) == (NOW, "active")
    # Already failing: nothing to write.
    assert (
        run([(1, failed())], endpoints=[endpoint(failing_since=NOW - dt.timedelta(hours=1))]).endpoints == ()
    )


def test_a_failure_to_an_already_disabled_endpoint_is_dead_at_once() -> None:
    out = run([(1, failed())], endpoints=[endpoint(status="disabled", failing_since=NOW)])
    assert out.deliveries[0].status == "dead" and out.disabled == ()


def test_an_endpoint_disabled_earlier_in_the_pass_kills_the_next_failure_to_it() -> None:
    ds = [delivery(1, notice="ntc_1"), delivery(2, notice="ntc_2")]
    out = run([(1, failed(410)), (2, failed(503))], ds, notices=[notice("ntc_1"), notice("ntc_2")])
    assert [d.status for d in out.deliveries] == ["dead", "dead"]
    assert len(out.disabled) == 1


def test_a_notice_whose_deliveries_can_no_longer_succeed_fails() -> None:
    out = run([(1, failed(410))])
    (n,) = out.notices
    assert n.status == "failed"
    assert out.events == (NoticeFailed(n, "undeliverable: 410"),)


def test_a_notice_with_another_delivery_still_pending_does_not_fail() -> None:
    ds = [delivery(1, endpoint="ep_1"), delivery(2, endpoint="ep_2")]
    out = run([(1, failed(410))], ds, [endpoint(id="ep_1"), endpoint(id="ep_2")])
    assert out.notices == () and out.events == ()
    # The other one stored as dead (or cancelled): nothing can reach the licensee any more.
    out = run(
        [(1, Outcome(None, "timeout", 30.0))],
        ds,
        [endpoint(id="ep_1", status="disabled"), endpoint(id="ep_2")],
        stored={"ntc_1": {1: "pending", 2: "cancelled"}},
    )
    assert out.events == (NoticeFailed(out.notices[0], "undeliverable: timeout"),)


def test_both_deliveries_of_a_notice_dying_in_one_pass_fail_it_once() -> None:
    ds = [delivery(1, endpoint="ep_1"), delivery(2, endpoint="ep_2")]
    out = run([(1, failed(410)), (2, failed(410))], ds, [endpoint(id="ep_1"), endpoint(id="ep_2")])
    assert [type(e) for e in out.events] == [NoticeFailed]
    assert [d.status for d in out.deliveries] == ["dead", "dead"]


def test_a_failure_of_a_delivery_no_longer_pending_only_records_the_attempt() -> None:
    acked = Delivery(1, "ntc_1", "ep_1", "cancelled", 2, NOW, NOW, None)
    out = run([(1, failed(410))], [acked])
    (d,) = out.deliveries
    assert (d.status, d.attempts, d.last_status_code) == ("cancelled", 3, 410)
    assert out.disabled == () and out.events == () and len(out.attempts) == 1


def test_an_outcome_of_a_delivery_gone_meanwhile_is_skipped() -> None:
    out = run([(99, failed())])
    assert out.deliveries == () and out.attempts == ()


def test_redeliver_keeps_a_retrying_delivery_on_its_backoff() -> None:
    for last in (None, NOW - dt.timedelta(hours=5)):
        assert redeliver_at("pending", last, NOW, 60.0) is None


def test_redeliver_of_a_finished_delivery_is_at_most_once_per_interval() -> None:
    minute = dt.timedelta(seconds=60)
    for status in ("succeeded", "dead", "cancelled"):
        assert (
            redeliver_at(status, NOW - dt.timedelta(seconds=10), NOW, 60.0)
            == NOW - dt.timedelta(seconds=10) + minute
        )
        assert redeliver_at(status, NOW - dt.timedelta(hours=2), NOW, 60.0) == NOW
        assert redeliver_at(status, None, NOW, 60.0) == NOW
    assert redeliver_at("dead", NOW - dt.timedelta(seconds=10), NOW, 0.0) == NOW


# -- claiming: which due deliveries a claim takes --------------------------------------------------


def due(i: int, endpoint: str, licensee: str, host: str = "h:443") -> Due:
    return Due(i, endpoint, licensee, host)


def test_a_full_licensee_is_skipped_and_the_next_licensee_taken() -> None:
    caps = Caps(total=10, endpoint=5, licensee=2, host=100)
    inflight = InFlight()
    inflight.add("a1", "A", "h:443")
    rows = [due(1, "a1", "A"), due(2, "a2", "A"), due(3, "a3", "A"), due(4, "b1", "B"), due(5, "b1", "B")]
    assert [d.id for d in choose(rows, inflight, caps)] == [1, 4, 5]


def test_the_host_cap_counts_every_licensees_endpoints_at_that_host() -> None:
    caps = Caps(total=10, endpoint=5, licensee=5, host=2)
    rows = [due(1, "a1", "A", "victim:443"), due(2, "c1", "C", "victim:443"), due(3, "d1", "D", "victim:443")]
    rows.append(due(4, "b1", "B", "other:443"))
    assert [d.id for d in choose(rows, InFlight(), caps)] == [1, 2, 4]


def test_no_more_than_the_room_left_nor_the_endpoint_cap() -> None:
    caps = Caps(total=3, endpoint=1, licensee=5, host=5)
    inflight = InFlight()
    inflight.add("x", "X", "x:443")
    rows = [due(1, "a1", "A"), due(2, "a1", "A"), due(3, "b1", "B"), due(4, "c1", "C")]
    assert [d.id for d in choose(rows, inflight, caps)] == [1, 3]
    inflight.remove("x", "X", "x:443")
    assert inflight.total == 0 and not inflight.licensees and not inflight.hosts


def test_host_keys_are_host_and_port() -> None:
    assert (
        host_key("https://Example.COM/hook") == host_key("https://example.com:443/other") == "example.com:443"
    )
    assert host_key("http://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert host_key("https://bücher.de/x") == "xn--bcher-kva.de:443"
    assert host_key("https://example.com:8443/") != host_key("https://example.com/")


def _until_dead(policy: Policy, uniform: Uniform) -> list[dt.datetime]:
    """The attempt times of a delivery that always fails, from its first attempt to its death."""
    d = Delivery(1, "ntc_1", "ep_1", "pending", 0, None, NOW, None)
    times: list[dt.datetime] = []
    for _ in range(1000):
        at = d.next_attempt_at
        times.append(at)
        out = record(
            [(1, Outcome(503, None, 0.01))],
            {1: d},
            {"ep_1": Endpoint("ep_1", "active", None, None)},
            {"ntc_1": notice()},
            policy,
            at,
            statuses_of=lambda _: {1: "pending"},
            uniform=uniform,
        )
        (d,) = out.deliveries
        if d.status == "dead":
            return times
    raise AssertionError("never dead")


def test_the_default_schedule_with_real_jitter_retries_for_at_least_72_hours() -> None:
    """The contract: a delivery is dead only after >= 72 h of retries from its first attempt, with
    the default schedule and its real (random) jitter, not a zeroed one."""
    import random

    from revocation_worker.config import DEFAULT_RETRY_SCHEDULE, WorkerSettings

    policy = Policy.of(WorkerSettings())
    assert policy.retry_jitter > 0 and policy.retry_window == 72 * HOUR
    schedule = DEFAULT_RETRY_SCHEDULE
    spreads: set[float] = set()
    for _ in range(50):
        times = _until_dead(policy, random.uniform)
        span = (times[-1] - times[0]).total_seconds()
        assert span >= 72 * HOUR, span / HOUR
        assert span <= 72 * HOUR + 1  # the last attempt is the window's end, not a step past it
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        # Every step but the held last one is its schedule step spread by at most +/- 20 %.
        for i, gap in enumerate(gaps[:-1], start=1):
            base = schedule[min(i, len(schedule) - 1)]
            assert base * 0.8 - 1e-6 <= gap <= base * 1.2 + 1e-6, (i, gap, base)
        spreads.add(round(gaps[3], 3))
    assert len(spreads) > 40  # the jitter is real: the same step differs from run to run


def test_without_holding_the_last_retry_the_default_schedule_would_stop_short_of_72_hours() -> None:
    """What the held retry fixes: the schedule's own steps end at about 67.6 h."""
    from revocation_worker.config import DEFAULT_RETRY_SCHEDULE

    at, steps = 0.0, []
    for i in range(1, 100):
        nxt = at + DEFAULT_RETRY_SCHEDULE[min(i, len(DEFAULT_RETRY_SCHEDULE) - 1)]
        if nxt > 72 * HOUR:
            break
        at = nxt
        steps.append(at)
    assert steps[-1] < 68 * HOUR
    policy = Policy(tuple(DEFAULT_RETRY_SCHEDULE), 0.0, 72 * HOUR, HOUR, 5 * 24 * HOUR)
    times = _until_dead(policy, no_jitter)
    assert (times[-1] - times[0]).total_seconds() == 72 * HOUR
    assert (times[-2] - times[0]).total_seconds() == steps[-1]
