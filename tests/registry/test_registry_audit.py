"""The registry's audit chains (one per licensee) and signed checkpoints, on PostgreSQL and SQLite:
what `rescind audit verify` finds when an entry is altered or a chain is rewound after a checkpoint
it saw, and that checkpoints reach the license topic's outbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, Table, delete, func, select, update

from registry.audit import service as audit_service
from registry.audit.models import AuditCheckpoint, AuditCheckpointHead, AuditEntry, AuditHead
from registry.config import RegistrySettings
from registry.db import Outbox
from rescind_common import audit_chain
from rescind_common.db import make_engine
from rescind_common.proto.rescind.v1 import license_events_pb2 as lpb

from support.audit import chains_named, rewound, tampered, verify
from support.registry import Projection
from support.wait import wait_until

ENTRIES = cast(Table, AuditEntry.__table__)
HEADS = cast(Table, AuditHead.__table__)


@pytest.fixture(scope="module")
def engine(registry_settings: RegistrySettings) -> Iterator[Engine]:
    """Direct access to the registry's database, as an attacker with write access has."""
    eng = make_engine(registry_settings.registry_database_url, pool_size=1)
    yield eng
    eng.dispose()


def history(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> tuple[str, str]:
    """A licensee with a license and a model, then a withdrawal: (licensee id, license id)."""
    r = registry.post(
        "/v1/licensees", json={"name": "Chain Co", "contact_email": "dpo@chain.example"}, headers=operator
    )
    assert r.status_code == 201, r.text
    lic = r.json()["id"]
    subject, samples = projection.samples(3)
    consent = projection.grant(subject, samples, licensee_id=lic)
    body = {"licensee_id": lic, "consent_id": consent, "purpose": "model_training", "sample_ids": samples}
    r = registry.post("/v1/licenses", json=body, headers=operator)
    assert r.status_code == 201, r.text
    license_id = r.json()["id"]
    me = {"Authorization": f"Bearer {token('licensee', sub=lic)}"}
    r = registry.post(
        "/v1/models", json={"name": "m", "version": "1", "license_ids": [license_id]}, headers=me
    )
    assert r.status_code == 201, r.text
    projection.revoke(subject, consent, samples, ["model_training"], ended=True)
    return lic, license_id


def checkpoint(engine: Engine, settings: RegistrySettings, registry: TestClient) -> dict[str, Any]:
    with engine.begin() as conn:
        claims = audit_service.checkpoint(conn, settings, registry.app.state.audit_signer, force=True)
    assert claims is not None
    return claims


def set_head(lic: str) -> Any:
    def set_(conn: Connection, seq: int, head: str) -> None:
        conn.execute(update(HEADS).where(HEADS.c.chain_id == lic).values(seq=seq, head=head))

    return set_


def test_every_change_of_a_licensee_is_on_its_chain_without_names(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any
) -> None:
    lic, license_id = history(registry, operator, projection, token)
    r = registry.get("/v1/audit/entries", params={"chain_id": lic}, headers=operator)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [e["kind"] for e in items] == [
        "licensee.created",
        "license.created",
        "model.created",
        "license.updated",
    ]
    assert [e["seq"] for e in items] == [1, 2, 3, 4]
    assert items[1]["entity_id"] == license_id and items[1]["data"]["status"] == "active"
    # the withdrawal, written by the projection's Core UPDATE, is on the chain too
    assert items[3]["data"]["status"] == "revoked" and items[3]["data"]["revoked_sample_count"] == 3
    assert "Chain Co" not in r.text and "dpo@chain.example" not in r.text
    assert items[0]["data"]["name"] == audit_chain.digest("Chain Co")
    assert all(items[i]["prev_hash"] == items[i - 1]["hash"] for i in range(1, 4))
    # paging across chains
    page = registry.get("/v1/audit/entries", params={"limit": 1}, headers=operator).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    bad = registry.get("/v1/audit/entries", params={"cursor": "!!"}, headers=operator)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "query.cursor"
    from rescind_common.audit_api import encode_cursor

    for query in (
        {"cursor": encode_cursor(["a\x00b", 1])},
        {"cursor": encode_cursor([lic, 2**40])},
        {"chain_id": "a\x00b"},
        {"chain_id": "x" * 65},
    ):
        r = registry.get("/v1/audit/entries", params=query, headers=operator)
        assert 400 <= r.status_code < 500, (query, r.text)
    for path, query in (
        ("/v1/audit/heads", {"checkpoint": 0}),
        ("/v1/audit/heads", {"cursor": encode_cursor(7)}),
    ):
        assert 400 <= registry.get(path, params=query, headers=operator).status_code < 500, (path, query)


def test_a_clean_registry_verifies_and_its_checkpoint_is_signed_and_published(
    registry: TestClient,
    registry_settings: RegistrySettings,
    engine: Engine,
    operator: dict[str, str],
    projection: Projection,
    token: Any,
    tmp_path: Path,
) -> None:
    lic, _ = history(registry, operator, projection, token)
    claims = checkpoint(engine, registry_settings, registry)

    report = verify({"registry": registry.app}, operator, tmp_path / "state.json")
    assert report["ok"] is True, report["problems"]
    (svc,) = report["services"]
    assert svc["checkpoint"] == claims["seq"] and svc["entries_checked"] >= 4

    listed = registry.get("/v1/audit/checkpoints", headers=operator).json()["items"]
    assert listed[0]["seq"] == claims["seq"] and listed[0]["root"] == claims["root"]
    # the signature verifies with PyJWT against the published JWKS
    jwks = registry.get("/.well-known/jwks.json").json()
    assert audit_chain.verify_jws(listed[0]["jws"], jwks)["root"] == claims["root"]
    heads: list[dict[str, Any]] = []
    params: dict[str, Any] = {"checkpoint": claims["seq"], "limit": 500}
    while True:
        page = registry.get("/v1/audit/heads", params=params, headers=operator).json()
        heads += page["items"]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert {"chain_id": lic, "seq": 4} in [{"chain_id": h["chain_id"], "seq": h["seq"]} for h in heads]
    server = registry.get("/v1/audit/verify", params={"checkpoint": claims["seq"]}, headers=operator).json()
    assert server["ok"] is True, server["problems"]

    # on the outbox, keyed audit:registry, as the AuditCheckpoint payload of a LicenseEvent
    with engine.connect() as conn:
        row = conn.execute(
            select(Outbox.__table__).where(Outbox.event_type == "audit_checkpoint").order_by(Outbox.id.desc())
        ).first()
    assert (
        row is not None and row.key == "audit:registry" and row.topic == registry_settings.kafka_license_topic
    )
    event = lpb.LicenseEvent.FromString(row.payload)
    assert event.WhichOneof("payload") == "audit_checkpoint"
    assert event.audit_checkpoint.root == claims["root"] and event.audit_checkpoint.sequence == claims["seq"]
    assert event.audit_checkpoint.jws == listed[0]["jws"] and event.audit_checkpoint.service == "registry"


def test_an_altered_entry_fails_naming_its_chain(
    registry: TestClient,
    engine: Engine,
    operator: dict[str, str],
    projection: Projection,
    token: Any,
    tmp_path: Path,
) -> None:
    lic, _ = history(registry, operator, projection, token)
    with tampered(engine, ENTRIES, "chain_id", lic, seq=2):
        report = verify({"registry": registry.app}, operator, tmp_path / "state.json")
        assert report["ok"] is False
        assert chains_named(report) == {lic}
        assert any(p["problem"] == "entry was altered" and p["seq"] == 2 for p in report["problems"])
    assert verify({"registry": registry.app}, operator, tmp_path / "state.json")["ok"] is True


def test_a_rewind_after_a_checkpoint_the_verifier_saw_fails_naming_the_chain(
    registry: TestClient,
    registry_settings: RegistrySettings,
    engine: Engine,
    operator: dict[str, str],
    projection: Projection,
    token: Any,
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    lic, _ = history(registry, operator, projection, token)
    claims = checkpoint(engine, registry_settings, registry)
    assert verify({"registry": registry.app}, operator, state)["ok"] is True  # remembers the checkpoint

    # A consistent rewind (entries deleted, head reset) is invisible to the chain alone ...
    with rewound(engine, ENTRIES, "chain_id", lic, set_head(lic), keep=2):
        report = verify({"registry": registry.app}, operator, tmp_path / "fresh.json")
        assert chains_named(report) == {lic}, report  # ... not to the signed checkpoint
        assert any("rewound" in p["problem"] for p in report["problems"])

        # The attacker deletes that checkpoint too: the verifier remembers it.
        cps, cph = cast(Table, AuditCheckpoint.__table__), cast(Table, AuditCheckpointHead.__table__)
        with engine.begin() as conn:
            saved = [dict(r._mapping) for r in conn.execute(select(cps).where(cps.c.seq >= claims["seq"]))]
            saved_heads = [
                dict(r._mapping)
                for r in conn.execute(select(cph).where(cph.c.checkpoint_seq >= claims["seq"]))
            ]
            conn.execute(delete(cph).where(cph.c.checkpoint_seq >= claims["seq"]))
            conn.execute(delete(cps).where(cps.c.seq >= claims["seq"]))
        try:
            report = verify({"registry": registry.app}, operator, state)
            assert report["ok"] is False
            assert lic in chains_named(report)
            assert any(
                p["chain_id"] == lic and p["problem"].startswith("chain rewound") for p in report["problems"]
            )
            assert any("seen before is gone" in p["problem"] for p in report["problems"])
        finally:
            with engine.begin() as conn:
                conn.execute(cps.insert(), saved)
                if saved_heads:
                    conn.execute(cph.insert(), saved_heads)
    assert verify({"registry": registry.app}, operator, state)["ok"] is True


def test_audit_routes_are_for_operators(registry: TestClient, token: Any) -> None:
    me = {"Authorization": f"Bearer {token('licensee', sub='lic_x')}"}
    for path in ("/v1/audit/entries", "/v1/audit/heads", "/v1/audit/checkpoints", "/v1/audit/verify"):
        assert registry.get(path, headers=me).status_code == 403, path
        assert registry.get(path).status_code == 401, path
    assert registry.get("/.well-known/jwks.json").status_code == 200
    assert isinstance(httpx.Response(200, json={}).json(), dict)


def test_the_serve_process_writes_checkpoints_in_the_background(
    registry: TestClient,
    registry_settings: RegistrySettings,
    engine: Engine,
    operator: dict[str, str],
    projection: Projection,
    token: Any,
) -> None:
    """The loop `registry serve` runs (here at 50 ms): a head moved, so a checkpoint appears; with
    two loops at once (two replicas), the advisory lock keeps their checkpoints in one sequence."""
    cps = cast(Table, AuditCheckpoint.__table__)

    def newest() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(cps.c.seq), 0))).scalar_one())

    before = newest()
    history(registry, operator, projection, token)
    signer = registry.app.state.audit_signer
    loops = [
        audit_chain.CheckpointLoop(
            engine_, 0.05, lambda conn: audit_service.checkpoint(conn, registry_settings, signer), "registry"
        )
        for engine_ in (engine, engine)
    ]
    for loop in loops:
        loop.start()
    try:
        wait_until(lambda: newest() > before, 10.0, "a background checkpoint")
    finally:
        for loop in loops:
            loop.close()
    with engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(select(cps.c.seq).where(cps.c.seq > before).order_by(cps.c.seq))]
    assert seqs == list(range(before + 1, before + 1 + len(seqs)))
    # nothing moved since: a further attempt writes nothing
    with engine.begin() as conn:
        assert audit_service.checkpoint(conn, registry_settings, signer) is None


def test_concurrent_changes_of_one_licensee_make_one_unforked_chain(
    registry: TestClient, operator: dict[str, str], projection: Projection, token: Any, tmp_path: Path
) -> None:
    """Eight callers declaring models of one licensee at once: every change is on its chain, in
    one sequence (the head is locked at commit), and nothing deadlocks."""
    lic, _ = history(registry, operator, projection, token)
    me = {"Authorization": f"Bearer {token('licensee', sub=lic)}"}
    # The license is revoked by now (history withdraws it): a fresh one to train on.
    subject, samples = projection.samples(2)
    consent = projection.grant(subject, samples, licensee_id=lic)
    body = {"licensee_id": lic, "consent_id": consent, "purpose": "model_training", "sample_ids": samples}
    fresh = registry.post("/v1/licenses", json=body, headers=operator).json()["id"]
    statuses: list[int] = []

    def declare(i: int) -> None:
        for j in range(3):
            r = registry.post(
                "/v1/models", json={"name": f"m{i}", "version": str(j), "license_ids": [fresh]}, headers=me
            )
            statuses.append(r.status_code)

    threads = [threading.Thread(target=declare, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [201] * 24
    items = registry.get(
        "/v1/audit/entries", params={"chain_id": lic, "limit": 500}, headers=operator
    ).json()["items"]
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
    assert sum(e["kind"] == "model.created" for e in items) == 25
    assert verify({"registry": registry.app}, operator, tmp_path / "state.json")["ok"] is True
