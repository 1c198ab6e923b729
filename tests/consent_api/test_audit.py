"""The tamper-evident audit log: operators verify every subject's hash chain."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from consent_api.audit.models import AuditEntry
from rescind_common.db import make_engine

from support.helpers import assert_problem, grant, register, revoke, subject_id


@pytest.fixture(scope="module")
def engine(settings) -> Iterator[Engine]:
    """Direct access to consent-api's database, for what an attacker with DB access would do."""
    eng = make_engine(settings.consent_database_url, pool_size=1)
    yield eng
    eng.dispose()


def _some_history(client, seller) -> str:
    sids = register(client, seller, 3)
    c = grant(client, seller, sids)
    revoke(client, seller, c["id"], sample_ids=sids[:1])
    grant(client, seller, sids[1:], purposes=["evaluation"])
    return subject_id(client, seller)  # an access request: one more audit entry


def _verify(client, operator) -> dict:
    r = client.get("/v1/audit/verify", headers=operator)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _problems_for(report: dict, sub_id: str) -> list[dict]:
    return [p for p in report["problems"] if p["subject_id"] == sub_id]


def _rows(engine, sub_id: str) -> list[dict]:
    with engine.connect() as conn:
        result = conn.execute(
            select(AuditEntry.__table__).where(AuditEntry.subject_id == sub_id).order_by(AuditEntry.seq)
        )
        return [dict(r._mapping) for r in result]


def test_untouched_log_verifies(client, seller, operator):
    sub_id = _some_history(client, seller)
    report = _verify(client, operator)
    assert _problems_for(report, sub_id) == []
    assert report["ok"] is True, report["problems"]
    assert report["problems"] == []
    assert report["subjects_checked"] >= 1 and report["entries_checked"] >= 5


def test_operator_reads_a_subjects_entries(client, seller, operator):
    sub_id = _some_history(client, seller)
    r = client.get("/v1/audit/entries", params={"subject_id": sub_id}, headers=operator)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [e["seq"] for e in items] == [1, 2, 3, 4, 5]
    assert [e["action"] for e in items] == [
        "samples.registered",
        "consent.granted",
        "consent.revoked",
        "consent.granted",
        "rights.access",
    ]
    # each entry links to the previous one
    assert items[0]["prev_hash"] == "0" * 64
    assert all(items[i]["prev_hash"] == items[i - 1]["hash"] for i in range(1, len(items)))
    # a page boundary works
    r = client.get(
        "/v1/audit/entries", params={"subject_id": sub_id, "limit": 2, "after_seq": 2}, headers=operator
    )
    assert [e["seq"] for e in r.json()["items"]] == [3, 4]


def test_altered_entry_is_detected(client, seller, operator, engine):
    sub_id = _some_history(client, seller)
    target = _rows(engine, sub_id)[1]  # consent.granted
    assert target["action"] == "consent.granted"
    forged = {**target["data"], "purposes": ["model_training", "biometric_identification"]}
    try:
        with engine.begin() as conn:
            conn.execute(
                update(AuditEntry.__table__).where(AuditEntry.id == target["id"]).values(data=forged)
            )
        report = _verify(client, operator)
        assert report["ok"] is False
        mine = _problems_for(report, sub_id)
        assert mine, report
        assert {p["seq"] for p in mine} == {target["seq"]}
        assert any("alter" in p["problem"] for p in mine)
    finally:
        with engine.begin() as conn:
            conn.execute(
                update(AuditEntry.__table__).where(AuditEntry.id == target["id"]).values(data=target["data"])
            )
    assert _problems_for(_verify(client, operator), sub_id) == []  # restored: verifies again


def test_rewritten_entry_with_recomputed_hash_breaks_the_chain(client, seller, operator, engine):
    """An attacker who also recomputes the altered entry's own hash still breaks the next link."""
    from consent_api.audit.service import entry_hash

    sub_id = _some_history(client, seller)
    target = _rows(engine, sub_id)[2]  # consent.revoked
    forged = {**target["data"], "sample_count": 0}
    new_hash = entry_hash(
        target["prev_hash"],
        subject_id=sub_id,
        seq=target["seq"],
        at=target["at"],
        actor=target["actor"],
        action=target["action"],
        entity_id=target["entity_id"],
        data=forged,
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                update(AuditEntry.__table__)
                .where(AuditEntry.id == target["id"])
                .values(data=forged, hash=new_hash)
            )
        report = _verify(client, operator)
        assert report["ok"] is False
        assert any(p["seq"] == target["seq"] + 1 for p in _problems_for(report, sub_id)), report
    finally:
        with engine.begin() as conn:
            conn.execute(
                update(AuditEntry.__table__)
                .where(AuditEntry.id == target["id"])
                .values(data=target["data"], hash=target["hash"])
            )
    assert _problems_for(_verify(client, operator), sub_id) == []


def test_deleted_last_entry_is_detected(client, seller, operator, engine):
    sub_id = _some_history(client, seller)
    last = _rows(engine, sub_id)[-1]
    try:
        with engine.begin() as conn:
            conn.execute(delete(AuditEntry.__table__).where(AuditEntry.id == last["id"]))
        report = _verify(client, operator)
        assert report["ok"] is False
        mine = _problems_for(report, sub_id)
        assert mine, report
    finally:
        with engine.begin() as conn:
            conn.execute(insert(AuditEntry.__table__).values(**last))
    assert _problems_for(_verify(client, operator), sub_id) == []


def test_deleted_middle_entry_is_detected(client, seller, operator, engine):
    sub_id = _some_history(client, seller)
    middle = _rows(engine, sub_id)[2]
    try:
        with engine.begin() as conn:
            conn.execute(delete(AuditEntry.__table__).where(AuditEntry.id == middle["id"]))
        report = _verify(client, operator)
        assert report["ok"] is False
        assert _problems_for(report, sub_id), report
    finally:
        with engine.begin() as conn:
            conn.execute(insert(AuditEntry.__table__).values(**middle))
    assert _problems_for(_verify(client, operator), sub_id) == []


def test_verify_needs_the_operator_role(client, seller):
    assert_problem(client.get("/v1/audit/verify", headers=seller), 403)


def test_profile_changes_are_audited_without_their_values(client, seller, operator, engine):
    profile = {"display_name": "Ada Example", "email": "ada@example.com", "country": "DE"}
    assert client.put("/v1/profile", json=profile, headers=seller).status_code == 200
    assert client.put("/v1/profile", json={"country": "FR"}, headers=seller).status_code == 200
    sub_id = subject_id(client, seller)

    r = client.get("/v1/audit/entries", params={"subject_id": sub_id}, headers=operator)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(e["action"], e["entity_id"], e["data"]) for e in items[:2]] == [
        ("profile.set", sub_id, {"fields": ["country", "display_name", "email"]}),
        ("profile.set", sub_id, {"fields": ["country"]}),
    ]
    assert [e["action"] for e in items] == ["profile.set", "profile.set", "rights.access"]
    # The log outlives erasure: no personal data in it, as stored.
    stored = repr(_rows(engine, sub_id))
    for value in ("Ada Example", "ada@example.com"):
        assert value not in stored
    report = _verify(client, operator)
    assert _problems_for(report, sub_id) == []
    assert report["ok"] is True, report["problems"]


# -- signed checkpoints (docs/adr/0007-signed-audit-checkpoints.md) ------------------------------


def _checkpoint(client, engine) -> dict:
    from consent_api.audit import service as audit_service

    ctx = client.app.state.ctx
    with engine.begin() as conn:
        claims = audit_service.checkpoint(conn, ctx.settings, ctx.signer, force=True)
    assert claims is not None
    return claims


def _set_head(sub_id: str):
    from consent_api.subjects.models import Subject

    def set_(conn, seq: int, head: str) -> None:
        conn.execute(
            update(Subject.__table__).where(Subject.id == sub_id).values(audit_seq=seq, audit_head=head)
        )

    return set_


def test_checkpoint_is_signed_with_the_receipt_keys_and_published(client, seller, operator, engine, tmp_path):
    from consent_api.db import Outbox
    from rescind_common import audit_chain
    from rescind_common.proto.rescind.v1 import consent_events_pb2 as cpb

    from support.audit import verify

    sub_id = _some_history(client, seller)
    claims = _checkpoint(client, engine)
    jwks = client.get("/.well-known/jwks.json").json()  # the receipt keys
    (cp,) = client.get("/v1/audit/checkpoints", params={"limit": 1}, headers=operator).json()["items"]
    assert cp["seq"] == claims["seq"] and audit_chain.verify_jws(cp["jws"], jwks)["root"] == claims["root"]
    heads = client.get(
        "/v1/audit/heads", params={"checkpoint": cp["seq"], "limit": 500}, headers=operator
    ).json()
    assert heads["items"] and all(len(h["head"]) == 64 for h in heads["items"])
    assert sub_id in {h["chain_id"] for h in heads["items"]} or heads["next_cursor"]
    report = verify({"consent-api": client.app}, operator, tmp_path / "state.json")
    assert report["ok"] is True, report["problems"]
    server = client.get("/v1/audit/verify", params={"checkpoint": cp["seq"]}, headers=operator).json()
    assert server["ok"] is True and server["checkpoint"]["seq"] == cp["seq"]
    assert (
        client.get("/v1/audit/verify", params={"checkpoint": 2**31 - 1}, headers=operator).status_code == 404
    )
    with engine.connect() as conn:
        row = conn.execute(
            select(Outbox.__table__).where(Outbox.event_type == "audit_checkpoint").order_by(Outbox.id.desc())
        ).first()
    assert row is not None and row.key == "audit:consent-api"
    event = cpb.ConsentEvent.FromString(row.payload)
    assert event.WhichOneof("payload") == "audit_checkpoint" and event.audit_checkpoint.jws == cp["jws"]


def test_tampered_entry_fails_the_cli_naming_the_subjects_chain(client, seller, operator, engine, tmp_path):
    from support.audit import chains_named, tampered, verify

    sub_id = _some_history(client, seller)
    with tampered(engine, AuditEntry.__table__, "subject_id", sub_id, seq=2):
        report = verify({"consent-api": client.app}, operator, tmp_path / "state.json")
        assert report["ok"] is False and chains_named(report) == {sub_id}
    assert verify({"consent-api": client.app}, operator, tmp_path / "state.json")["ok"] is True


def test_rewind_after_a_seen_checkpoint_fails_naming_the_subjects_chain(
    client, seller, operator, engine, tmp_path
):
    from support.audit import chains_named, rewound, verify

    state = tmp_path / "state.json"
    sub_id = _some_history(client, seller)
    _checkpoint(client, engine)
    assert verify({"consent-api": client.app}, operator, state)["ok"] is True
    with rewound(engine, AuditEntry.__table__, "subject_id", sub_id, _set_head(sub_id), keep=3):
        # consistent on its own: the chain check alone passes for this subject ...
        assert _problems_for(_verify(client, operator), sub_id) == []
        # ... the verifier, remembering the checkpoint, does not
        report = verify({"consent-api": client.app}, operator, state)
        assert report["ok"] is False and chains_named(report) == {sub_id}
        assert any(p["problem"].startswith("chain rewound") for p in report["problems"])
    assert verify({"consent-api": client.app}, operator, state)["ok"] is True
