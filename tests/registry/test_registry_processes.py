"""The registry as a user runs it: `registry migrate`, `registry serve`, `registry consumer` and
`registry relay` as processes (SQLite, the embedded default) against the real broker, stopped by
SIGTERM."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from rescind_cli.processes import Launcher, stack_env
from rescind_common.embedded_broker import free_port
from rescind_common.ids import new_id, new_ids
from rescind_common.kafka import ensure_topics, make_admin, make_producer
from rescind_common.proto.rescind.v1 import license_events_pb2 as lpb

from support.helpers import auth
from support.kafka import read_topic
from support.registry import Projection
from support.wait import wait_until


def test_migrate_serve_and_consume_as_processes(
    broker: Any, tmp_path: Path, state_dir: Path, token: Any
) -> None:
    topic = f"test.registry-proc.{uuid.uuid4().hex[:12]}"
    port = free_port()
    ports = {"registry": port}
    db_urls = {"registry": f"sqlite:///{tmp_path / 'registry.db'}"}
    env = {
        **os.environ,
        **stack_env(ports, bootstrap=broker.bootstrap, state=state_dir, db_urls=db_urls),
        "RESCIND_REGISTRY_PROJECTION_WAIT_SECONDS": "20",
        "RESCIND_KAFKA_CONSENT_TOPIC": topic,
        "RESCIND_KAFKA_LICENSE_TOPIC": f"{topic}.license",
        "RESCIND_LOG_LEVEL": "WARNING",
    }
    launcher = Launcher(env, ports)
    launcher.migrate(["registry"])
    admin = make_admin(broker.bootstrap, "test-admin")
    try:
        ensure_topics(admin, [topic], partitions=1, replication_factor=1)
    finally:
        admin.close()

    names = ["registry", "registry-consumer", "registry-relay"]  # serve, consumer, relay
    for name in names:
        launcher.start(name)
    try:
        api = httpx.Client(base_url=launcher.url("registry"), timeout=30)
        operator = auth(token("operator", sub="ops-test"))
        launcher.wait_ready(["registry"], timeout=20)
        lic = api.post("/v1/licensees", json={"name": "Proc Co"}, headers=operator).json()["id"]

        subject, samples = new_id("sub"), new_ids("smp", 2)
        grant = Projection.grant_event(subject, samples, licensee_id=lic)
        consent = grant.consent_granted.consent_id
        producer = make_producer(broker.bootstrap, "test-consent-events")
        try:
            for event in (Projection.samples_event(subject, samples), grant):
                producer.send(topic, key=subject.encode(), value=event.SerializeToString()).get(timeout=10)
            body = {
                "licensee_id": lic,
                "consent_id": consent,
                "purpose": "model_training",
                "sample_ids": samples,
            }
            r = api.post("/v1/licenses", json=body, headers=operator)
            assert r.status_code == 201, r.text
            revoke = Projection.revoke_event(subject, consent, samples, ["model_training"], ended=True)
            producer.send(topic, key=subject.encode(), value=revoke.SerializeToString()).get(timeout=10)
        finally:
            producer.close(timeout=5)
        lid = r.json()["id"]
        wait_until(
            lambda: api.get(f"/v1/licenses/{lid}", headers=operator).json()["status"] == "revoked",
            what="the consumer process to revoke the license",
        )
        # The relay process published what the revocation took from the license.
        (record,) = read_topic(broker.bootstrap, f"{topic}.license", lambda rs: len(rs) >= 1)
        event = lpb.LicenseEvent.FromString(record.value)
        assert record.key == lic.encode() and (event.licensee_id, event.license_id) == (lic, lid)
        withdrawn = event.license_samples_withdrawn
        assert withdrawn.revocation_id == revoke.consent_revoked.revocation_id and withdrawn.license_ended
        assert sorted(withdrawn.sample_ids) == sorted(samples)
        api.close()
    finally:
        launcher.stop_all(timeout=30)
        codes = [launcher.procs[name].popen.returncode for name in names]
    # A clean stop: the consumer and the relay exit 0; uvicorn re-raises SIGTERM after its graceful
    # shutdown.
    assert codes[1] == codes[2] == 0 and codes[0] in (0, -15), codes
