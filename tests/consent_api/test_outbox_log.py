"""The relay remembers, in its own database, what it knows of the broker's log (`outbox_log`), so
that a relay restarted together with an empty broker still re-publishes what the old broker lost.

The journey behind it: `make run`, a burst of revocations, Ctrl-C (or a crash), `make run` again.
The embedded broker starts empty, a consumer subscribes before the relay looks and the broker
creates the topic for it; a relay that knew the old topic id only in memory found the topic
present and replayed nothing, so the tail of the burst never reached a buyer.

Real broker (Tansu), PostgreSQL and SQLite (the `db_url` fixture).
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi.testclient import TestClient
from kafka import KafkaConsumer
from sqlalchemy import select, update

from consent_api.db import OutboxLog
from consent_api.main import create_app
from rescind_common.embedded_broker import free_port
from rescind_common.metrics import OUTBOX_REPLAYED

from support.helpers import grant, make_settings, register
from support.kafka import RelayThread, for_key, has_types, own_broker, read_topic, unique_topic
from support.wait import wait_until
from test_events import Seller

# -- the rule, as a function of values ---------------------------------------------------------------


# -- with a real broker ------------------------------------------------------------------------------


def _recorded(relay: Any, topic: str) -> Any:
    with relay.engine.connect() as conn:
        return conn.execute(select(OutboxLog).where(OutboxLog.topic == topic)).first()


def test_relay_restarted_with_an_empty_broker_republishes_what_the_old_one_lost(
    db_url: str, state_dir: Any, token: Any, tmp_path: Any
) -> None:
    """Relay and broker stop together; the new broker is empty, a consumer subscribes first (Tansu
    then creates the topic), and only then does a new relay start: the seller's events still reach
    the new log, each once per replay, in order."""
    port = free_port()
    settings = make_settings(
        db_url, state_dir, kafka_bootstrap=f"127.0.0.1:{port}", kafka_consent_topic=unique_topic("restart")
    )
    topic = settings.kafka_consent_topic
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(TestClient(create_app(settings)))
        seller = Seller(client, token)
        consent = grant(client, seller.headers, register(client, seller.headers, n=2))
        r = client.post(f"/v1/consents/{consent['id']}/revoke", headers=seller.headers, json={})
        assert r.status_code == 202, r.text
        key = seller.subject_id
        wanted = has_types(key, "sample_registered", "consent_granted", "consent_revoked")

        with own_broker(port, tmp_path / "broker1.log"), RelayThread(settings) as relay:
            first = for_key(read_topic(f"127.0.0.1:{port}", topic, wanted), key)
            wait_until(lambda: relay.backlog() == 0, what="everything marked published")
            recorded = _recorded(relay, topic)
            assert recorded is not None and recorded.topic_id, "the relay recorded the topic's id"
        # Both gone: the relay and the broker with every record it held.

        with own_broker(port, tmp_path / "broker2.log"):
            subscriber = KafkaConsumer(
                bootstrap_servers=f"127.0.0.1:{port}",
                group_id=f"g-{topic}",
                allow_auto_create_topics=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
            )
            try:
                subscriber.subscribe([topic])
                subscriber.poll(timeout_ms=1000)
                # What a consumer's subscription does to Tansu: the topic is back, empty, before any
                # relay runs. Were this ever not so, the test would not show what it claims.
                wait_until(lambda: topic in subscriber.topics(), what="the topic recreated by a subscriber")
            finally:
                subscriber.close()
            replayed_before = OUTBOX_REPLAYED.labels("consent-api")._value.get()
            with RelayThread(settings) as relay:
                again = for_key(read_topic(f"127.0.0.1:{port}", topic, wanted, timeout=40), key)
                assert [rec.event.event_id for rec in again] == [rec.event.event_id for rec in first]
                assert OUTBOX_REPLAYED.labels("consent-api")._value.get() >= replayed_before + 3
                wait_until(lambda: relay.backlog() == 0, what="the replay marked published")
                now = _recorded(relay, topic)
                assert now.topic_id and now.topic_id != recorded.topic_id, "the new log's id recorded"


def test_relay_restarted_with_the_same_broker_replays_nothing(
    db_url: str, state_dir: Any, token: Any, broker: Any
) -> None:
    """Many publishes of every size, topic checks in between, a relay restart: the offsets the
    broker reports never read as a lost log (a false alarm would re-publish the whole retention)."""
    settings = make_settings(
        db_url, state_dir, kafka_bootstrap=broker.bootstrap, kafka_consent_topic=unique_topic("steady")
    )
    topic = settings.kafka_consent_topic
    replayed_before = OUTBOX_REPLAYED.labels("consent-api")._value.get()
    with TestClient(create_app(settings)) as client:
        seller = Seller(client, token)
        for round_ in range(2):
            with RelayThread(settings, topic_check_interval=0.05) as relay:
                for n in (1, 3, 40, 1, 120, 2):
                    register(client, seller.headers, n=n)
                    wait_until(lambda relay=relay: relay.backlog() == 0, what=f"round {round_}: published")
                wait_until(
                    lambda relay=relay: _recorded(relay, topic).floors,
                    what="the relay recording how far the log reached",
                )
    assert OUTBOX_REPLAYED.labels("consent-api")._value.get() == replayed_before


def test_a_log_shorter_than_what_was_published_is_replayed(
    db_url: str, state_dir: Any, token: Any, broker: Any
) -> None:
    """The same topic id but fewer records than the relay published (a broker without topic ids
    restored from an old backup, an unclean leader election): the retained events go out again."""
    settings = make_settings(
        db_url, state_dir, kafka_bootstrap=broker.bootstrap, kafka_consent_topic=unique_topic("short")
    )
    topic = settings.kafka_consent_topic
    with TestClient(create_app(settings)) as client, RelayThread(settings, topic_check_interval=0.1) as relay:
        seller = Seller(client, token)
        register(client, seller.headers, n=2)
        key = seller.subject_id
        before = for_key(read_topic(broker.bootstrap, topic, has_types(key, "sample_registered")), key)
        wait_until(lambda: _recorded(relay, topic) and _recorded(relay, topic).floors, what="floors recorded")
        replayed_before = OUTBOX_REPLAYED.labels("consent-api")._value.get()
        # The log is said to have reached far beyond what the broker holds.
        with relay.engine.begin() as conn:
            conn.execute(update(OutboxLog).where(OutboxLog.topic == topic).values(floors={"0": 10**9}))
        wait_until(
            lambda: OUTBOX_REPLAYED.labels("consent-api")._value.get() > replayed_before,
            what="the relay finding the log short",
        )
        after = for_key(
            read_topic(broker.bootstrap, topic, lambda rs: len(for_key(rs, key)) >= 2 * len(before)), key
        )
        assert [r.event.event_id for r in after] == [r.event.event_id for r in before] * 2
        wait_until(lambda: _recorded(relay, topic).floors != {"0": 10**9}, what="the shorter log recorded")
