"""Registry helpers (its fixtures are in tests/registry/conftest.py).

- `new_registry_db` / `make_registry_settings`: a migrated registry database and its settings.
- `Projection`: applies synthetic consent events with the real handler.
- `ConsumerThread`: the registry's consent-topic consumer running in a thread, as `registry consumer`.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registry.config import RegistrySettings
from registry.consumer import build_consumer
from registry.migrate import upgrade
from registry.models import Base
from registry.projection.service import apply_event
from rescind_common.consumer import EventConsumer
from rescind_common.embedded_broker import free_port
from rescind_common.ids import new_id, new_ids
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

from support.helpers import migrated_db

WAIT = 20.0  # seconds: the bound for "eventually"


def new_registry_db(backend: str, pg_database: Callable[[str], str], tmp: Path) -> str:
    return migrated_db(backend, pg_database, tmp, "registry", upgrade)


def make_registry_settings(db_url: str, state_dir: Path, **overrides: Any) -> RegistrySettings:
    values: dict[str, Any] = {
        "registry_database_url": db_url,
        "state_dir": state_dir,
        # No broker unless a test asks for one.
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",
        "registry_db_pool_size": 5,
        # Tests that need the wait for a lagging projection set their own.
        "registry_projection_wait_seconds": 0.3,
        # Tests write checkpoints when they mean to (tests/registry/test_registry_audit.py).
        "audit_checkpoint_interval_seconds": 86400.0,
    }
    values.update(overrides)
    return RegistrySettings(**values)


def _ts(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class Projection:
    """Synthetic consent-topic events (as consent-api would publish them), applied by the real
    handler, one transaction each, as the consumer does."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def apply(self, event: pb.ConsentEvent) -> bool:
        with self.sessions() as session, session.begin():
            return apply_event(session, event)

    @staticmethod
    def event(subject_id: str, **payload: Any) -> pb.ConsentEvent:
        envelope = pb.ConsentEvent(
            event_id=new_id("evt"),
            subject_id=subject_id,
            producer="test",
            occurred_at=_ts(dt.datetime.now(dt.UTC)),
        )
        ((field, message),) = payload.items()
        getattr(envelope, field).CopyFrom(message)
        return envelope

    @staticmethod
    def samples_event(subject_id: str, sample_ids: list[str]) -> pb.ConsentEvent:
        refs = [
            pb.SampleRef(sample_id=s, sha256=uuid.uuid4().hex * 2, kind=pb.SAMPLE_KIND_FACE_IMAGE)
            for s in sample_ids
        ]
        return Projection.event(subject_id, sample_registered=pb.SampleRegistered(samples=refs))

    def samples(self, n: int = 3, subject_id: str | None = None) -> tuple[str, list[str]]:
        """Register `n` samples of a (new) subject; return (subject_id, sample ids)."""
        subject_id = subject_id or new_id("sub")
        ids = new_ids("smp", n)
        self.apply(self.samples_event(subject_id, ids))
        return subject_id, ids

    @staticmethod
    def grant_event(
        subject_id: str,
        sample_ids: list[str],
        purposes: tuple[str, ...] = ("model_training",),
        licensee_id: str | None = None,
        expires_at: dt.datetime | None = None,
        consent_id: str | None = None,
    ) -> pb.ConsentEvent:
        granted = pb.ConsentGranted(
            consent_id=consent_id or new_id("cns"),
            sample_ids=sample_ids,
            purposes=list(purposes),
            licensee_id=licensee_id or "",
            receipt_id=new_id("rcp"),
        )
        if expires_at is not None:
            granted.expires_at.CopyFrom(_ts(expires_at))
        return Projection.event(subject_id, consent_granted=granted)

    def grant(self, subject_id: str, sample_ids: list[str], **kwargs: Any) -> str:
        event = self.grant_event(subject_id, sample_ids, **kwargs)
        self.apply(event)
        return str(event.consent_granted.consent_id)

    @staticmethod
    def revoke_event(
        subject_id: str,
        consent_id: str,
        sample_ids: list[str],
        purposes: list[str],
        *,
        ended: bool,
        trigger: int = pb.REVOCATION_TRIGGER_SUBJECT,
        revocation_id: str | None = None,
        only_licensee_id: str = "",
        chunk: tuple[int, int] = (0, 1),
        consent_count: int = 1,
    ) -> pb.ConsentEvent:
        """`chunk` is (index, count) of this consent's part of the revocation, which withdraws
        `consent_count` consents in all."""
        return Projection.event(
            subject_id,
            consent_revoked=pb.ConsentRevoked(
                revocation_id=revocation_id or new_id("rev"),
                consent_id=consent_id,
                sample_ids=sample_ids,
                consent_ended=ended,
                purposes=purposes,
                trigger=trigger,
                chunk_index=chunk[0],
                chunk_count=chunk[1],
                consent_count=consent_count,
                only_licensee_id=only_licensee_id,
            ),
        )

    def revoke(
        self, subject_id: str, consent_id: str, sample_ids: list[str], purposes: list[str], **kw: Any
    ) -> str:
        event = self.revoke_event(subject_id, consent_id, sample_ids, purposes, **kw)
        self.apply(event)
        return str(event.consent_revoked.revocation_id)


def snapshot(sessions: sessionmaker[Session]) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every registry table (sorted), to compare states before and after."""
    out: dict[str, list[tuple[str, ...]]] = {}
    with sessions() as session:
        for name, table in sorted(Base.metadata.tables.items()):
            out[name] = sorted(tuple(map(repr, row)) for row in session.execute(select(table)))
    return out


class ConsumerThread:
    """The registry consumer (`build_consumer`) running `run()` in a thread, as `registry consumer` does."""

    def __init__(self, settings: RegistrySettings, group_id: str | None = None, **overrides: Any) -> None:
        self.consumer: EventConsumer = build_consumer(
            settings, group_id=group_id or f"registry-test-{uuid.uuid4().hex[:8]}", **overrides
        )
        self.thread = threading.Thread(target=self.consumer.run, name="test-registry-consumer", daemon=True)

    def start(self) -> ConsumerThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.consumer.stop_event.set()
        self.thread.join(timeout=45)
        assert not self.thread.is_alive(), "registry consumer thread did not stop"

    def __enter__(self) -> ConsumerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
