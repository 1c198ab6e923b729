"""The consent event bus end to end: HTTP API -> outbox -> relay -> real Kafka-protocol broker (Tansu).

Runs on PostgreSQL and on SQLite (the `db_url` fixture). Every test uses its own topic, so the records a
test reads are its own; it still filters by its subject id where several subjects share a topic.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from consent_api.db import Outbox
from consent_api.main import create_app
from consent_api.relay import build_relay
from consent_api.subjects import repository as subjects_repo
from rescind_common.db import utcnow
from rescind_common.embedded_broker import free_port
from rescind_common.metrics import OUTBOX_REPLAYED
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

from support.helpers import auth, grant, make_settings, register, sha
from support.kafka import (
    RelayThread,
    for_key,
    has_types,
    outbox_rows,
    own_broker,
    publish_errors,
    read_topic,
    unique_topic,
)
from support.wait import wait_until


def timing(label: str, seconds: float) -> None:
    print(f"\nTIMING {label}: {seconds:.2f}s")


def subject_id_of(app: FastAPI, sub: str) -> str:
    """consent-api's pseudonymous id (`sub_...`) for the caller whose token says `sub`."""
    ctx = app.state.ctx
    with ctx.session_factory() as session:
        subject = subjects_repo.by_sub_hash(session, ctx.master.sub_hash(sub))
        assert subject is not None
        return str(subject.id)


class Seller:
    def __init__(self, client: TestClient, token: Any, sub: str | None = None) -> None:
        self.sub = sub or f"seller-{uuid.uuid4().hex[:12]}"
        self.headers = auth(token("subject", sub=self.sub))
        self.client = client

    @property
    def subject_id(self) -> str:
        return subject_id_of(self.client.app, self.sub)  # type: ignore[arg-type]


@pytest.fixture
def topic_settings(db_url: str, state_dir: Any, broker: Any) -> Any:
    return make_settings(
        db_url, state_dir, kafka_bootstrap=broker.bootstrap, kafka_consent_topic=unique_topic()
    )


@pytest.fixture
def client(topic_settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(topic_settings)) as c:
        yield c


def revoke(client: TestClient, headers: dict[str, str], consent_id: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/v1/consents/{consent_id}/revoke", json=body or None, headers=headers)
    assert r.status_code == 202, r.text
    return dict(r.json())


# -- 1. delivery, keys, order ---------------------------------------------------------------------------


def test_relay_delivers_consent_events_keyed_by_subject_in_order(
    client: TestClient, topic_settings: Any, broker: Any, token: Any
) -> None:
    topic = topic_settings.kafka_consent_topic
    a, b = Seller(client, token), Seller(client, token)
    with RelayThread(topic_settings) as relay:
        batch = register(client, a.headers, n=3)
        single = register(client, a.headers, kind="voice_recording")
        b_samples = register(client, b.headers)
        all_a = batch + single
        c1 = grant(client, a.headers, all_a, licensee_id="lic-1", purposes=["model_training", "evaluation"])
        grant(client, b.headers, b_samples)
        partial = revoke(client, a.headers, c1["id"], sample_ids=[single[0]])
        c2 = grant(client, a.headers, [batch[0]])
        r = client.post("/v1/revocations", json={"scope": "all"}, headers=a.headers)
        assert r.status_code == 202, r.text
        everything = r.json()
        assert sorted(everything["consent_ids"]) == sorted([c1["id"], c2["id"]])

        key_a, key_b = a.subject_id, b.subject_id
        expected_a = [
            "sample_registered",
            "sample_registered",
            "consent_granted",
            "consent_revoked",
            "consent_granted",
            "consent_revoked",
            "consent_revoked",
        ]
        records = read_topic(
            broker.bootstrap, topic, lambda rs: has_types(key_a, *expected_a)(rs) and bool(for_key(rs, key_b))
        )
        wait_until(
            lambda: relay.backlog() == 0 and all(r.published_at for r in outbox_rows(relay.engine, topic))
        )

    for key in (key_a, key_b):
        assert key.startswith("sub_")
    assert key_a != key_b
    mine = for_key(records, key_a)
    assert [r.event_type for r in mine] == expected_a, "events of one subject arrive in commit order"

    events = [r.event for r in mine]
    for rec, ev in zip(mine, events, strict=True):
        assert ev.subject_id == key_a
        assert ev.producer == "consent-api"
        assert ev.event_id.startswith("evt_")
        assert ev.occurred_at.seconds > 0
        assert rec.header("event-id") == ev.event_id.encode()
        assert rec.header("event-type") == rec.event_type.encode()
        assert rec.header("content-type") == b"application/x-protobuf"
    all_ids = [r.event.event_id for r in records]
    assert len(all_ids) == len(set(all_ids)), "event ids are unique"

    reg1, reg2, g1, rv1, g2, rv2, rv3 = events
    assert [s.sample_id for s in reg1.sample_registered.samples] == batch
    assert {s.kind for s in reg1.sample_registered.samples} == {pb.SAMPLE_KIND_FACE_IMAGE}
    assert all(len(s.sha256) == 64 for s in reg1.sample_registered.samples)
    assert [s.sample_id for s in reg2.sample_registered.samples] == single
    assert reg2.sample_registered.samples[0].kind == pb.SAMPLE_KIND_VOICE_RECORDING

    assert g1.consent_granted.consent_id == c1["id"]
    assert list(g1.consent_granted.sample_ids) == all_a
    assert list(g1.consent_granted.purposes) == ["model_training", "evaluation"]
    assert g1.consent_granted.licensee_id == "lic-1"
    assert g1.consent_granted.receipt_id == c1["receipt_id"]

    p = rv1.consent_revoked
    assert (p.revocation_id, p.consent_id, list(p.sample_ids)) == (partial["id"], c1["id"], single)
    assert not p.consent_ended
    assert p.trigger == pb.REVOCATION_TRIGGER_SUBJECT
    assert (p.chunk_index, p.chunk_count, p.consent_count) == (0, 1, 1)

    assert g2.consent_granted.consent_id == c2["id"]
    assert list(g2.consent_granted.sample_ids) == [batch[0]]

    ended = {e.consent_revoked.consent_id: e.consent_revoked for e in (rv2, rv3)}
    assert set(ended) == {c1["id"], c2["id"]}
    for cid, rev in ended.items():
        assert rev.revocation_id == everything["id"]
        assert rev.consent_ended
        assert rev.consent_count == 2
        assert rev.trigger == pb.REVOCATION_TRIGGER_SUBJECT
    assert sorted(ended[c1["id"]].sample_ids) == sorted(batch)
    assert list(ended[c2["id"]].sample_ids) == [batch[0]]

    b_events = [r.event for r in for_key(records, key_b)]
    assert [e.WhichOneof("payload") for e in b_events] == ["sample_registered", "consent_granted"]
    assert all(e.subject_id == key_b for e in b_events)


def test_a_purpose_or_licensee_withdrawal_says_so_on_the_bus(
    client: TestClient, topic_settings: Any, broker: Any, token: Any
) -> None:
    """Holders read the trigger and purposes off ConsentRevoked: a purpose-only withdrawal names the
    purpose (PURPOSE_WITHDRAWAL), a licensee-only one the licensee (LICENSEE_WITHDRAWAL), and a
    withdrawal of everything stays a withdrawal (SUBJECT)."""
    topic = topic_settings.kafka_consent_topic
    a = Seller(client, token)
    with RelayThread(topic_settings):
        samples = register(client, a.headers, n=2)
        c1 = grant(client, a.headers, samples, purposes=["model_training", "evaluation"])
        by_purpose = client.post(
            "/v1/revocations", json={"scope": "purpose", "purpose": "evaluation"}, headers=a.headers
        )
        assert by_purpose.status_code == 202, by_purpose.text
        by_licensee = client.post(
            "/v1/revocations", json={"scope": "licensee", "licensee_id": "lic-x"}, headers=a.headers
        )
        assert by_licensee.status_code == 202, by_licensee.text
        everything = client.post("/v1/revocations", json={"scope": "all"}, headers=a.headers)
        assert everything.status_code == 202, everything.text
        key = a.subject_id
        records = read_topic(
            broker.bootstrap,
            topic,
            has_types(key, "sample_registered", "consent_granted", *["consent_revoked"] * 3),
        )
    revoked = {
        e.consent_revoked.revocation_id: e.consent_revoked
        for e in (r.event for r in for_key(records, key))
        if e.WhichOneof("payload") == "consent_revoked"
    }
    p = revoked[by_purpose.json()["id"]]
    assert p.trigger == pb.REVOCATION_TRIGGER_PURPOSE_WITHDRAWAL and list(p.purposes) == ["evaluation"]
    assert p.consent_id == c1["id"] and sorted(p.sample_ids) == sorted(samples) and not p.consent_ended
    lic = revoked[by_licensee.json()["id"]]
    assert lic.trigger == pb.REVOCATION_TRIGGER_LICENSEE_WITHDRAWAL and lic.only_licensee_id == "lic-x"
    assert list(lic.purposes) == ["model_training"]  # what is left of the consent, for lic-x
    rest = revoked[everything.json()["id"]]
    assert rest.trigger == pb.REVOCATION_TRIGGER_SUBJECT and rest.consent_ended


# -- 2. no personal data on the bus ---------------------------------------------------------------------


def test_no_personal_data_on_kafka(client: TestClient, topic_settings: Any, broker: Any, token: Any) -> None:
    topic = topic_settings.kafka_consent_topic
    marker = uuid.uuid4().hex
    seller = Seller(client, token, sub=f"jwt-sub-{marker}")
    secrets = {
        "sub": seller.sub,
        "name": f"Display Name {marker}",
        "email": f"mail.{marker}@example.org",
        "attr-value": f"attribute value {marker}",
        "attr-key": f"k{marker}",
        "reason": f"I changed my mind {marker}",
        "reason2": f"second reason {marker}",
    }
    r = client.put(
        "/v1/profile",
        json={"display_name": secrets["name"], "email": secrets["email"], "country": "DE"},
        headers=seller.headers,
    )
    assert r.status_code == 200, r.text
    r = client.post(
        "/v1/samples",
        json={
            "kind": "face_image",
            "sha256": sha(),
            "media_type": "image/jpeg",
            "attributes": {"note": secrets["attr-value"], secrets["attr-key"]: 1},
        },
        headers=seller.headers,
    )
    assert r.status_code == 201, r.text
    samples = [r.json()["id"], *register(client, seller.headers, n=2)]
    c1 = grant(client, seller.headers, samples)
    c2 = grant(client, seller.headers, samples[:1], licensee_id="lic-pii")
    revoke(client, seller.headers, c1["id"], sample_ids=[samples[2]], reason=secrets["reason"])
    r = client.post(
        "/v1/revocations", json={"scope": "all", "reason": secrets["reason2"]}, headers=seller.headers
    )
    assert r.status_code == 202, r.text

    key = seller.subject_id
    wanted = ["sample_registered", "sample_registered", "consent_granted", "consent_granted"]
    with RelayThread(topic_settings):
        records = read_topic(broker.bootstrap, topic, has_types(key, *wanted, *["consent_revoked"] * 3))
    assert c2["id"] in {r.event.consent_revoked.consent_id for r in records}

    needles = {name: value.encode() for name, value in secrets.items()}
    needles["marker"] = marker.encode()
    assert records
    for rec in records:
        blobs = [rec.key or b"", rec.value, *(k.encode() + b"\x00" + v for k, v in rec.headers)]
        for name, needle in needles.items():
            for blob in blobs:
                assert needle not in blob, f"{name} leaked onto Kafka in {rec.event_type}"
    # The key is the pseudonymous subject id, not the caller's `sub`.
    assert {r.key for r in for_key(records, key)} == {key.encode()}


# -- 3. broker down: the API keeps accepting, the relay keeps the rows and reconnects by itself ----------


def test_no_event_lost_while_broker_is_down(db_url: str, state_dir: Any, token: Any, tmp_path: Any) -> None:
    port = free_port()
    settings = make_settings(
        db_url, state_dir, kafka_bootstrap=f"127.0.0.1:{port}", kafka_consent_topic=unique_topic("down")
    )
    topic = settings.kafka_consent_topic
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(TestClient(create_app(settings)))
        brokers = stack.enter_context(contextlib.ExitStack())  # closed after the relay has stopped
        first = brokers.enter_context(contextlib.ExitStack())
        broker1 = first.enter_context(own_broker(port, tmp_path / "broker1.log"))
        relay_thread = RelayThread(settings)
        relay = stack.enter_context(relay_thread)

        seller = Seller(client, token)
        samples = register(client, seller.headers, n=2)
        consent = grant(client, seller.headers, samples)
        key = seller.subject_id
        read_topic(broker1.bootstrap, topic, has_types(key, "sample_registered", "consent_granted"))

        errors_before = publish_errors()
        first.close()  # broker 1 stops: memory-only, its log is gone
        wait_until(lambda: publish_errors() > errors_before, what="the relay to notice the broker is gone")

        # The API never needs Kafka to accept a write.
        revocation = revoke(client, seller.headers, consent["id"], reason="broker is down")
        rows = outbox_rows(relay.engine, topic)
        pending = [r for r in rows if r.event_type == "consent_revoked"]
        assert len(pending) == 1 and pending[0].published_at is None
        # The relay keeps trying (and failing) without dropping the row.
        assert relay_thread.thread.is_alive()
        assert relay.backlog() >= 1
        assert [
            r.published_at for r in outbox_rows(relay.engine, topic) if r.event_type == "consent_revoked"
        ] == [None]

        # A new, empty broker on the same address: the same relay (same thread) reconnects by itself.
        broker2 = brokers.enter_context(own_broker(port, tmp_path / "broker2.log"))
        started = time.monotonic()
        records = read_topic(broker2.bootstrap, topic, has_types(key, "consent_revoked"), timeout=45)
        timing(
            "relay reconnect after broker restart (event visible on broker #2)", time.monotonic() - started
        )
        assert relay_thread.thread.is_alive()

        revoked = [
            r.event.consent_revoked for r in for_key(records, key) if r.event_type == "consent_revoked"
        ]
        assert [(e.revocation_id, e.consent_id) for e in revoked] == [(revocation["id"], consent["id"])]
        assert sorted(revoked[0].sample_ids) == sorted(samples)
        # The retained events came back too, before the revocation (order per key holds across the replay).
        assert [r.event_type for r in for_key(records, key)] == [
            "sample_registered",
            "consent_granted",
            "consent_revoked",
        ]
        wait_until(lambda: relay.backlog() == 0, what="an empty backlog")


# -- 4. the broker lost its log: the relay recreates the topic and re-publishes what it retained ----------


def _replay_scenario(
    db_url: str, state_dir: Any, token: Any, tmp_path: Any, *, fail_first_replay: bool = False
) -> None:
    port = free_port()
    settings = make_settings(
        db_url, state_dir, kafka_bootstrap=f"127.0.0.1:{port}", kafka_consent_topic=unique_topic("lost")
    )
    topic = settings.kafka_consent_topic
    replayed_before = OUTBOX_REPLAYED.labels("consent-api")._value.get()
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(TestClient(create_app(settings)))
        brokers = stack.enter_context(contextlib.ExitStack())  # closed after the relay has stopped
        first = brokers.enter_context(contextlib.ExitStack())
        broker1 = first.enter_context(own_broker(port, tmp_path / "broker1.log"))
        relay = stack.enter_context(RelayThread(settings))

        seller = Seller(client, token)
        samples = register(client, seller.headers, n=2)
        consent = grant(client, seller.headers, samples)
        key = seller.subject_id
        on_first = read_topic(
            broker1.bootstrap, topic, has_types(key, "sample_registered", "consent_granted")
        )
        first_ids = [r.event.event_id for r in for_key(on_first, key)]
        assert len(first_ids) == 2

        calls = {"n": 0}
        if fail_first_replay:
            # The database is unreachable for a moment just as the relay finds the empty broker. The replay
            # must not be skipped for good because the topic exists by the time the relay tries again.
            original = relay._replay

            def flaky_replay(conn: Any, lost: Any) -> None:
                if not lost:
                    return original(conn, lost)
                calls["n"] += 1
                if calls["n"] == 1:
                    raise RuntimeError("database unavailable (injected)")
                original(conn, lost)

            relay._replay = flaky_replay  # type: ignore[method-assign]

        first.close()  # broker 1 is gone, and with it every record
        brokers.enter_context(own_broker(port, tmp_path / "broker2.log"))  # fresh, empty, same address
        started = time.monotonic()
        on_second = read_topic(
            f"127.0.0.1:{port}", topic, has_types(key, "sample_registered", "consent_granted"), timeout=40
        )
        timing(
            f"re-publish after the broker lost its log (injected failure: {fail_first_replay})",
            time.monotonic() - started,
        )
        if fail_first_replay:
            assert calls["n"] >= 2

        again = for_key(on_second, key)
        assert [r.event.event_id for r in again] == first_ids, "the same events, same ids, same order"
        assert OUTBOX_REPLAYED.labels("consent-api")._value.get() >= replayed_before + 2

        # New events follow the replayed ones; a consumer that read both logs dedupes by event id.
        revocation = revoke(client, seller.headers, consent["id"])
        on_second = read_topic(
            f"127.0.0.1:{port}",
            topic,
            has_types(key, "sample_registered", "consent_granted", "consent_revoked"),
        )
        assert [e.event_type for e in for_key(on_second, key)] == [
            "sample_registered",
            "consent_granted",
            "consent_revoked",
        ]
        seen: dict[str, pb.ConsentEvent] = {}
        for rec in [*for_key(on_first, key), *for_key(on_second, key)]:
            seen.setdefault(rec.event.event_id, rec.event)
        assert [e.WhichOneof("payload") for e in seen.values()] == [
            "sample_registered",
            "consent_granted",
            "consent_revoked",
        ]
        assert list(seen.values())[2].consent_revoked.revocation_id == revocation["id"]
        wait_until(lambda: relay.backlog() == 0, what="an empty backlog")


def test_relay_republishes_when_broker_lost_its_log(
    db_url: str, state_dir: Any, token: Any, tmp_path: Any
) -> None:
    _replay_scenario(db_url, state_dir, token, tmp_path)


def test_replay_survives_a_failure_right_after_the_broker_restart(
    db_url: str, state_dir: Any, token: Any, tmp_path: Any
) -> None:
    _replay_scenario(db_url, state_dir, token, tmp_path, fail_first_replay=True)


# -- 5. expiry ------------------------------------------------------------------------------------------


def _grant_expiring(
    client: TestClient, seller: Seller, seconds: float = 2.0
) -> tuple[dict[str, Any], list[str]]:
    samples = register(client, seller.headers, n=2)
    expires = (utcnow() + dt.timedelta(seconds=seconds)).isoformat()
    consent = grant(client, seller.headers, samples, expires_at=expires)
    assert consent["status"] == "active"
    return consent, samples


def _check_expired_once(
    client: TestClient, seller: Seller, consent: dict[str, Any], samples: list[str], engine: Any, topic: str
) -> None:
    r = client.get(f"/v1/consents/{consent['id']}", headers=seller.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "expired"
    assert body["ended_at"] is not None
    assert body["active_sample_count"] == 0

    r = client.get("/v1/revocations", headers=seller.headers)
    assert r.status_code == 200, r.text
    revocations = r.json()["items"]
    assert len(revocations) == 1, revocations
    rev = revocations[0]
    assert (rev["trigger"], rev["scope"], rev["consent_id"]) == ("expiry", "consent", consent["id"])
    assert rev["consent_ids"] == [consent["id"]]
    assert rev["sample_count"] == len(samples)

    key = seller.subject_id
    rows = [r for r in outbox_rows(engine, topic) if r.key == key]
    types = [r.event_type for r in rows]
    assert types.count("consent_expired") == 1 and types.count("consent_revoked") == 1, types
    events = {r.event_type: pb.ConsentEvent.FromString(r.payload) for r in rows}
    expired = events["consent_expired"].consent_expired
    assert (expired.consent_id, expired.revocation_id) == (consent["id"], rev["id"])
    assert expired.expired_at.ToDatetime(dt.UTC) == dt.datetime.fromisoformat(consent["expires_at"])
    revoked = events["consent_revoked"].consent_revoked
    assert revoked.trigger == pb.REVOCATION_TRIGGER_EXPIRY
    assert (revoked.revocation_id, revoked.consent_id, revoked.consent_ended) == (
        rev["id"],
        consent["id"],
        True,
    )
    assert sorted(revoked.sample_ids) == sorted(samples)
    # ConsentExpired is "followed by the ConsentRevoked events of the revocation that the expiry created".
    assert types[-2:] == ["consent_expired", "consent_revoked"], types


def test_expire_due_expires_exactly_once_even_when_racing(db_url: str, state_dir: Any, token: Any) -> None:
    import threading

    from consent_api.expiry import expire_due

    settings = make_settings(db_url, state_dir, kafka_consent_topic=unique_topic("exp"))
    with TestClient(create_app(settings)) as client, TestClient(create_app(settings)) as other:
        seller = Seller(client, token)
        consent, samples = _grant_expiring(client, seller)
        contexts = [client.app.state.ctx, other.app.state.ctx]  # type: ignore[attr-defined]

        expire_due(contexts[0])  # not due yet: nothing happens to it
        r = client.get(f"/v1/consents/{consent['id']}", headers=seller.headers)
        assert r.json()["status"] == "active"

        due = dt.datetime.fromisoformat(consent["expires_at"])
        wait_until(lambda: utcnow() > due, what="expires_at to pass")

        # Four workers on two app instances (separate engines and pools) race for the same consent.
        barrier = threading.Barrier(4)
        failures: list[BaseException] = []

        def worker(ctx: Any) -> None:
            try:
                barrier.wait(timeout=10)
                expire_due(ctx)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(contexts[i % 2],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not failures, failures
        assert not any(t.is_alive() for t in threads)

        expire_due(contexts[1])  # and once more, later
        _check_expired_once(
            client, seller, consent, samples, contexts[0].engine, settings.kafka_consent_topic
        )


def test_expiry_scheduler_expires_and_publishes(
    db_url: str, state_dir: Any, token: Any, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consent_api.expiry as expiry

    passes: dict[int, int] = {}
    real = expiry.expire_due

    def counting(ctx: Any, limit: int = 100) -> int:
        n = real(ctx, limit)
        passes[id(ctx)] = passes.get(id(ctx), 0) + 1
        return n

    monkeypatch.setattr(expiry, "expire_due", counting)
    settings = make_settings(
        db_url,
        state_dir,
        kafka_bootstrap=broker.bootstrap,
        kafka_consent_topic=unique_topic("sched"),
        consent_run_scheduler=True,
        consent_expiry_interval_seconds=0.2,
    )
    topic = settings.kafka_consent_topic
    # Two replicas, each with its own scheduler, against one database.
    with TestClient(create_app(settings)) as client, TestClient(create_app(settings)) as other:
        seller = Seller(client, token)
        consent, samples = _grant_expiring(client, seller)
        ctxs = [client.app.state.ctx, other.app.state.ctx]  # type: ignore[attr-defined]

        def status() -> str:
            return str(client.get(f"/v1/consents/{consent['id']}", headers=seller.headers).json()["status"])

        started = time.monotonic()
        wait_until(lambda: status() == "expired", what="the scheduler to expire the consent")
        timing("scheduler expiry after grant (expires_at = +2s, interval 0.2s)", time.monotonic() - started)
        # Both schedulers keep running for a few more passes; neither expires it again.
        after = {id(c): passes.get(id(c), 0) for c in ctxs}
        wait_until(lambda: all(passes.get(id(c), 0) >= after[id(c)] + 3 for c in ctxs), what="more passes")
        _check_expired_once(client, seller, consent, samples, ctxs[0].engine, topic)

        key = seller.subject_id
        with RelayThread(settings):
            records = read_topic(
                broker.bootstrap, topic, has_types(key, "consent_expired", "consent_revoked")
            )
        types = [r.event_type for r in for_key(records, key)]
        assert types == ["sample_registered", "consent_granted", "consent_expired", "consent_revoked"]
        revoked = for_key(records, key)[-1].event.consent_revoked
        assert revoked.trigger == pb.REVOCATION_TRIGGER_EXPIRY


# -- 6. outbox bookkeeping: published_at, order, retention ----------------------------------------------


def test_outbox_marks_published_rows_and_prunes_only_old_ones(
    db_url: str, state_dir: Any, token: Any, broker: Any
) -> None:
    settings = make_settings(
        db_url,
        state_dir,
        kafka_bootstrap=broker.bootstrap,
        kafka_consent_topic=unique_topic("prune"),
        outbox_retention_hours=1,
    )
    topic = settings.kafka_consent_topic
    relay = build_relay(settings)
    try:
        with TestClient(create_app(settings)) as client:
            seller = Seller(client, token)
            samples = register(client, seller.headers, n=3)
            consent = grant(client, seller.headers, samples)
            revoke(client, seller.headers, consent["id"], sample_ids=samples[:1])
            rows = outbox_rows(relay.engine, topic)
            assert len(rows) == 3 and all(r.published_at is None for r in rows)

            wait_until(lambda: relay.publish_once() == 0 and relay.backlog() == 0, what="the outbox to drain")
            rows = outbox_rows(relay.engine, topic)
            assert all(r.published_at is not None for r in rows)
            assert [r.published_at for r in rows] == sorted(r.published_at for r in rows)

            key = seller.subject_id
            records = read_topic(broker.bootstrap, topic, lambda rs: len(for_key(rs, key)) >= 3)
            assert [r.event.event_id for r in for_key(records, key)] == [r.event_id for r in rows], (
                "Kafka order is outbox order"
            )

            # One more event that stays unpublished, however old it is.
            revoke(client, seller.headers, consent["id"])
            rows = outbox_rows(relay.engine, topic)
            pending = rows[-1]
            assert pending.published_at is None

        long_ago = utcnow() - dt.timedelta(hours=5)
        just_inside = utcnow() - dt.timedelta(minutes=30)
        old_ids = [rows[0].id, rows[1].id]
        with relay.engine.begin() as conn:
            conn.execute(update(Outbox).where(Outbox.id.in_(old_ids)).values(published_at=long_ago))
            conn.execute(update(Outbox).where(Outbox.id == rows[2].id).values(published_at=just_inside))
            conn.execute(update(Outbox).where(Outbox.id == pending.id).values(created_at=long_ago))

        assert relay.prune() >= 2
        left = outbox_rows(relay.engine, topic)
        assert [r.id for r in left] == [rows[2].id, pending.id]
        assert left[1].published_at is None
        relay.prune()  # pruning again takes nothing more of ours
        assert [r.id for r in outbox_rows(relay.engine, topic)] == [rows[2].id, pending.id]
    finally:
        relay._reset()
        relay.engine.dispose()
