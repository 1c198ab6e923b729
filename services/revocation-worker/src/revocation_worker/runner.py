"""`revocation-worker worker`: the consumer, the resolver, the delivery loop, the overdue sweeper
and the outbox relay. Stops on SIGTERM/SIGINT, committing consumer offsets.

Roles (`--role`): `all` (default) runs everything in one process; `intake` runs the consumer,
resolver, sweeper and relay; `delivery` runs the delivery loop alone, so that it has a GIL of its
own. Loops sleep until signalled: the consumer wakes the resolver after each batch (consent events
and the registry's license events, which become rechecks), the resolver wakes the delivery loop
when it made notices. Across processes that signal is a PostgreSQL
`NOTIFY` (the delivery role LISTENs); on SQLite the delivery role polls instead. A fallback timer
(`worker_idle_wake_seconds`) catches what nothing signals (expired leases, retries due later,
deliveries made by the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import threading
import time
from typing import Literal

from rescind_common.consumer import EventConsumer, payload_types
from rescind_common.db import make_engine, make_session_factory
from rescind_common.health import Heartbeat, serve_health
from rescind_common.keyring import Keyring
from rescind_common.outbox import OutboxRelay
from rescind_common.pglisten import Listener, libpq_url
from rescind_common.proto.rescind.v1 import consent_events_pb2, license_events_pb2
from revocation_worker import models  # noqa: F401  (every table, and the audit chains' recording)
from revocation_worker.config import WorkerSettings
from revocation_worker.context import AppContext
from revocation_worker.db import Outbox, OutboxLog, ProcessedEvent
from revocation_worker.delivery import dead_letter_repository as dead_letter_repo
from revocation_worker.delivery.loop import Deliverer
from revocation_worker.endpoints.urlguard import AddressPolicy
from revocation_worker.intake.handler import IntakeHandler
from revocation_worker.intake.resolver import RegistryClient, recheck_due, resolve_due
from revocation_worker.metrics import DEAD_LETTER_DEPTH, LATE_NOTICES, NOTICES, REVOCATIONS_RESOLVED
from revocation_worker.notices import repository as notices_repo
from revocation_worker.secrets import SecretBox
from revocation_worker.sweeps import dead_letter_disabled, sweep_overdue, sweep_reminders

log = logging.getLogger(__name__)

Role = Literal["all", "intake", "delivery"]
ROLES: tuple[Role, ...] = ("all", "intake", "delivery")
# The PostgreSQL channel on which the intake role tells the delivery role "new deliveries".
DELIVERY_CHANNEL = "rescind_worker_deliveries"
RESOLVE_BATCH = 50
# Rechecks are mostly dropped at once (the licensee was told by the resolution): a bigger batch.
RECHECK_BATCH = 500


def build_context(settings: WorkerSettings, role: Role = "all") -> AppContext:
    engine = make_engine(settings.worker_database_url, pool_size=settings.worker_db_pool_size)
    if (
        role == "intake"
        and settings.profile == "production"
        and not settings.worker_secret_key
        and not settings.worker_secret_keys
    ):
        # Intake never seals or opens an endpoint secret, and its pod is not given the key.
        secrets = SecretBox(Keyring({"unused": os.urandom(32)}, "unused"))
    else:
        secrets = SecretBox.from_settings(settings)
    return AppContext(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        secrets=secrets,
        policy=AddressPolicy(settings.worker_allow_networks),
    )


def build_consumer(ctx: AppContext) -> EventConsumer:
    s = ctx.settings
    return EventConsumer(
        service="revocation-worker",
        bootstrap=s.kafka_bootstrap,
        group_id=s.worker_consumer_group,
        # One consumer (one group, one join) for both topics: the handler decodes each by its topic.
        topics=[s.kafka_consent_topic, s.kafka_license_topic],
        handler=IntakeHandler(ctx.session_factory, license_topic=s.kafka_license_topic),
        partitions=s.kafka_topic_partitions,
        replication_factor=s.kafka_replication_factor,
        fetch_max_wait_ms=s.worker_consumer_fetch_max_wait_ms,
        processed_model=ProcessedEvent,
        processed_retention=dt.timedelta(hours=s.processed_events_retention_hours),
        event_types=(
            *payload_types(consent_events_pb2.ConsentEvent),
            *payload_types(license_events_pb2.LicenseEvent),
        ),
    )


def build_relay(ctx: AppContext) -> OutboxRelay:
    return OutboxRelay.from_settings(
        ctx.settings,
        ctx.engine,
        Outbox,
        log_model=OutboxLog,
        service="revocation-worker",
        topics=[ctx.settings.kafka_notice_topic],
    )


class Worker:
    def __init__(
        self, ctx: AppContext, *, consume: bool = True, relay: bool = True, role: Role = "all"
    ) -> None:
        self.ctx = ctx
        self.role = role
        self.intake = role in ("all", "intake")
        self.delivery = role in ("all", "delivery")
        self.pg = ctx.engine.dialect.name == "postgresql"
        self.consumer = build_consumer(ctx) if consume and self.intake else None
        self.relay = build_relay(ctx) if relay and self.intake else None
        # In one process the resolver wakes the delivery loop directly; the delivery role is
        # woken by NOTIFY (PostgreSQL) or polls (SQLite).
        self.deliverer = Deliverer(ctx, signalled=role == "all")
        self.registry = RegistryClient(ctx) if self.intake else None
        # The consumer wakes the resolver after each committed batch; the resolver then only falls
        # back to `worker_idle_wake_seconds` (retried registry lookups).
        if self.consumer is not None:
            self.consumer.on_batch = self._on_consumer_batch
        self._threads: list[threading.Thread] = []
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._resolver_wake: asyncio.Event | None = None
        # The resolver/sweeper loop's, ticked on every pass and every wait (`_periodic`).
        self.resolver_heartbeat = Heartbeat("resolver")

    @property
    def heartbeats(self) -> list[Heartbeat]:
        """Every loop this process runs (its role's), for /healthz."""
        out = [loop.heartbeat for loop in (self.consumer, self.relay) if loop is not None]
        if self.intake:
            out.append(self.resolver_heartbeat)
        if self.delivery:
            out.append(self.deliverer.heartbeat)
        return out

    # -- wakeups (thread-safe) -----------------------------------------------------

    def wake_resolver(self) -> None:
        self._set_threadsafe(self._resolver_wake)

    def wake_delivery(self) -> None:
        if self.delivery:
            self.deliverer.wake()
        elif self.pg:
            self._notify_delivery()

    def _set_threadsafe(self, event: asyncio.Event | None) -> None:
        loop = self._loop
        if loop is None or event is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(event.set)

    def _on_consumer_batch(self, n: int) -> None:
        if n:
            self.wake_resolver()

    def _notify_delivery(self) -> None:
        try:
            with self.ctx.engine.connect() as conn:
                conn.exec_driver_sql(f"NOTIFY {DELIVERY_CHANNEL}")
                conn.commit()
        except Exception as exc:  # the delivery role's fallback timer still finds the work
            log.warning("NOTIFY %s failed: %s: %s", DELIVERY_CHANNEL, type(exc).__name__, exc)

    def _on_listening(self, listening: bool) -> None:
        # Delivery role on PostgreSQL: woken by NOTIFY while listening, polling while not.
        self.deliverer.signalled = listening

    # -- loops ---------------------------------------------------------------------

    async def _periodic(self, stop: asyncio.Event) -> None:
        assert self._resolver_wake is not None and self.registry is not None
        wake = self._resolver_wake
        s = self.ctx.settings
        registry = self.registry
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self.resolver_heartbeat.tick()
            wake.clear()
            n = rechecked = 0
            try:
                n = await asyncio.to_thread(resolve_due, self.ctx, registry, RESOLVE_BATCH)
                if n:
                    REVOCATIONS_RESOLVED.inc(n)
                # After the resolutions: a recheck waits for its revocation to be resolved, and one
                # resolved just now is settled in this same pass.
                late = await asyncio.to_thread(recheck_due, self.ctx, registry, RECHECK_BATCH)
                rechecked = late.claimed
                if late.notices:
                    LATE_NOTICES.inc(late.notices)
                if n or late.notices:
                    if self.delivery:
                        self.wake_delivery()
                    else:
                        await asyncio.to_thread(self.wake_delivery)
                if loop.time() - last_sweep > s.worker_sweep_interval_seconds:
                    last_sweep = loop.time()
                    await asyncio.to_thread(self._sweep)
            except Exception as exc:
                log.warning("resolver/sweeper pass failed: %s: %s", type(exc).__name__, exc)
            if n >= RESOLVE_BATCH or rechecked >= RECHECK_BATCH:
                continue  # more are ready
            signalled = self.consumer is not None  # it wakes us after each batch
            longest = s.worker_idle_wake_seconds if signalled else s.worker_poll_interval_seconds
            until_sweep = last_sweep + s.worker_sweep_interval_seconds - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(0.001, min(longest, until_sweep)))

    def _sweep(self) -> None:
        sweep_reminders(self.ctx)
        sweep_overdue(self.ctx)
        # Deliveries left pending to a disabled endpoint (disabled while they were in flight or
        # being created, or before the recorder dead-lettered such backlogs) never hang.
        dead_letter_disabled(self.ctx)
        with self.ctx.session_factory() as session:
            counts = notices_repo.count_by_status(session)
            for status in (
                "pending",
                "delivered",
                "partially_acknowledged",
                "acknowledged",
                "overdue",
                "failed",
            ):
                NOTICES.labels(status).set(counts.get(status, 0))
            DEAD_LETTER_DEPTH.set(dead_letter_repo.count_dead(session))

    async def run_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._resolver_wake = asyncio.Event()
        stop = self._stop
        for name, target in (("consumer", self.consumer), ("relay", self.relay)):
            if target is not None:
                t = threading.Thread(target=target.run, name=f"worker-{name}", daemon=True)
                t.start()
                self._threads.append(t)
        if self.role == "delivery" and self.pg:
            # wake() is idempotent: a burst of notifications is one claim.
            self._listener = Listener(
                libpq_url(self.ctx.engine),
                DELIVERY_CHANNEL,
                self.deliverer.wake,
                on_state=self._on_listening,
                name="worker-listen",
            ).start()

        async def wake_on_stop() -> None:
            await stop.wait()
            if self._resolver_wake is not None:
                self._resolver_wake.set()

        loops = [wake_on_stop()]
        if self.delivery:
            loops.append(self.deliverer.run(stop))
        if self.intake:
            loops.append(self._periodic(stop))
        await asyncio.gather(*loops)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        if self.consumer is not None:
            self.consumer.stop_event.set()
        if self.relay is not None:
            self.relay.stop_event.set()
        self._set_threadsafe(self._stop)

    def join(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.join(timeout=max(0.1, deadline - time.monotonic()))
        if self.registry is not None:
            self.registry.close()


def main(settings: WorkerSettings, role: Role = "all") -> None:
    ctx = build_context(settings, role)
    worker = Worker(ctx, role=role)
    # The delivery role alone uses no Kafka (no client certificate, no route to the brokers).
    bootstrap = settings.kafka_bootstrap if worker.intake else None
    serve_health(settings, worker.heartbeats, database=ctx.engine, bootstrap=bootstrap)
    log.info("worker started (role %s)", role)

    def on_signal(signum: int, frame: object) -> None:
        log.info("stopping on signal %d", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    asyncio.run(worker.run_async())
    worker.join()
    ctx.engine.dispose()
