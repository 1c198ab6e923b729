"""The delivery loop: lease due deliveries, POST them concurrently, record each outcome.

- One pooled aiohttp session per process; a global concurrency cap, and at most
  `worker_endpoint_concurrency` in flight per endpoint, so a slow or dead endpoint never
  delays other licensees (its backlog waits, theirs does not).
- Only 2xx is success. Failures back off along `worker_retry_schedule_seconds` with jitter,
  honouring Retry-After, for `worker_retry_window_seconds` (72 h); then the delivery is dead
  (the operator can re-drive it). 410 Gone disables the endpoint at once; an endpoint failing
  without a success for `worker_disable_after_seconds` is disabled. Ops are told by metric and
  by an EndpointDisabled event.
- Leases: a crashed worker's deliveries are picked up again when their lease expires; the
  receiver then sees a redelivery with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
from sqlalchemy.orm import Session

from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.context import AppContext
from revocation_worker.delivery.client import UnsafeURL, check_literal_host, make_session, post
from revocation_worker.delivery.signing import sign_headers, webhook_id
from revocation_worker.endpoints import service as endpoints
from revocation_worker.endpoints.models import Endpoint
from revocation_worker.events import publish
from revocation_worker.metrics import (
    DELIVERY_ATTEMPTS,
    DELIVERY_LATENCY,
    ENDPOINTS_DISABLED,
    REVOCATION_TO_DELIVERY,
)
from revocation_worker.notices import repository
from revocation_worker.notices import service as notices
from revocation_worker.notices.models import Delivery, Notice

log = logging.getLogger(__name__)


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


@dataclass
class Outcome:
    status_code: int | None
    error: str | None
    duration: float
    retry_after: float | None = None


@dataclass
class Deliverer:
    ctx: AppContext
    inflight: dict[str, int] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # -- claiming (database, in a thread) ---------------------------------------

    def claim(self) -> list[Job]:
        s = self.ctx.settings
        capacity = s.worker_endpoint_concurrency
        room = s.worker_delivery_concurrency - sum(self.inflight.values())
        if room <= 0:
            return []
        per_endpoint = {e: capacity - n for e, n in self.inflight.items()}
        now = utcnow()
        jobs: list[Job] = []
        bodies: dict[str, bytes] = {}
        with self.ctx.session_factory() as session, session.begin():
            claimed = repository.claim_due(
                session,
                now=now,
                owner=uuid.uuid4().hex,
                lease=lease_for(s.worker_delivery_timeout_seconds),
                per_endpoint=per_endpoint,
                default_capacity=capacity,
                limit=room,
            )
            for d in claimed:
                endpoint = session.get(Endpoint, d.endpoint_id)
                notice = session.get(Notice, d.notice_id)
                if endpoint is None or notice is None:
                    d.status = "cancelled"
                    continue
                if d.notice_id not in bodies:
                    body = notices.webhook_body(session, self.ctx, notice)
                    bodies[d.notice_id] = json.dumps(body, separators=(",", ":")).encode()
                jobs.append(
                    Job(
                        delivery_id=d.id,
                        endpoint_id=d.endpoint_id,
                        notice_id=d.notice_id,
                        url=endpoint.url,
                        body=bodies[d.notice_id],
                        secrets=endpoints.signing_secrets(self.ctx, endpoint, now),
                    )
                )
        return jobs

    # -- sending (event loop) ----------------------------------------------------

    async def send(self, http: aiohttp.ClientSession, job: Job) -> Outcome:
        s = self.ctx.settings
        start = time.perf_counter()
        try:
            check_literal_host(job.url, self.ctx.policy, s.worker_allow_http)
            headers = sign_headers(webhook_id(job.notice_id), job.body.decode(), job.secrets, utcnow())
            status, resp_headers = await post(http, job.url, job.body, headers)
            return Outcome(status, None, time.perf_counter() - start, _retry_after(resp_headers))
        except UnsafeURL as exc:
            return Outcome(None, f"refused address: {exc}", time.perf_counter() - start)
        except TimeoutError:
            return Outcome(None, "timeout", time.perf_counter() - start)
        except aiohttp.ClientError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:300], time.perf_counter() - start)

    async def run_job(self, http: aiohttp.ClientSession, job: Job) -> None:
        try:
            outcome = await self.send(http, job)
            DELIVERY_LATENCY.observe(outcome.duration)
            await asyncio.to_thread(self.record, job, outcome)
        except Exception:
            log.exception(
                "delivery %s failed unexpectedly; its lease will expire and it will be retried",
                job.delivery_id,
            )
        finally:
            self.inflight[job.endpoint_id] -= 1
            if self.inflight[job.endpoint_id] <= 0:
                del self.inflight[job.endpoint_id]

    # -- recording (database, in a thread) -----------------------------------------

    def record(self, job: Job, outcome: Outcome) -> None:
        with self.ctx.session_factory() as session, session.begin():
            self._record(session, job, outcome)

    def _record(self, session: Session, job: Job, outcome: Outcome) -> None:
        s = self.ctx.settings
        now = utcnow()
        d = session.get(Delivery, job.delivery_id, with_for_update=True)
        if d is None:
            return
        repository.add_attempt(
            session, d.id, now, outcome.status_code, outcome.error, int(outcome.duration * 1000)
        )
        d.attempts += 1
        d.last_attempt_at = now
        d.first_attempt_at = d.first_attempt_at or now
        d.last_status_code = outcome.status_code
        d.last_error = outcome.error
        d.lease_until = None
        d.lease_owner = None
        endpoint = session.get(Endpoint, d.endpoint_id, with_for_update=True)
        notice = session.get(Notice, d.notice_id, with_for_update=True)
        ok = outcome.status_code is not None and 200 <= outcome.status_code < 300
        DELIVERY_ATTEMPTS.labels(_outcome_label(outcome, ok)).inc()
        if ok:
            d.status = "succeeded"
            d.succeeded_at = now
            if endpoint is not None:
                endpoint.failing_since = None
                endpoint.last_success_at = now
            if notice is not None and notice.delivered_at is None:
                notice.delivered_at = now
                if notice.status in ("pending", "failed"):
                    notice.status = "delivered"
                latency = (now - notice.revoked_at).total_seconds()
                REVOCATION_TO_DELIVERY.observe(max(0.0, latency))
                publish(
                    session,
                    s,
                    licensee_id=notice.licensee_id,
                    notice_id=notice.id,
                    revocation_id=notice.revocation_id,
                    subject_id=notice.subject_id,
                    notice_delivered=pb.NoticeDelivered(
                        endpoint_id=d.endpoint_id, attempts=d.attempts, latency_seconds=latency
                    ),
                )
            return
        if d.status != "pending":
            return  # acknowledged or cancelled meanwhile
        if endpoint is not None:
            endpoint.failing_since = endpoint.failing_since or now
            if outcome.status_code == 410:
                endpoints.disable(session, self.ctx, endpoint, "the endpoint answered 410 Gone")
                ENDPOINTS_DISABLED.labels("gone").inc()
            elif (now - endpoint.failing_since).total_seconds() > s.worker_disable_after_seconds:
                endpoints.disable(session, self.ctx, endpoint, "the endpoint kept failing")
                ENDPOINTS_DISABLED.labels("failing").inc()
        delay = backoff(d.attempts, s.worker_retry_schedule_seconds, s.worker_retry_jitter)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, s.worker_max_retry_after_seconds))
        next_at = now + dt.timedelta(seconds=delay)
        if (next_at - d.first_attempt_at).total_seconds() > s.worker_retry_window_seconds:
            d.status = "dead"
            log.warning(
                "delivery of %s to %s is dead after %d attempts", d.notice_id, d.endpoint_id, d.attempts
            )
            if notice is not None and notice.delivered_at is None and notice.status == "pending":
                others = [x for x in repository.deliveries_of(session, notice.id) if x.id != d.id]
                if all(x.status in ("dead", "cancelled") for x in others):
                    notice.status = "failed"
                    publish(
                        session,
                        s,
                        licensee_id=notice.licensee_id,
                        notice_id=notice.id,
                        revocation_id=notice.revocation_id,
                        subject_id=notice.subject_id,
                        notice_failed=pb.NoticeFailed(
                            reason=f"undeliverable: {outcome.error or outcome.status_code}"
                        ),
                    )
        else:
            d.next_attempt_at = next_at

    # -- the loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.ctx.settings
        async with make_session(
            self.ctx.policy,
            concurrency=s.worker_delivery_concurrency,
            timeout=s.worker_delivery_timeout_seconds,
        ) as http:
            while not stop.is_set():
                try:
                    jobs = await asyncio.to_thread(self.claim)
                except Exception as exc:
                    log.warning("claiming deliveries failed: %s: %s", type(exc).__name__, exc)
                    jobs = []
                for job in jobs:
                    self.inflight[job.endpoint_id] = self.inflight.get(job.endpoint_id, 0) + 1
                    task = asyncio.create_task(self.run_job(http, job))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=s.worker_poll_interval_seconds)
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=s.worker_delivery_timeout_seconds + 5)


def backoff(failures: int, schedule: list[float], jitter: float) -> float:
    base = schedule[min(failures, len(schedule) - 1)]
    return max(0.0, base * (1 + random.uniform(-jitter, jitter)))


def _retry_after(headers: dict[str, str]) -> float | None:
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
    return max(0.0, (when - utcnow()).total_seconds())


def _outcome_label(outcome: Outcome, ok: bool) -> str:
    if ok:
        return "success"
    if outcome.status_code is None:
        return "timeout" if outcome.error == "timeout" else "error"
    return f"http_{outcome.status_code // 100}xx"
