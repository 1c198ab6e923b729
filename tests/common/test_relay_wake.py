"""The outbox relay wakes when a row commits: NOTIFY on PostgreSQL (a trigger on each service's outbox),
its short poll on SQLite. The fallback poll is set to 30 s and the broker check to 60 s here, so on
PostgreSQL only a notification explains a row published within 10 s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from consent_api.main import create_app
from rescind_common.db import make_engine, utcnow
from rescind_common.outbox import OUTBOX_CHANNEL, OutboxRelay

from support.helpers import make_settings, register
from support.kafka import RelayThread, for_key, outbox_rows, read_topic, unique_topic
from support.wait import wait_until

FALLBACK = 30.0
PROMPT = 10.0  # well under FALLBACK: "published before the fallback poll could have found it"


@pytest.fixture
def wake_settings(db_url: str, state_dir: Any, broker: Any) -> Any:
    return make_settings(
        db_url,
        state_dir,
        kafka_bootstrap=broker.bootstrap,
        kafka_consent_topic=unique_topic("wake"),
        outbox_fallback_poll_seconds=FALLBACK,
    )


@pytest.fixture
def client(wake_settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(wake_settings)) as c:
        yield c


def _published(relay: OutboxRelay, topic: str, n: int) -> bool:
    rows = outbox_rows(relay.engine, topic)
    return len(rows) == n and all(r.published_at is not None for r in rows)


def _settle(relay: OutboxRelay) -> None:
    """Wait until the relay is past its first pass (and, on PostgreSQL, listening), then a little
    longer, so that it is asleep when the test commits."""
    if relay.engine.dialect.name == "postgresql":
        wait_until(lambda: relay.listening, what="relay listening")
    wait_until(lambda: relay._last_topic_check > 0, what="first pass")
    time.sleep(1.0)


def test_committed_rows_are_published_promptly(
    client: TestClient, wake_settings: Any, broker: Any, seller: dict[str, str]
) -> None:
    topic = wake_settings.kafka_consent_topic
    with RelayThread(wake_settings, topic_check_interval=60.0) as relay:
        _settle(relay)
        for n in (1, 2, 3):  # each commit, not only the wake-up after LISTEN
            register(client, seller)
            wait_until(lambda n=n: _published(relay, topic, n), timeout=PROMPT, what=f"row {n} published")
            time.sleep(0.5)
        assert relay.listening == (relay.engine.dialect.name == "postgresql")
    key = outbox_rows(relay.engine, topic)[0].key
    assert len(for_key(read_topic(broker.bootstrap, topic, lambda rs: len(for_key(rs, key)) >= 3), key)) == 3


# LISTEN/NOTIFY is PostgreSQL's: SQLite's relay has no listen connection to lose.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_relay_reconnects_when_its_listen_connection_is_killed(
    db_url: str, client: TestClient, wake_settings: Any, seller: dict[str, str]
) -> None:
    assert db_url.startswith("postgresql")
    topic = wake_settings.kafka_consent_topic
    with RelayThread(wake_settings, topic_check_interval=60.0) as relay:
        _settle(relay)
        pid = relay.listen_backend_pid
        assert pid is not None
        with psycopg.connect(db_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        # Committed while the relay has no LISTEN connection: its short poll, or the wake-up after
        # LISTEN again, finds it; the 30 s fallback never has to.
        register(client, seller)
        wait_until(lambda: _published(relay, topic, 1), timeout=PROMPT, what="row published while unlistened")
        wait_until(
            lambda: relay.listening and relay.listen_backend_pid not in (None, pid), what="listening again"
        )
        time.sleep(1.0)
        # And after the reconnection, notifications wake it again.
        register(client, seller)
        wait_until(lambda: _published(relay, topic, 2), timeout=PROMPT, what="row published after reconnect")


SERVICES = ["consent_api", "registry", "revocation_worker"]


@pytest.mark.parametrize("service", SERVICES)
def test_outbox_trigger_notifies_on_commit_once_per_transaction(
    service: str, pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    """Every service's migrations install the trigger: an insert notifies on commit only, once per
    transaction however many rows and statements, never on rollback."""
    migrate = __import__(f"{service}.migrate", fromlist=["migrate"])
    outbox = __import__(f"{service}.db", fromlist=["db"]).Outbox
    url = pg_database(f"notify_{service}")
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=1)

    def row(i: int) -> dict[str, Any]:
        return {
            "event_id": f"evt_{service}_{i}",
            "topic": "t",
            "key": "k",
            "event_type": "x",
            "payload": b"",
            "created_at": utcnow(),
        }

    try:
        with psycopg.connect(url, autocommit=True) as listen:
            listen.execute(f"LISTEN {OUTBOX_CHANNEL}")
            with engine.connect() as conn:
                conn.execute(insert(outbox), [row(1), row(2)])
                conn.execute(insert(outbox), [row(3)])
                assert list(listen.notifies(timeout=0.5)) == [], "nothing before the commit"
                conn.commit()
            got = list(listen.notifies(timeout=2.0))
            assert [n.channel for n in got] == [OUTBOX_CHANNEL]
            with engine.connect() as conn:
                conn.execute(insert(outbox), [row(4)])
                conn.rollback()
            assert list(listen.notifies(timeout=1.0)) == []
            # The operators' switch for databases whose write rate the NOTIFY lock would limit.
            with engine.connect() as conn:
                conn.exec_driver_sql("SET LOCAL rescind.outbox_notify = 'off'")
                conn.execute(insert(outbox), [row(5)])
                conn.commit()
            assert list(listen.notifies(timeout=1.0)) == []
    finally:
        engine.dispose()
