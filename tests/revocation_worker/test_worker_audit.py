"""revocation-worker's audit chains (one per licensee: endpoints, notices, acks, re-drives) and
signed checkpoints, on PostgreSQL and SQLite: tampering and a rewind after a checkpoint the
verifier saw fail naming the chain; checkpoints reach the notice topic's outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Table, select, update

from rescind_common import audit_chain
from rescind_common.proto.rescind.v1 import notice_events_pb2 as npb
from revocation_worker.audit import service as audit_service
from revocation_worker.audit.models import AuditEntry, AuditHead
from revocation_worker.db import Outbox
from revocation_worker.notices.models import Delivery

from support.audit import chains_named, rewound, tampered, verify

ENTRIES = cast(Table, AuditEntry.__table__)
HEADS = cast(Table, AuditHead.__table__)
MODEL = {"model_id": "mdl_audit1", "name": "faces", "version": "3"}


def history(w: Any) -> tuple[str, dict[str, str], str]:
    """An endpoint, a notice, its dead delivery re-driven by an operator, then the ack."""
    lic, h = w.licensee()
    w.register(h, "http://127.0.0.1:9/hook?token=secret-in-url")
    nid = w.make_notice(lic, models=[MODEL])
    with w.ctx.engine.begin() as conn:  # as the delivery loop leaves an exhausted delivery
        conn.execute(update(Delivery).where(Delivery.notice_id == nid).values(status="dead"))
    r = w.client.post("/v1/operator/dead-letters/redrive", json={"licensee_id": lic}, headers=w.operator)
    assert r.status_code == 200 and r.json() == {"redriven": 1}, r.text
    body = {"status": "completed", "models": [{"model_id": "mdl_audit1", "action": "retrained"}]}
    r = w.client.post(f"/v1/notices/{nid}/ack", json=body, headers=h)
    assert r.status_code == 200, r.text
    return lic, h, nid


def checkpoint(w: Any) -> dict[str, Any]:
    with w.ctx.engine.begin() as conn:
        claims = audit_service.checkpoint(conn, w.settings, w.app.state.audit_signer, force=True)
    assert claims is not None
    return claims


def set_head(lic: str) -> Any:
    def set_(conn: Connection, seq: int, head: str) -> None:
        conn.execute(update(HEADS).where(HEADS.c.chain_id == lic).values(seq=seq, head=head))

    return set_


def test_endpoints_notices_redrives_and_acks_are_on_the_licensees_chain(worker: Any) -> None:
    w = worker()
    lic, h, nid = history(w)
    spare_id, _ = w.register(h, "http://127.0.0.1:9/spare")
    assert w.client.delete(f"/v1/endpoints/{spare_id}", headers=h).status_code == 204
    r = w.client.get("/v1/audit/entries", params={"chain_id": lic}, headers=w.operator)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    kinds = [e["kind"] for e in items]
    assert kinds[:2] == ["endpoint.created", "notice.created"], kinds
    assert "delivery.updated" in kinds  # the re-drive
    redrive = next(e for e in items if e["kind"] == "delivery.updated")
    assert redrive["data"]["status"] == "pending" and redrive["data"]["notice_id"] == nid
    ack = [e for e in items if e["kind"] == "notice.updated" and e["data"].get("status") == "acknowledged"]
    assert len(ack) == 1 and len(ack[0]["data"]["ack"]) == 64  # the ack as its digest
    assert items[1]["entity_id"] == nid
    spare = [(e["kind"], e["data"]["status"]) for e in items if e["entity_id"] == spare_id]
    assert spare == [
        ("endpoint.created", "active"),
        ("endpoint.updated", "disabled"),
        ("endpoint.deleted", "disabled"),
    ]
    # no URL (it may carry a token), only its digest
    assert "secret-in-url" not in r.text and len(items[0]["data"]["url"]) == 64
    # the chain links up
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
    assert all(items[i]["prev_hash"] == items[i - 1]["hash"] for i in range(1, len(items)))


def test_clean_verifies_tamper_fails_naming_the_chain(worker: Any, tmp_path: Path) -> None:
    w = worker()
    lic, _, _ = history(w)
    claims = checkpoint(w)
    state = tmp_path / "state.json"
    report = verify({"revocation-worker": w.app}, w.operator, state)
    assert report["ok"] is True, report["problems"]
    assert report["services"][0]["checkpoint"] == claims["seq"]
    jwks = w.client.get("/.well-known/jwks.json").json()
    (cp,) = w.client.get("/v1/audit/checkpoints", params={"limit": 1}, headers=w.operator).json()["items"]
    assert audit_chain.verify_jws(cp["jws"], jwks)["service"] == "revocation-worker"

    with tampered(w.ctx.engine, ENTRIES, "chain_id", lic, seq=2):
        report = verify({"revocation-worker": w.app}, w.operator, state)
        assert report["ok"] is False and chains_named(report) == {lic}
        server = w.client.get("/v1/audit/verify", headers=w.operator).json()
        assert server["ok"] is False and {p["chain_id"] for p in server["problems"]} == {lic}
    assert verify({"revocation-worker": w.app}, w.operator, state)["ok"] is True

    # on the outbox: the notice topic, keyed audit:revocation-worker
    with w.ctx.engine.connect() as conn:
        row = conn.execute(
            select(Outbox.__table__).where(Outbox.event_type == "audit_checkpoint").order_by(Outbox.id.desc())
        ).first()
    assert row is not None and row.key == "audit:revocation-worker"
    assert row.topic == w.settings.kafka_notice_topic
    event = npb.NoticeEvent.FromString(row.payload)
    assert event.WhichOneof("payload") == "audit_checkpoint" and event.audit_checkpoint.root == claims["root"]


def test_rewind_after_a_seen_checkpoint_fails_naming_the_chain(worker: Any, tmp_path: Path) -> None:
    w = worker()
    lic, _, _ = history(w)
    claims = checkpoint(w)
    state = tmp_path / "state.json"
    assert verify({"revocation-worker": w.app}, w.operator, state)["ok"] is True

    with rewound(w.ctx.engine, ENTRIES, "chain_id", lic, set_head(lic), keep=2):
        # the chain alone is consistent: the server's own check without a checkpoint passes ...
        assert lic not in {
            p["chain_id"] for p in w.client.get("/v1/audit/verify", headers=w.operator).json()["problems"]
        }
        # ... the signed checkpoint and the verifier's memory do not
        server = w.client.get(
            "/v1/audit/verify", params={"checkpoint": claims["seq"]}, headers=w.operator
        ).json()
        assert server["ok"] is False and lic in {p["chain_id"] for p in server["problems"]}
        report = verify({"revocation-worker": w.app}, w.operator, state)
        assert report["ok"] is False and chains_named(report) == {lic}
        assert any(p["problem"].startswith("chain rewound") for p in report["problems"])
    assert verify({"revocation-worker": w.app}, w.operator, state)["ok"] is True
