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
