"""What an attempt's outcome does to a delivery, its endpoint and its notice: the rules alone.

Also which due deliveries a claim takes (`choose`: fair per licensee, endpoint and destination
host). A function of values: the states read (locked) by the recorder, the outcomes, the retry policy,
the time, and a random source for the jitter. It returns the new states and the events to emit
as plain data; the loop reads, calls `record`, writes (delivery/loop.py). Nothing here touches a
database, a broker or the network.

- Only 2xx is success: the delivery succeeded, its endpoint is healthy again, and its notice is
  delivered the first time any of its deliveries succeeds (NoticeDelivered).
- A failure backs off along the retry schedule with jitter, honouring Retry-After (capped), within
  the retry window (counted from the first attempt): a retry that would fall past its end is held
  to the end itself, so the last attempt is made when the window closes, and only a failure at
  (or after) its end is dead. The contract's ">= 72 h of retries" holds whatever the schedule.
- A delivery is of a kind: the notice itself, its reminder or its overdue notice. Only the
  notice's own deliveries make it delivered or failed; a reminder's fate is its own.
- 410 Gone disables the endpoint at once; an endpoint failing with no success for `disable_after`
  is disabled. A disabled endpoint is never claimed again, so a failed delivery to it is dead now.
- A notice none of whose deliveries can still succeed (all dead or cancelled) turns `failed`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from revocation_worker.config import WorkerSettings

# (low, high) -> a number in [low, high]: `random.uniform`, or a fixed one in tests.
Uniform = Callable[[float, float], float]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one POST of a delivery came to."""

    status_code: int | None
    error: str | None
    duration: float
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    notice_id: str
    endpoint_id: str
    status: str
    attempts: int
    first_attempt_at: dt.datetime | None
    next_attempt_at: dt.datetime
    succeeded_at: dt.datetime | None
    last_attempt_at: dt.datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    # notice | reminder | overdue
    kind: str = "notice"


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    status: str
    failing_since: dt.datetime | None
    last_success_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Notice:
    id: str
    licensee_id: str
    revocation_id: str
    subject_id: str
    status: str
    delivered_at: dt.datetime | None
    revoked_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings the rules read."""

    retry_schedule: tuple[float, ...]
    retry_jitter: float
    retry_window: float
    max_retry_after: float
    disable_after: float

    @classmethod
    def of(cls, s: WorkerSettings) -> Policy:
        return cls(
            retry_schedule=tuple(s.worker_retry_schedule_seconds),
            retry_jitter=s.worker_retry_jitter,
            retry_window=s.worker_retry_window_seconds,
            max_retry_after=s.worker_max_retry_after_seconds,
            disable_after=s.worker_disable_after_seconds,
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """The attempt row to insert."""

    delivery_id: int
    at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class NoticeDelivered:
    notice: Notice
    endpoint_id: str
    attempts: int
    latency_seconds: float  # from the revocation to this success
    status_code: int = 0
    first_attempt_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class NoticeFailed:
    notice: Notice
    reason: str


@dataclass(frozen=True, slots=True)
class EndpointDisabled:
    endpoint_id: str
    reason: str
    label: str  # "gone" or "failing": the metric's label


@dataclass(frozen=True, slots=True)
class Dead:
    """A delivery that died in this pass (to a disabled endpoint, or out of its window)."""

    delivery: Delivery
    endpoint_disabled: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a recording pass writes and emits."""

    deliveries: tuple[Delivery, ...]  # every delivery recorded, in the order first recorded
    endpoints: tuple[Endpoint, ...]  # those whose health changed, in the order given
    notices: tuple[Notice, ...]  # those changed, in the order given
    attempts: tuple[Attempt, ...]
    events: tuple[NoticeDelivered | NoticeFailed, ...]
    disabled: tuple[EndpointDisabled, ...]
    dead: tuple[Dead, ...]


# -- claiming: which due deliveries a process takes, fairly --------------------------------------


def host_key(url: str) -> str:
    """The destination an endpoint's connections count against: host (IDNA, lower case) and port,
    as the HTTP client keys its per-host pool, so both limits count alike."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    with contextlib.suppress(UnicodeError):  # not a valid IDNA name (the guard refuses it): as written
        host = host.encode("idna").decode("ascii")
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port or (443 if parts.scheme.lower() == 'https' else 80)}"


@dataclass(frozen=True, slots=True)
class Due:
    """A due delivery a claim may lease; claims read them in their fair order (`claim_due`)."""

    id: int
    endpoint_id: str
    licensee_id: str
    host: str


@dataclass(frozen=True, slots=True)
class Caps:
    """Deliveries in flight at most: in all, per endpoint, per licensee, per destination host."""

    total: int
    endpoint: int
    licensee: int
    host: int

    @classmethod
    def of(cls, s: WorkerSettings) -> Caps:
        return cls(
            total=s.worker_delivery_concurrency,
            endpoint=s.worker_endpoint_concurrency,
            licensee=s.worker_licensee_concurrency,
            host=s.worker_host_concurrency,
        )


@dataclass
class InFlight:
    """What one process has in flight (leased, not yet recorded), per endpoint, licensee and host."""

    endpoints: Counter[str] = field(default_factory=Counter)
    licensees: Counter[str] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.endpoints.total()

    def add(self, endpoint_id: str, licensee_id: str, host: str) -> None:
        self.endpoints[endpoint_id] += 1
        self.licensees[licensee_id] += 1
        self.hosts[host] += 1

    def remove(self, endpoint_id: str, licensee_id: str, host: str) -> None:
        for counter, key in (
            (self.endpoints, endpoint_id),
            (self.licensees, licensee_id),
            (self.hosts, host),
        ):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]


def choose(due: Sequence[Due], inflight: InFlight, caps: Caps) -> list[Due]:
    """The due deliveries to lease, taken in the order given (round-robin over licensees, then over
    each licensee's endpoints) while every cap has room: one licensee, endpoint or host at its cap
    never holds back the others, whose deliveries come next in the order."""
    taken = InFlight(Counter(inflight.endpoints), Counter(inflight.licensees), Counter(inflight.hosts))
    room = caps.total - inflight.total
    out: list[Due] = []
    for d in due:
        if len(out) >= room:
            break
        if (
            taken.endpoints[d.endpoint_id] < caps.endpoint
            and taken.licensees[d.licensee_id] < caps.licensee
            and taken.hosts[d.host] < caps.host
        ):
            taken.add(d.endpoint_id, d.licensee_id, d.host)
            out.append(d)
    return out


# -- recording: what an attempt's outcome does ----------------------------------------------------


def backoff(
    failures: int, schedule: Sequence[float], jitter: float, uniform: Uniform = random.uniform
) -> float:
    """The delay before the next attempt after `failures` failures: the schedule's step (its last
    one past its end), spread by +/- `jitter` so that retries of one outage do not come together."""
    base = schedule[min(failures, len(schedule) - 1)]
    return max(0.0, base * (1 + uniform(-jitter, jitter)))


def retry_after(headers: Mapping[str, str], now: dt.datetime) -> float | None:
    """The seconds a Retry-After header asks for (delta-seconds or an HTTP-date), None without one."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _notice(n: Notice, status: str, delivered_at: dt.datetime | None) -> Notice:
    return Notice(n.id, n.licensee_id, n.revocation_id, n.subject_id, status, delivered_at, n.revoked_at)


def redeliver_at(
    status: str, last_attempt_at: dt.datetime | None, now: dt.datetime, interval: float
) -> dt.datetime | None:
    """When a licensee's redeliver sends this delivery again; None: it stays as it is.

    A pending delivery keeps the next attempt its backoff set (redeliver never brings a retry
    forward, nor resets the attempts the backoff counts). A finished one (succeeded, dead,
    cancelled) is due again at once, but never sooner than `interval` after its last attempt."""
    if status == "pending":
        return None
    if last_attempt_at is None:
        return now
    return max(now, last_attempt_at + dt.timedelta(seconds=interval))


def next_retry_at(first: dt.datetime, now: dt.datetime, delay: float, window: float) -> dt.datetime | None:
    """When a delivery that just failed (at `now`) is tried again, `delay` seconds on, but never past
    the end of its window (`window` seconds from `first`): a later retry is held to that end. None
    once the window is over: this failure, at or after its end, was the last attempt."""
    end = first + dt.timedelta(seconds=window)
    if now >= end:
        return None
    return min(now + dt.timedelta(seconds=delay), end)


def cannot_succeed(statuses: Sequence[str] | Mapping[int, str]) -> bool:
    """True when none of a notice's deliveries (these statuses) can still succeed."""
    values = statuses.values() if isinstance(statuses, Mapping) else statuses
    return all(st in ("dead", "cancelled") for st in values)


def record(
    batch: Sequence[tuple[int, Outcome]],
    deliveries: Mapping[int, Delivery],
    endpoints: Mapping[str, Endpoint],
    notices: Mapping[str, Notice],
    policy: Policy,
    now: dt.datetime,
    *,
    statuses_of: Callable[[str], Mapping[int, str]],
    uniform: Uniform = random.uniform,
) -> Recorded:
    """Apply each outcome in turn (a later one sees what an earlier one did: an endpoint it
    disabled, a notice it delivered). `statuses_of(notice_id)`: the stored status of each of that
    notice's deliveries (asked only when a delivery dies while its notice is pending). An outcome
    whose delivery is not in `deliveries` (gone) is skipped."""
    done: dict[int, Delivery] = {}
    ends = dict(endpoints)
    nots = dict(notices)
    ends_changed: set[str] = set()
    nots_changed: set[str] = set()
    attempts: list[Attempt] = []
    events: list[NoticeDelivered | NoticeFailed] = []
    disabled: list[EndpointDisabled] = []
    dead: list[Dead] = []
    for delivery_id, outcome in batch:
        d = done.get(delivery_id) or deliveries.get(delivery_id)
        if d is None:
            continue
        attempts.append(Attempt(d.id, now, outcome.status_code, outcome.error, int(outcome.duration * 1000)))
        count = d.attempts + 1
        first = d.first_attempt_at or now
        status, next_at, succeeded_at = d.status, d.next_attempt_at, d.succeeded_at
        died = to_disabled = False
        endpoint = ends.get(d.endpoint_id)
        notice = nots.get(d.notice_id)
        if outcome.ok:
            status, succeeded_at = "succeeded", now
            if endpoint is not None:
                ends[endpoint.id] = Endpoint(endpoint.id, endpoint.status, None, now)
                ends_changed.add(endpoint.id)
            if notice is not None and notice.delivered_at is None and d.kind == "notice":
                notice = nots[notice.id] = _notice(
                    notice, "delivered" if notice.status in ("pending", "failed") else notice.status, now
                )
                nots_changed.add(notice.id)
                latency = (now - notice.revoked_at).total_seconds()
                events.append(
                    NoticeDelivered(notice, d.endpoint_id, count, latency, outcome.status_code or 0, first)
                )
        elif d.status == "pending":  # else acknowledged or cancelled meanwhile: only the attempt counts
            if endpoint is not None:
                failing_since = endpoint.failing_since or now
                endpoint_status = endpoint.status
                if endpoint_status != "disabled":
                    reason, label = "", ""
                    if outcome.status_code == 410:
                        reason, label = "the endpoint answered 410 Gone", "gone"
                    elif (now - failing_since).total_seconds() > policy.disable_after:
                        reason, label = "the endpoint kept failing", "failing"
                    if reason:
                        endpoint_status = "disabled"
                        disabled.append(EndpointDisabled(endpoint.id, reason, label))
                if endpoint.failing_since is None:
                    ends_changed.add(endpoint.id)
                if (failing_since, endpoint_status) != (endpoint.failing_since, endpoint.status):
                    endpoint = ends[endpoint.id] = Endpoint(
                        endpoint.id, endpoint_status, failing_since, endpoint.last_success_at
                    )
            delay = backoff(count, policy.retry_schedule, policy.retry_jitter, uniform)
            if outcome.retry_after is not None:
                delay = max(delay, min(outcome.retry_after, policy.max_retry_after))
            # A disabled endpoint is never claimed again: a retry scheduled for it would wait forever,
            # out of the dead-letter backlog. Its delivery is dead now (re-driven once it is enabled).
            to_disabled = endpoint is not None and endpoint.status == "disabled"
            retry_at = next_retry_at(first, now, delay, policy.retry_window)
            died = to_disabled or retry_at is None
            if died or retry_at is None:
                status = "dead"
            else:
                next_at = retry_at
            if (
                died
                and d.kind == "notice"
                and notice is not None
                and notice.delivered_at is None
                and notice.status == "pending"
            ):
                # The others as stored, or as this pass leaves them (this one is dead).
                others = dict(statuses_of(notice.id))
                others.update(
                    {i: x.status for i, x in done.items() if x.notice_id == notice.id and x.kind == "notice"}
                )
                others.pop(d.id, None)
                if cannot_succeed(others):
                    notice = nots[notice.id] = _notice(notice, "failed", notice.delivered_at)
                    nots_changed.add(notice.id)
                    events.append(
                        NoticeFailed(notice, f"undeliverable: {outcome.error or outcome.status_code}")
                    )
        d = done[d.id] = Delivery(
            d.id,
            d.notice_id,
            d.endpoint_id,
            status,
            count,
            first,
            next_at,
            succeeded_at,
            now,
            outcome.status_code,
            outcome.error,
            d.kind,
        )
        if died:
            dead.append(Dead(d, to_disabled))
    return Recorded(
        deliveries=tuple(done.values()),
        endpoints=tuple(ends[i] for i in endpoints if i in ends_changed),
        notices=tuple(nots[i] for i in notices if i in nots_changed),
        attempts=tuple(attempts),
        events=tuple(events),
        disabled=tuple(disabled),
        dead=tuple(dead),
    )
