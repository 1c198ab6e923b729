"""`revocation-worker worker`: the consumer, the resolver, the delivery loop, the overdue sweeper
and the outbox relay, in one process. Stops on SIGTERM/SIGINT, committing consumer offsets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import threading

from rescind_common.consumer import EventConsumer
from rescind_common.db import make_engine, make_session_factory
from rescind_common.outbox import OutboxRelay
from revocation_worker.config import WorkerSettings
from revocation_worker.context import AppContext
from revocation_worker.db import Outbox
from revocation_worker.delivery.loop import Deliverer
from revocation_worker.endpoints.urlguard import AddressPolicy
from revocation_worker.intake.handler import ConsentEventHandler
from revocation_worker.intake.resolver import RegistryClient, resolve_due
from revocation_worker.metrics import DEAD_LETTER_DEPTH, NOTICES, REVOCATIONS_RESOLVED
from revocation_worker.notices import repository as notices_repo
from revocation_worker.notices.service import sweep_overdue
from revocation_worker.secrets import SecretBox

log = logging.getLogger(__name__)


def build_context(settings: WorkerSettings) -> AppContext:
    engine = make_engine(settings.worker_database_url, pool_size=settings.worker_db_pool_size)
    return AppContext(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        secrets=SecretBox.from_settings(settings),
        policy=AddressPolicy(settings.worker_allow_networks),
    )


def build_consumer(ctx: AppContext) -> EventConsumer:
    s = ctx.settings
    return EventConsumer(
        service="revocation-worker",
        bootstrap=s.kafka_bootstrap,
        group_id=s.worker_consumer_group,
        topics=[s.kafka_consent_topic],
        handler=ConsentEventHandler(ctx.session_factory),
        partitions=s.kafka_topic_partitions,
        replication_factor=s.kafka_replication_factor,
    )


def build_relay(ctx: AppContext) -> OutboxRelay:
    s = ctx.settings
    return OutboxRelay(
        ctx.engine,
        Outbox,
        service="revocation-worker",
        bootstrap=s.kafka_bootstrap,
        topics=[s.kafka_notice_topic],
        partitions=s.kafka_topic_partitions,
        replication_factor=s.kafka_replication_factor,
        retention=dt.timedelta(hours=s.outbox_retention_hours),
    )


class Worker:
    def __init__(self, ctx: AppContext, *, consume: bool = True, relay: bool = True) -> None:
        self.ctx = ctx
        self.consumer = build_consumer(ctx) if consume else None
        self.relay = build_relay(ctx) if relay else None
        self.deliverer = Deliverer(ctx)
        self.registry = RegistryClient(ctx)
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def _periodic(self, stop: asyncio.Event) -> None:
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                n = await asyncio.to_thread(resolve_due, self.ctx, self.registry)
                if n:
                    REVOCATIONS_RESOLVED.inc(n)
                if loop.time() - last_sweep > self.ctx.settings.worker_sweep_interval_seconds:
                    last_sweep = loop.time()
                    await asyncio.to_thread(self._sweep)
            except Exception as exc:
                log.warning("resolver/sweeper pass failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.ctx.settings.worker_poll_interval_seconds)

    def _sweep(self) -> None:
        sweep_overdue(self.ctx)
        with self.ctx.session_factory() as session:
            counts = notices_repo.count_by_status(session)
            for status in ("pending", "delivered", "acknowledged", "overdue", "failed"):
                NOTICES.labels(status).set(counts.get(status, 0))
            DEAD_LETTER_DEPTH.set(notices_repo.count_dead(session))

    async def run_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for name, target in (("consumer", self.consumer), ("relay", self.relay)):
            if target is not None:
                t = threading.Thread(target=target.run, name=f"worker-{name}", daemon=True)
                t.start()
                self._threads.append(t)
        await asyncio.gather(self.deliverer.run(self._stop), self._periodic(self._stop))

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop_event.set()
        if self.relay is not None:
            self.relay.stop_event.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float = 20) -> None:
        for t in self._threads:
            t.join(timeout=timeout)
        self.registry.close()


def main(settings: WorkerSettings) -> None:
    ctx = build_context(settings)
    worker = Worker(ctx)

    def on_signal(signum: int, frame: object) -> None:
        log.info("stopping on signal %d", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    asyncio.run(worker.run_async())
    worker.join()
    ctx.engine.dispose()
