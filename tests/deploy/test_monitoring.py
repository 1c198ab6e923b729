"""What the dashboards and alerts read: the outbox backlog gauges, the revocations counter (counted
only on commit), consumer lag per partition, and every alert explained in the README."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from consent_api.config import ConsentSettings
from consent_api.db import Outbox
from consent_api.metrics import REVOCATIONS, count_revocation
from consent_api.migrate import upgrade as consent_upgrade
from consent_api.relay import build_relay
from rescind_common.consumer import CONSUMER_LAG, EventConsumer
from rescind_common.db import make_engine, utcnow
from rescind_common.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE

from support.k8s import (
    REPO,
    alert_rules,
)


def test_outbox_backlog_gauges(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'consent.db'}"
    consent_upgrade(url)
    relay = build_relay(
        ConsentSettings(consent_database_url=url, state_dir=tmp_path, kafka_bootstrap="127.0.0.1:1")
    )
    assert relay.observe_backlog() == (0, 0.0)
    topic = relay.topics[0]
    with Session(relay.engine) as session, session.begin():
        for age in (120, 5):
            session.add(
                Outbox(
                    event_id=uuid.uuid4().hex,
                    topic=topic,
                    key="k",
                    event_type="t",
                    payload=b"",
                    created_at=utcnow() - dt.timedelta(seconds=age),
                )
            )
        session.add(
            Outbox(event_id=uuid.uuid4().hex, topic="another.topic", key="k", event_type="t", payload=b"")
        )
    count, age = relay.observe_backlog()
    assert count == 2 and 119 < age < 180
    assert OUTBOX_BACKLOG.labels("consent-api")._value.get() == 2
    assert 119 < OUTBOX_OLDEST_AGE.labels("consent-api")._value.get() < 180
    with Session(relay.engine) as session, session.begin():
        session.execute(update(Outbox).values(published_at=utcnow()))
    assert relay.observe_backlog() == (0, 0.0)
    relay.engine.dispose()


def test_revocations_count_only_when_committed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    before = REVOCATIONS.labels("erasure")._value.get()
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        count_revocation(session, "erasure")
        session.rollback()
        session.execute(text("SELECT 1"))
        session.commit()
        assert REVOCATIONS.labels("erasure")._value.get() == before
        session.execute(text("SELECT 1"))
        count_revocation(session, "erasure")
        session.commit()
    assert REVOCATIONS.labels("erasure")._value.get() == before + 1
    engine.dispose()


def test_consumer_lag_forgets_partitions_it_lost() -> None:
    service, topic = f"lag-test-{uuid.uuid4().hex[:6]}", "t"
    consumer = EventConsumer(
        service=service, bootstrap="127.0.0.1:1", group_id="g", topics=[topic], handler=print
    )

    class Fake:
        def __init__(self, partitions: list[int]) -> None:
            self.parts = {TopicPartition(topic, p) for p in partitions}

        def assignment(self) -> set[TopicPartition]:
            return self.parts

        def highwater(self, tp: TopicPartition) -> int:
            return 10

        def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
            return 4

    def series() -> dict[str, float]:
        return {
            s.labels["partition"]: s.value
            for m in CONSUMER_LAG.collect()
            for s in m.samples
            if s.labels["service"] == service
        }

    consumer._observe_lag(Fake([0, 1]))  # type: ignore[arg-type]
    assert series() == {"0": 6, "1": 6}
    consumer._observe_lag(Fake([1]))  # type: ignore[arg-type]  # partition 0 went to another member
    assert series() == {"1": 6}


def test_every_alert_is_explained_in_the_operations_doc(rendered: dict[str, list[dict[str, Any]]]) -> None:
    readme = (REPO / "README.md").read_text()
    assert readme.index("## Deploy on Kubernetes") < readme.index("## Architecture")
    operations = (REPO / "docs" / "operations.md").read_text()
    assert "## Deploy on Kubernetes" in operations
    section = operations.split("## Deploy on Kubernetes", 1)[1].split("\n## ", 1)[0]
    for rule in alert_rules(rendered["prod"]):
        assert rule["alert"] in section, f"docs/operations.md does not explain {rule['alert']}"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    for stage in ("platform", "config", "migrate", "apps"):
        assert f"rescind.io/stage={stage}" in section
