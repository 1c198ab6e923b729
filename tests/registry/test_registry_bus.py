"""consent-api -> outbox -> relay -> real broker (Tansu) -> registry consumer -> projection.

A seller acts through consent-api; the registry learns about it only from the consent topic.
Runs on PostgreSQL and on SQLite (both services on the same backend). The module has its own
topic with one partition, so that "a later event was applied" means "every earlier one was too".
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consent_api.main import create_app as create_consent_app
from consent_api.migrate import upgrade as upgrade_consent
from consent_api.relay import build_relay
from registry.config import RegistrySettings
from registry.consumer import PROJECTED
from registry.main import create_app as create_registry_app
from registry.projection.models import ProcessedEvent, ProjectedConsent, ProjectedSample
from rescind_common.consumer import dead_letter_topic
from rescind_common.db import make_engine, make_session_factory
from rescind_common.kafka import ensure_topics, make_admin, make_producer
from rescind_common.outbox import OutboxRelay

from support.helpers import assert_problem, auth, grant, make_settings, migrated_db, register
from support.kafka import read_topic
from support.registry import ConsumerThread, new_registry_db, snapshot
from support.wait import wait_until

TRAINING = "model_training"


@dataclass
class Stack:
    consent: TestClient
    registry: TestClient
    settings: RegistrySettings
    sessions: sessionmaker[Session]
    consumer: ConsumerThread
    operator: dict[str, str]
    token: Any

    def seller(self) -> dict[str, str]:
        return auth(self.token("subject"))

    def licensee(self, name: str = "Acme AI") -> tuple[str, dict[str, str]]:
        r = self.registry.post("/v1/licensees", json={"name": name}, headers=self.operator)
        assert r.status_code == 201, r.text
        lic = str(r.json()["id"])
        return lic, auth(self.token("licensee", sub=lic))

    def license(self, lic: str, consent_id: str, sample_ids: list[str]) -> dict[str, Any]:
        body = {"licensee_id": lic, "consent_id": consent_id, "purpose": TRAINING, "sample_ids": sample_ids}
        r = self.registry.post("/v1/licenses", json=body, headers=self.operator)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def get(self, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        r = self.registry.get(path, headers=headers or self.operator)
        assert r.status_code == 200, r.text
        return dict(r.json())


class RelayThread:
    def __init__(self, relay: OutboxRelay) -> None:
        self.relay = relay
        self.thread = threading.Thread(target=relay.run, name="test-consent-relay", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.relay.stop_event.set()
        self.thread.join(timeout=45)
        self.relay.engine.dispose()
        assert not self.thread.is_alive(), "relay thread did not stop"


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def stack(
    request: pytest.FixtureRequest,
    pg_database: Any,
    tmp_path_factory: pytest.TempPathFactory,
    state_dir: Path,
    broker: Any,
    token: Any,
) -> Iterator[Stack]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"registry-bus-{backend}")
    consent_url = migrated_db(backend, pg_database, tmp, "consent", upgrade_consent)
    topic = f"test.registry.{uuid.uuid4().hex[:12]}"
    bus = {"kafka_bootstrap": broker.bootstrap, "kafka_consent_topic": topic, "kafka_topic_partitions": 1}
    consent_settings = make_settings(consent_url, state_dir, **bus)
    registry_settings = RegistrySettings(
        registry_database_url=new_registry_db(backend, pg_database, tmp),
        state_dir=state_dir,
        registry_db_pool_size=5,
        # The first license of a run waits for the consumer's first group join too.
        registry_projection_wait_seconds=15.0,
        **bus,
    )
    engine = make_engine(registry_settings.registry_database_url, pool_size=2)
    relay = RelayThread(build_relay(consent_settings))
    consumers = [ConsumerThread(registry_settings).start()]
    try:
        with (
            TestClient(create_consent_app(consent_settings)) as consent,
            TestClient(create_registry_app(registry_settings)) as registry,
        ):
            made = Stack(
                consent=consent,
                registry=registry,
                settings=registry_settings,
                sessions=make_session_factory(engine),
                consumer=consumers[0],
                operator=auth(token("operator", sub="ops-test")),
                token=token,
            )
            yield made
            consumers.append(made.consumer)  # a test may have replaced it
    finally:
        for consumer in consumers:
            consumer.stop()
        relay.stop()
        engine.dispose()


def test_revocation_through_consent_api_revokes_the_licenses(stack: Stack) -> None:
    lic, buyer = stack.licensee()
    seller = stack.seller()
    samples = register(stack.consent, seller, n=3)
    consent = grant(stack.consent, seller, samples, licensee_id=lic)
    # Right after the grant: the registry waits for its projection to catch up.
    license = stack.license(lic, consent["id"], samples)
    model = stack.registry.post(
        "/v1/models",
        json={
            "name": "voice-clone",
            "version": "1",
            "shards": [{"shard_id": "s0", "license_ids": [license["id"]]}],
        },
        headers=buyer,
    )
    assert model.status_code == 201, model.text

    # The seller withdraws one sample: the license loses it, and stays active for the others.
    r = stack.consent.post(
        f"/v1/consents/{consent['id']}/revoke", json={"sample_ids": [samples[0]]}, headers=seller
    )
    assert r.status_code == 202, r.text
    revocation_id = r.json()["id"]
    wait_until(
        lambda: stack.get(f"/v1/licenses/{license['id']}", buyer)["revoked_sample_count"] == 1,
        what="the withdrawn sample to reach the registry",
    )
    assert stack.get(f"/v1/licenses/{license['id']}", buyer)["status"] == "active"
    withdrawn = stack.get(f"/v1/licenses/{license['id']}/samples", buyer)["items"]
    assert {s["sample_id"]: s["revocation_id"] for s in withdrawn if s["revoked_at"]} == {
        samples[0]: revocation_id
    }

    # ... then everything: the license is revoked.
    r = stack.consent.post("/v1/revocations", json={"scope": "all"}, headers=seller)
    assert r.status_code == 202, r.text
    wait_until(
        lambda: stack.get(f"/v1/licenses/{license['id']}", buyer)["status"] == "revoked",
        what="the license to be revoked",
    )
    # The buyer still holds the samples until it confirms deletion; the model is named with its shard.
    held = stack.registry.post("/v1/holders", json={"sample_ids": samples}, headers=stack.operator)
    (holder,) = held.json()["holders"]
    assert holder["licensee_id"] == lic and [x["status"] for x in holder["licenses"]] == ["revoked"]
    assert [(m["model_id"], m["shard_ids"]) for m in holder["models"]] == [(model.json()["id"], ["s0"])]
    # A revoked license backs no new model, and the consent licenses nothing more.
    r = stack.registry.post(
        "/v1/models",
        json={"name": "voice-clone", "version": "2", "license_ids": [license["id"]]},
        headers=buyer,
    )
    assert_problem(r, 409, "body.license_ids[0]")
    body = {"licensee_id": lic, "consent_id": consent["id"], "purpose": TRAINING, "sample_ids": samples[1:]}
    assert_problem(
        stack.registry.post("/v1/licenses", json=body, headers=stack.operator), 409, "body.consent_id"
    )


def test_readiness_covers_database_and_broker(stack: Stack) -> None:
    r = stack.registry.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "kafka": "ok"}


def test_poison_message_goes_to_the_dead_letter_topic_and_the_projection_goes_on(stack: Stack) -> None:
    topic = stack.settings.kafka_consent_topic
    admin = make_admin(stack.settings.kafka_bootstrap, "test-admin")
    try:
        ensure_topics(admin, [topic], partitions=1, replication_factor=1)
    finally:
        admin.close()
    garbage = b"\xff\xff not a ConsentEvent " + uuid.uuid4().bytes
    producer = make_producer(stack.settings.kafka_bootstrap, "test-poison")
    try:
        producer.send(topic, key=b"poison", value=garbage).get(timeout=10)
    finally:
        producer.close(timeout=5)

    # A grant published after the poison is still applied (one partition: it comes after it).
    lic, _ = stack.licensee()
    seller = stack.seller()
    samples = register(stack.consent, seller, n=1)
    consent = grant(stack.consent, seller, samples, licensee_id=lic)
    assert stack.license(lic, consent["id"], samples)["status"] == "active"

    dlq = dead_letter_topic(topic, "registry")
    records = read_topic(stack.settings.kafka_bootstrap, dlq, lambda rs: any(r.value == garbage for r in rs))
    (dead,) = [r for r in records if r.value == garbage]
    headers = dict(dead.headers)
    assert headers["dlq-original-topic"] == topic.encode() and b"PoisonMessage" in headers["dlq-error"]


def test_projection_survives_a_consumer_restart_without_double_applying(stack: Stack) -> None:
    lic, buyer = stack.licensee()
    seller = stack.seller()
    samples = register(stack.consent, seller, n=2)
    consent = grant(stack.consent, seller, samples, licensee_id=lic)
    license = stack.license(lic, consent["id"], samples)
    r = stack.consent.post(
        f"/v1/consents/{consent['id']}/revoke", json={"sample_ids": [samples[1]]}, headers=seller
    )
    assert r.status_code == 202, r.text
    wait_until(lambda: stack.get(f"/v1/licenses/{license['id']}", buyer)["revoked_sample_count"] == 1)

    def processed() -> int:
        with stack.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0)

    def duplicates() -> float:
        return sum(
            sample.value
            for metric in PROJECTED.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels.get("outcome") == "duplicate"
        )

    stack.consumer.stop()
    before, seen, dups = snapshot(stack.sessions), processed(), duplicates()
    assert seen >= 3  # a registration, a grant and a revocation at least

    # A new consumer group reads the whole topic again from the beginning, as after a crash
    # between a transaction and its offset commit, for every record at once.
    stack.consumer = ConsumerThread(stack.settings).start()
    marker = register(stack.consent, seller, n=1)[0]

    def marker_applied() -> bool:
        with stack.sessions() as session:
            return session.get(ProjectedSample, marker) is not None

    wait_until(marker_applied, what="the new consumer to reach the end of the topic")
    after = snapshot(stack.sessions)
    assert processed() == seen + 1  # the marker's event, nothing else
    assert duplicates() - dups >= seen
    after["projected_samples"] = [row for row in after["projected_samples"] if repr(marker) not in row]
    after["processed_events"] = [
        row for row in after["processed_events"] if row in before["processed_events"]
    ]
    assert after == before
    with stack.sessions() as session:
        assert session.get(ProjectedConsent, consent["id"]) is not None
    assert stack.get(f"/v1/licenses/{license['id']}", buyer)["revoked_sample_count"] == 1


def test_withdrawn_content_cannot_be_licensed_again_through_another_subject(stack: Stack) -> None:
    lic, buyer = stack.licensee()
    first = stack.seller()
    (sample,) = register(stack.consent, first, n=1)
    content = stack.consent.get(f"/v1/samples/{sample}", headers=first).json()["sha256"]
    consent = grant(stack.consent, first, [sample], licensee_id=lic)
    license = stack.license(lic, consent["id"], [sample])
    assert stack.consent.post(f"/v1/consents/{consent['id']}/revoke", headers=first).status_code == 202
    wait_until(
        lambda: stack.get(f"/v1/licenses/{license['id']}", buyer)["status"] == "revoked",
        what="the license to be revoked",
    )
    # Someone else holding the same bytes registers them to sell them again: refused, so there is no
    # sample of theirs to consent to and none the operator could license.
    second = stack.seller()
    r = stack.consent.post("/v1/samples", json={"kind": "face_image", "sha256": content}, headers=second)
    assert_problem(r, 409, "body.sha256")
    other = register(stack.consent, second, n=1)  # a later event: the projection applied everything before
    wait_until(lambda: _projected(stack, other[0]), what="the second subject's sample to be projected")
    with stack.sessions() as session:
        holders = session.scalars(
            select(ProjectedSample.subject_id).where(ProjectedSample.sha256 == content)
        ).all()
    assert len(holders) == 1  # only the first subject's sample carries that content


def _projected(stack: Stack, sample_id: str) -> bool:
    with stack.sessions() as session:
        return session.get(ProjectedSample, sample_id) is not None
