"""The delivery loop: lease due deliveries, POST them concurrently, record outcomes in batches.

- One pooled aiohttp session per process; a global concurrency cap, and at most
  `worker_endpoint_concurrency` in flight per endpoint, `worker_licensee_concurrency` per licensee
  and `worker_host_concurrency` per destination host, claimed round-robin over licensees: a slow or
  dead endpoint, a licensee's storm or many endpoints at one host never delay other licensees'
  deliveries (their backlog waits, the others' does not; `rules.choose`).
- Claiming is one transaction: lease due deliveries (UPDATE ... RETURNING), load their endpoints
  and notices in one query each, build each distinct notice's body once.
- A finished POST goes to an in-process queue; the recorder writes every outcome pending at
  that moment in ONE transaction (a multi-row insert of attempts, the deliveries, endpoints and
  notices updated together, the NoticeDelivered/NoticeFailed/EndpointDisabled events in the same
  transaction). Until it commits the delivery stays leased: a crash between the POST and the
  record means the lease expires and the receiver sees a redelivery with the same `webhook-id`.
- What an outcome does (success, retry, dead, endpoint disabled, notice delivered or failed) is
  decided by the pure rules of `delivery/rules.py`; this module reads the states they need, locked,
  and writes what they return. A disabled endpoint is never claimed, so its deliveries are
  dead-lettered at once (this one by the rules, its backlog just after by
  `sweeps.dead_letter_disabled`); enabling the endpoint re-drives them.
- The loop sleeps until woken (`wake()`: new notices, freed capacity, a recorded batch), until
  the earliest pending retry is due, or at most `worker_idle_wake_seconds` (leases of crashed
  workers, deliveries made by the API). Run with nobody to wake it (`signalled=False`), it polls
  every `worker_poll_interval_seconds` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy.orm import Session

from rescind_common.db import utcnow
from rescind_common.health import Heartbeat
from rescind_common.keyring import KeyUnavailable
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker import sweeps
from revocation_worker.context import AppContext
from revocation_worker.delivery import repository as delivery_repo
from revocation_worker.delivery import rules
from revocation_worker.delivery.client import (
    UnsafeURL,
    check_literal_host,
    describe_error,
    make_session,
    post,
)
from revocation_worker.delivery.rules import Outcome
from revocation_worker.delivery.signing import sign_headers, webhook_id
from revocation_worker.endpoints import repository as endpoints_repo
from revocation_worker.endpoints import service as endpoints
from revocation_worker.events import notice_event_of, timestamp
from revocation_worker.metrics import (
    DELIVERY_ATTEMPTS,
    DELIVERY_LATENCY,
    ENDPOINTS_DISABLED,
    REVOCATION_TO_DELIVERY,
)
from revocation_worker.notices import service as notices
from revocation_worker.notices.rows import NoticeLike

log = logging.getLogger(__name__)

# Webhook bodies are built this many notices at a time, in a pool of this many threads.
BODY_GROUP = 16
BODY_THREADS = 3


def lease_for(timeout: float) -> dt.timedelta:
    """A lease outlives the attempt it covers (POST timeout plus recording it), so a slow attempt
    is never picked up twice while it is still running."""
    return dt.timedelta(seconds=max(120.0, 2 * timeout + 30))


@dataclass
class Job:
    delivery_id: int
    endpoint_id: str
    notice_id: str
    url: str
    body: bytes
    secrets: list[str]
    # What the job counts against in `Deliverer.inflight` until it is recorded.
    licensee_id: str
    host: str
    # Why it cannot be signed (its secret's key is not configured): the attempt fails with this.
    unsigned: str | None = None
    # notice | reminder | overdue: which webhook, and so which webhook-id.
    kind: str = "notice"


@dataclass
class Leased:
    """A delivery this process holds the lease of; its body is built next."""

    delivery_id: int
    endpoint_id: str
    url: str
    secrets: list[str]
    notice: NoticeLike
    licensee_id: str
    host: str
    unsigned: str | None = None
    kind: str = "notice"
    queued_at: dt.datetime | None = None

    @property
    def body_key(self) -> tuple[str, str]:
        return (self.notice.id, self.kind)

    def job(self, body: bytes) -> Job:
        return Job(
            self.delivery_id,
            self.endpoint_id,
            self.notice.id,
            self.url,
            body,
            self.secrets,
            self.licensee_id,
            self.host,
            self.unsigned,
            self.kind,
        )


@dataclass
class _Observed:
    """Metrics of one recording pass, applied only once its transaction committed."""

    attempts: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    disabled_endpoints: list[str] = field(default_factory=list)

    def apply(self) -> None:
        for label in self.attempts:
            DELIVERY_ATTEMPTS.labels(label).inc()
        for latency in self.latencies:
            REVOCATION_TO_DELIVERY.observe(latency)
        for reason in self.disabled:
            ENDPOINTS_DISABLED.labels(reason).inc()


@dataclass
class Deliverer:
    ctx: AppContext
    # True when something calls `wake()` on new work (the worker's resolver, a LISTEN thread);
    # otherwise the loop polls every `worker_poll_interval_seconds`.
    signalled: bool = False
    inflight: rules.InFlight = field(default_factory=rules.InFlight)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _done: list[tuple[Job, Outcome]] = field(default_factory=list)
    _next_due: dt.datetime | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None
    _record_wake: asyncio.Event | None = None
    _closing: bool = False
    _bodies_executor: ThreadPoolExecutor | None = None
    # Ticked on every turn of `run` (a wait ends within `worker_idle_wake_seconds`): /healthz.
    heartbeat: Heartbeat = field(default_factory=lambda: Heartbeat("delivery"))

    def wake(self) -> None:
        """Claim now (thread-safe; a no-op before the loop runs or after it ended)."""
        loop, event = self._loop, self._wake
        if loop is None or event is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(event.set)

    # -- claiming (database, in a thread) ---------------------------------------

    def claim(self) -> list[Job]:
        """Lease due deliveries and build their jobs (the loop does the same in two steps, so
        that the first POSTs start before every body is built)."""
        leases = self.lease()
        bodies = self.bodies(leases)
        return [x.job(bodies[x.body_key]) for x in leases if x.body_key in bodies]

    def lease(self) -> list[Leased]:
        """One transaction: lease due deliveries (fairly, within the caps), load their endpoints
        and notices in one query each, note when the next retry is due."""
        s = self.ctx.settings
        caps = rules.Caps.of(s)
        room = caps.total - self.inflight.total
        self._next_due = None
        if room <= 0:
            return []  # the recorder wakes the loop when capacity frees up
        now = utcnow()
        out: list[Leased] = []
        secrets: dict[str, list[str]] = {}
        unsigned: dict[str, str] = {}
        with self.ctx.session_factory() as session, session.begin():
            claimed = delivery_repo.claim_due(
                session,
                now=now,
                owner=uuid.uuid4().hex,
                lease=lease_for(s.worker_delivery_timeout_seconds),
                inflight=self.inflight,
                caps=caps,
            )
            if not claimed:
                self._next_due = delivery_repo.next_due_at(session, now)
                return []
            # Their endpoints and notices (and when the next retry is due) in one query.
            rows, next_due = delivery_repo.leased_rows(session, [c.id for c in claimed], now)
            if len(claimed) < room:
                self._next_due = next_due
            gone: list[int] = []
            for c in claimed:
                row = rows.get(c.id)
                if row is None or row.url is None or row.endpoint is None or row.notice is None:
                    gone.append(c.id)
                    continue
                if c.endpoint_id not in secrets:
                    try:
                        secrets[c.endpoint_id] = endpoints.signing_secrets(self.ctx, row.endpoint, now)
                    except KeyUnavailable as exc:
                        # Never sent unsigned: the attempt fails (and retries) until the key is back.
                        secrets[c.endpoint_id] = []
                        unsigned[c.endpoint_id] = f"signing secret unavailable: {exc}"
                        log.error(
                            "endpoint %s: its signing secret is %s; add it to RESCIND_WORKER_SECRET_KEYS",
                            c.endpoint_id,
                            exc,
                        )
                out.append(
                    Leased(
                        c.id,
                        c.endpoint_id,
                        row.url,
                        secrets[c.endpoint_id],
                        row.notice,
                        c.licensee_id,
                        c.host,
                        unsigned.get(c.endpoint_id),
                        c.kind,
                        c.created_at,
                    )
                )
            delivery_repo.cancel(session, gone)
        return out

    def give_back(self, delivery_ids: list[int]) -> None:
        with self.ctx.session_factory() as session, session.begin():
            delivery_repo.release(session, delivery_ids)

    def bodies(self, leases: list[Leased]) -> dict[tuple[str, str], bytes]:
        """Each distinct (notice, kind)'s webhook body, built once (a body never changes): the
        notices' own in a few queries, their reminders and overdue notices from the leased rows."""
        own: list[NoticeLike] = [x.notice for x in leases if x.kind == "notice"]
        out: dict[tuple[str, str], bytes] = {}
        if own:
            with self.ctx.session_factory() as session:
                built = notices.webhook_bodies(session, self.ctx, own)
            out = {(nid, "notice"): _encode(body) for nid, body in built.items()}
        for x in leases:
            if x.kind != "notice" and x.body_key not in out:
                out[x.body_key] = _encode(
                    notices.followup_body(self.ctx, x.notice, x.kind, x.queued_at or x.notice.created_at)
                )
        return out

    # -- sending (event loop) ----------------------------------------------------

    async def send(self, http: aiohttp.ClientSession, job: Job) -> Outcome:
        s = self.ctx.settings
        start = time.perf_counter()
        if job.unsigned is not None:
            return Outcome(None, job.unsigned, 0.0)
        try:
            check_literal_host(job.url, self.ctx.policy, s.worker_allow_http)
            headers = sign_headers(
                webhook_id(job.notice_id, job.kind), job.body.decode(), job.secrets, utcnow()
            )
            status, resp_headers = await post(http, job.url, job.body, headers)
            return Outcome(
                status, None, time.perf_counter() - start, rules.retry_after(resp_headers, utcnow())
            )
        except UnsafeURL as exc:
            return Outcome(None, f"refused address: {exc}", time.perf_counter() - start)
        except TimeoutError:
            return Outcome(None, "timeout", time.perf_counter() - start)
        except aiohttp.ClientError as exc:
            return Outcome(None, describe_error(exc), time.perf_counter() - start)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _build_and_send(self, http: aiohttp.ClientSession, leases: list[Leased]) -> None:
        loop = asyncio.get_running_loop()
        try:
            bodies = await loop.run_in_executor(self._body_pool(), self.bodies, leases)
        except Exception as exc:
            log.warning(
                "building %d webhook bodies failed (%s: %s); giving their leases back",
                len(leases),
                type(exc).__name__,
                exc,
            )
            bodies = {}
            try:
                await loop.run_in_executor(self._body_pool(), self.give_back, [x.delivery_id for x in leases])
            except Exception as exc:  # the database is away: the leases expire instead
                log.warning("giving %d leases back failed: %s: %s", len(leases), type(exc).__name__, exc)
        for x in leases:
            body = bodies.get(x.body_key)
            if body is None:
                self.inflight.remove(x.endpoint_id, x.licensee_id, x.host)
                continue
            self._spawn(self.run_job(http, x.job(body)))

    def _body_pool(self) -> ThreadPoolExecutor:
        if self._bodies_executor is None:
            self._bodies_executor = ThreadPoolExecutor(BODY_THREADS, thread_name_prefix="webhook-bodies")
        return self._bodies_executor

    async def run_job(self, http: aiohttp.ClientSession, job: Job) -> None:
        try:
            outcome = await self.send(http, job)
            DELIVERY_LATENCY.observe(outcome.duration)
        except Exception:
            log.exception(
                "delivery %s failed unexpectedly; its lease will expire and it will be retried",
                job.delivery_id,
            )
            self._release(job)
            return
        # Still counted in flight (and leased) until the recorder has written it.
        self._done.append((job, outcome))
        if self._record_wake is not None:
            self._record_wake.set()

    def _release(self, job: Job) -> None:
        self.inflight.remove(job.endpoint_id, job.licensee_id, job.host)

    # -- recording (database, in a thread) -----------------------------------------

    def record(self, job: Job, outcome: Outcome) -> None:
        """Record one outcome in its own transaction (raises when that fails)."""
        self._record_committed([(job, outcome)])

    def record_many(self, batch: list[tuple[Job, Outcome]]) -> None:
        """Record every outcome in one transaction. If that fails (a deadlock with an
        acknowledgement, one bad row), record them one by one so the rest still land; an outcome
        that cannot be recorded keeps its lease, which expires, and the delivery is retried."""
        if not batch:
            return
        try:
            self._record_committed(batch)
            return
        except Exception as exc:
            if len(batch) == 1:
                log.warning(
                    "recording delivery %s failed (%s: %s); its lease will expire and it will be retried",
                    batch[0][0].delivery_id,
                    type(exc).__name__,
                    exc,
                )
                return
            log.warning(
                "recording %d outcomes together failed (%s: %s); recording them one by one",
                len(batch),
                type(exc).__name__,
                exc,
            )
        for item in batch:
            self.record_many([item])

    def _record_committed(self, batch: list[tuple[Job, Outcome]]) -> None:
        observed = _Observed()
        with self.ctx.session_factory() as session, session.begin():
            self._record(session, batch, observed)
        observed.apply()
        if observed.disabled_endpoints:
            # The rest of a just-disabled endpoint's backlog is dead-lettered now, in transactions
            # of its own (the periodic sweep catches up if this fails).
            try:
                sweeps.dead_letter_disabled(self.ctx, observed.disabled_endpoints)
            except Exception as exc:
                log.warning(
                    "dead-lettering the backlog of disabled endpoints %s failed (%s: %s); the sweep retries",
                    observed.disabled_endpoints,
                    type(exc).__name__,
                    exc,
                )

    def _record(self, session: Session, batch: list[tuple[Job, Outcome]], observed: _Observed) -> None:
        """Read the states (locked), apply the rules (`rules.record`), write the result back: one
        executemany UPDATE per table, attempts and events with one multi-row INSERT each. No ORM
        unit of work, except the rare endpoint being disabled (`endpoints.disable`)."""
        s = self.ctx.settings
        now = utcnow()
        # Lock order (deliveries, endpoints, notices; each by id) is the same in every pass.
        deliveries = delivery_repo.lock_delivery_states(session, (job.delivery_id for job, _ in batch))
        rows = deliveries.values()
        by_endpoint = delivery_repo.lock_endpoint_states(session, (d.endpoint_id for d in rows))
        by_notice = delivery_repo.lock_notice_states(session, (d.notice_id for d in rows))
        result = rules.record(
            [(job.delivery_id, outcome) for job, outcome in batch],
            deliveries,
            by_endpoint,
            by_notice,
            rules.Policy.of(s),
            now,
            statuses_of=lambda notice_id: delivery_repo.delivery_statuses_of(session, notice_id),
        )
        for job, outcome in batch:
            if job.delivery_id in deliveries:
                observed.attempts.append(_outcome_label(outcome))
        for disabling in result.disabled:
            orm_endpoint = endpoints_repo.get(session, disabling.endpoint_id)  # locked above
            if orm_endpoint is not None:
                endpoints.disable(session, self.ctx, orm_endpoint, disabling.reason)
                observed.disabled.append(disabling.label)
                observed.disabled_endpoints.append(disabling.endpoint_id)
        for dead in result.dead:
            d = dead.delivery
            log.warning(
                "delivery of %s to %s is dead after %d attempts%s",
                d.notice_id,
                d.endpoint_id,
                d.attempts,
                " (endpoint disabled)" if dead.endpoint_disabled else "",
            )
        events: list[dict[str, Any]] = []
        for event in result.events:
            if isinstance(event, rules.NoticeDelivered):
                observed.latencies.append(max(0.0, event.latency_seconds))
                payload: dict[str, Any] = {
                    "notice_delivered": pb.NoticeDelivered(
                        endpoint_id=event.endpoint_id,
                        attempts=event.attempts,
                        latency_seconds=event.latency_seconds,
                        status_code=event.status_code,
                        webhook_id=webhook_id(event.notice.id),
                        first_attempt_at=timestamp(event.first_attempt_at or utcnow()),
                    )
                }
            else:
                payload = {"notice_failed": pb.NoticeFailed(reason=event.reason)}
            events.append(notice_event_of(s, event.notice, **payload))
        delivery_repo.write_recorded(
            session,
            result.deliveries,
            result.endpoints,
            result.notices,
            [
                {
                    "delivery_id": a.delivery_id,
                    "at": a.at,
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                }
                for a in result.attempts
            ],
            events,
        )

    async def _recorder(self) -> None:
        assert self._record_wake is not None
        while True:
            await self._record_wake.wait()
            self._record_wake.clear()
            while self._done:
                batch, self._done = self._done, []
                try:
                    await asyncio.to_thread(self.record_many, batch)
                except Exception:
                    log.exception("recording %d outcomes failed; their leases will expire", len(batch))
                finally:
                    for job, _ in batch:
                        self._release(job)
                # Capacity is free again, and a failure retried "at once" is due now.
                if self._wake is not None:
                    self._wake.set()
            if self._closing:
                return

    # -- the loop ----------------------------------------------------------------

    def _sleep_for(self) -> float:
        s = self.ctx.settings
        longest = s.worker_idle_wake_seconds if self.signalled else s.worker_poll_interval_seconds
        if self._next_due is None:
            return longest
        return min(longest, max(0.0, (self._next_due - utcnow()).total_seconds()) + 0.001)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.ctx.settings
        self._loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        self._record_wake = asyncio.Event()
        self._closing = False
        recorder = asyncio.create_task(self._recorder())

        async def stop_wakes() -> None:
            await stop.wait()
            wake.set()

        stopper = asyncio.create_task(stop_wakes())
        try:
            async with make_session(
                self.ctx.policy,
                concurrency=s.worker_delivery_concurrency,
                per_host=s.worker_host_concurrency,
                timeout=s.worker_delivery_timeout_seconds,
            ) as http:
                while not stop.is_set():
                    self.heartbeat.tick()
                    wake.clear()
                    try:
                        leases = await asyncio.to_thread(self.lease)
                    except Exception as exc:
                        log.warning("claiming deliveries failed: %s: %s", type(exc).__name__, exc)
                        leases = []
                    for x in leases:
                        self.inflight.add(x.endpoint_id, x.licensee_id, x.host)
                    # Bodies are built a few notices at a time in a small pool, and each group is
                    # sent as soon as it is ready: the first POSTs never wait for the last body.
                    for i in range(0, len(leases), BODY_GROUP):
                        self._spawn(self._build_and_send(http, leases[i : i + BODY_GROUP]))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=self._sleep_for())
                # Let POSTs in flight finish and be recorded (body groups spawn POSTs meanwhile).
                give_up = time.monotonic() + s.worker_delivery_timeout_seconds + 5
                while self.tasks and time.monotonic() < give_up:
                    await asyncio.wait(set(self.tasks), timeout=give_up - time.monotonic())
        finally:
            self._closing = True
            self._record_wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recorder, timeout=30)
            stopper.cancel()
            self._loop = None
            if self._bodies_executor is not None:
                self._bodies_executor.shutdown(wait=False)
                self._bodies_executor = None


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _outcome_label(outcome: Outcome) -> str:
    if outcome.ok:
        return "success"
    if outcome.status_code is None:
        return "timeout" if outcome.error == "timeout" else "error"
    return f"http_{outcome.status_code // 100}xx"
