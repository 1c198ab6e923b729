"""revocation-worker test helpers: the API and the delivery loop in a thread (`WorkerHarness`), and
real local webhook receivers that verify every delivery with `standardwebhooks` (`Receiver`).

The fixtures that make them (`worker_db_url`, `worker`, `receiver`) are in
tests/revocation_worker/conftest.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import uuid
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.db import utcnow
from rescind_common.embedded_broker import free_port
from rescind_common.ids import new_id
from rescind_common.proto.rescind.v1 import consent_events_pb2, notice_events_pb2
from revocation_worker.config import WorkerSettings
from revocation_worker.context import AppContext
from revocation_worker.db import Outbox
from revocation_worker.delivery import client as delivery_client
from revocation_worker.delivery import repository as deliveries_repo
from revocation_worker.delivery.loop import Deliverer
from revocation_worker.intake.models import Revocation
from revocation_worker.main import create_app
from revocation_worker.notices.models import Delivery, DeliveryAttempt
from revocation_worker.notices.service import HolderNotice, RevocationSamples, create_many

from support.helpers import sha
from support.registry import Projection
from support.wait import wait_until

# Fast, deterministic retries for tests: at once, then 50 ms, 100 ms, no jitter.
FAST_RETRIES: dict[str, Any] = {
    "worker_retry_schedule_seconds": [0.0, 0.05, 0.1],
    "worker_retry_jitter": 0.0,
    "worker_poll_interval_seconds": 0.05,
}


# -- receivers -------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> dict[str, Any]:
        """Verify with the Standard Webhooks reference library; returns the parsed body."""
        return dict(Webhook(secret).verify(self.body, self.headers))


# What a receiver answers to its n-th request (0-based): a status, (status, headers), or "hang".
Responder = Callable[[int, Received], Any]


class Receiver:
    """A real HTTP server on 127.0.0.1 in a thread; records every request before answering."""

    def __init__(self, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or (lambda n, req: 200)
        self.requests: list[Received] = []
        self.completed = 0
        self.hanging = 0
        # Requests being handled at once, now and at the most (each holds one connection).
        self.active = 0
        self.peak = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                req = Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
                )
                with outer._lock:
                    n = len(outer.requests)
                    outer.requests.append(req)
                    outer.active += 1
                    outer.peak = max(outer.peak, outer.active)
                try:
                    self._answer(outer.respond(n, req))
                finally:
                    with outer._lock:
                        outer.active -= 1
                        outer.completed += 1

            def _answer(self, answer: Any) -> None:
                if answer == "hang":
                    with outer._lock:
                        outer.hanging += 1
                    outer.release.wait(60)
                    with outer._lock:
                        outer.hanging -= 1
                    answer = 200
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="receiver", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        wait_until(lambda: self.count() >= n, timeout, f"{n} webhook(s) at {self.url}")
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class DeliveryLoop:
    """`Deliverer.run` on its own event loop in a thread; stopped (and joined) on exit."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.deliverer = Deliverer(ctx)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="deliverer", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await self.deliverer.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    def start(self) -> DeliveryLoop:
        self._thread.start()
        assert self._started.wait(10), "the delivery loop did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.ctx.settings.worker_delivery_timeout_seconds + 15)
        assert not self._thread.is_alive(), "the delivery loop did not stop"
        if self._error is not None:
            raise self._error


class WorkerHarness:
    """One revocation-worker configuration: its API (TestClient), context and helpers."""

    def __init__(self, db_url: str, state_dir: Path, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "worker_database_url": db_url,
            "state_dir": state_dir,
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",  # never used: no relay or consumer here
            "worker_allow_networks": ["127.0.0.0/8"],
            "worker_allow_http": True,
            "worker_db_pool_size": 4,
            "worker_public_url": "http://worker.test",
            **FAST_RETRIES,
        }
        values.update(overrides)
        self.settings = WorkerSettings(**values)
        self.app = create_app(self.settings)
        self.ctx: AppContext = self.app.state.ctx
        self.client = TestClient(self.app)
        self._key = ensure_dev_key(self.settings.dev_auth_key_file)
        self._loops: list[DeliveryLoop] = []

    # auth
    def headers(self, role: str, sub: str) -> dict[str, str]:
        tok = mint_token(
            self._key,
            sub=sub,
            role=role,
            issuer=self.settings.auth_issuer,
            audience=self.settings.token_audiences,
        )
        return {"Authorization": f"Bearer {tok}"}

    def licensee(self) -> tuple[str, dict[str, str]]:
        lic = f"lic_{uuid.uuid4().hex[:16]}"
        return lic, self.headers("licensee", lic)

    @property
    def operator(self) -> dict[str, str]:
        return self.headers("operator", "ops-worker-test")

    # endpoints
    def register(self, headers: dict[str, str], url: str) -> tuple[str, str]:
        r = self.client.post("/v1/endpoints", json={"url": url}, headers=headers)
        assert r.status_code == 201, r.text
        body = r.json()
        return body["id"], body["secret"]

    def wait_endpoint(self, headers: dict[str, str], endpoint_id: str, status: str) -> dict[str, Any]:
        """The endpoint as its licensee reads it, once its status is `status`."""

        def check() -> dict[str, Any] | None:
            endpoint = self.client.get(f"/v1/endpoints/{endpoint_id}", headers=headers).json()
            return dict(endpoint) if endpoint["status"] == status else None

        return wait_until(check, what=f"the endpoint to be {status}")

    # notices
    def make_notice(
        self,
        licensee_id: str,
        *,
        samples: int = 1,
        models: list[dict[str, Any]] | None = None,
        occurred_at: dt.datetime | None = None,
        subject_id: str | None = None,
    ) -> str:
        """A notice as the resolver would make it (without registry) for a revocation of its own
        whose samples the licensee holds all of: returns its id."""
        refs = {f"smp_{i:03d}_{uuid.uuid4().hex[:8]}": (sha(i), "face_image") for i in range(samples)}
        if models is None:
            models = [{"model_id": f"mdl_{uuid.uuid4().hex[:12]}", "name": "faces", "version": "3"}]
        shared = RevocationSamples(set(refs), refs)
        with self.ctx.session_factory() as session, session.begin():
            rev = add_revocation(session, occurred_at=occurred_at, subject_id=subject_id)
            (notice_id,) = create_notices(
                session, self.ctx, rev, [holder_notice(licensee_id, shared, models=models)]
            )
            return notice_id

    def notice(self, headers: dict[str, str], notice_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/notices/{notice_id}", headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_status(
        self, headers: dict[str, str], notice_id: str, status: str, timeout: float = 60.0
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> bool:
            nonlocal last
            last = self.notice(headers, notice_id)
            return last["status"] == status

        try:
            wait_until(check, timeout, f"notice {notice_id} to be {status}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {last}") from None
        return last

    def attempts(self, notice_id: str) -> list[DeliveryAttempt]:
        with self.ctx.session_factory() as session:
            out: list[DeliveryAttempt] = []
            for d in deliveries_repo.deliveries_of(session, notice_id):
                out += deliveries_repo.attempts_of(session, d.id)
            return out

    # the delivery loop
    def deliver(self) -> DeliveryLoop:
        loop = DeliveryLoop(self.ctx).start()
        self._loops.append(loop)
        return loop

    def stop_loops(self) -> None:
        errors: list[BaseException] = []
        for loop in self._loops:
            try:
                loop.stop()
            except BaseException as exc:
                errors.append(exc)
        self._loops.clear()
        if errors:
            raise errors[0]

    def cancel_leftovers(self) -> None:
        """Tests share one database: a test's unfinished deliveries must not reach later tests'
        receivers (which may reuse a port) through later tests' delivery loops."""
        with self.ctx.session_factory() as session, session.begin():
            session.execute(update(Delivery).where(Delivery.status == "pending").values(status="cancelled"))

    def close(self) -> None:
        self.client.close()
        self.ctx.engine.dispose()


# -- revocations and notices, as the intake and the resolver make them ---------------------


def revocation_part(
    subject: str, revocation: str, consent: str, chunk: int, chunks: int, consents: int
) -> consent_events_pb2.ConsentEvent:
    """One part of a revocation as consent-api publishes it: chunk `chunk` of `chunks` of the
    revocation of one of its `consents` consents, withdrawing one fresh sample."""
    return Projection.revoke_event(
        subject,
        consent,
        [new_id("smp")],
        ["model_training"],
        ended=True,
        revocation_id=revocation,
        chunk=(chunk, chunks),
        consent_count=consents,
    )


def add_revocation(
    session: Session,
    *,
    revocation_id: str | None = None,
    subject_id: str | None = None,
    occurred_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Revocation:
    """A resolved revocation (one consent, withdrawn by its subject), flushed in `session`."""
    now = now or utcnow()
    rev = Revocation(
        id=revocation_id or f"rev_{uuid.uuid4().hex[:20]}",
        subject_id=subject_id or f"sub_{uuid.uuid4().hex[:20]}",
        trigger="withdrawal",
        consent_count=1,
        state="resolved",
        occurred_at=occurred_at or now,
        created_at=now,
    )
    session.add(rev)
    session.flush()
    return rev


def holder_notice(
    licensee_id: str,
    shared: RevocationSamples,
    sample_ids: Set[str] | None = None,
    models: list[dict[str, Any]] | None = None,
    license_ids: list[str] | None = None,
) -> HolderNotice:
    """What the resolver tells one licensee: `sample_ids` of the revocation's samples (default:
    all of them, the very same set object, as for a whole withdrawal) and `models`."""
    return {
        "licensee_id": licensee_id,
        "sample_ids": shared.ids if sample_ids is None else sample_ids,
        "revocation_samples": shared,
        "license_ids": license_ids or [],
        "models": models or [],
    }


def create_notices(
    session: Session,
    ctx: AppContext,
    revocation: Revocation,
    holders: Sequence[HolderNotice],
    now: dt.datetime | None = None,
) -> list[str]:
    """The revocation's notices, made by the worker's one creation path: their ids, in order."""
    return create_many(session, ctx, [(revocation, holders)], now or utcnow())


def outbox_events(ctx: AppContext, licensee_id: str) -> list[tuple[Outbox, notice_events_pb2.NoticeEvent]]:
    """The worker's outbox rows keyed by this licensee, oldest first, with their decoded events."""
    with ctx.session_factory() as session:
        rows = list(session.scalars(select(Outbox).where(Outbox.key == licensee_id).order_by(Outbox.id)))
        session.expunge_all()
    return [(row, notice_events_pb2.NoticeEvent.FromString(row.payload)) for row in rows]


def rebind_dns(
    monkeypatch: pytest.MonkeyPatch, host: str, public_ip: str, dial_ip: str, family: int = socket.AF_INET
) -> None:
    """DNS rebinding: `host` resolves to `public_ip` for the registration check, and to `dial_ip`
    (of `family`) when the delivery client dials."""
    real_getaddrinfo = socket.getaddrinfo

    def registration_lookup(name: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (public_ip, int(port or 0)))]
        return real_getaddrinfo(name, port, *args, **kwargs)

    class RebindingResolver:
        async def resolve(self, name: str, port: int = 0, family_: int = socket.AF_INET) -> list[Any]:
            assert name == host, name
            return [
                {
                    "hostname": name,
                    "host": dial_ip,
                    "port": port,
                    "family": family,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]

        async def close(self) -> None:
            pass

    monkeypatch.setattr(socket, "getaddrinfo", registration_lookup)
    monkeypatch.setattr(delivery_client, "DefaultResolver", RebindingResolver)


def barrier(w: WorkerHarness, make_receiver: Callable[..., Receiver], rounds: int = 2) -> None:
    """Let the running delivery loop go through `rounds` full claim/send/record cycles: each round
    delivers a fresh notice to a fresh licensee and waits until it is recorded as delivered.

    A delivery that was due before the barrier and is eligible would have been claimed in the
    same cycle, so "nothing happened after the barrier" is a causal check, not a timing guess."""
    for _ in range(rounds):
        rcv = make_receiver()
        lic, h = w.licensee()
        _, secret = w.register(h, rcv.url)
        nid = w.make_notice(lic, models=[])
        w.wait_status(h, nid, "delivered")
        rcv.wait_for(1)[0].verify(secret)
