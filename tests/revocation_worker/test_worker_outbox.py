"""revocation-worker's notice events: written to its outbox in the same transaction as the change,
keyed by licensee id, protobuf `rescind.v1.NoticeEvent`, and free of personal data."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rescind_common.db import utcnow
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.sweeps import sweep_overdue

from support.wait import wait_until
from support.worker import outbox_events

# Things a licensee or the worker holds that must never reach the (unforgettable) log.
PII = "jane.doe@example.com"


def _check_envelopes(w: Any, licensee_id: str, forbidden: list[str]) -> list[tuple[Any, pb.NoticeEvent]]:
    events = outbox_events(w.ctx, licensee_id)
    assert events, "no events"
    for row, ev in events:
        assert row.key == licensee_id and ev.licensee_id == licensee_id
        assert row.topic == w.settings.kafka_notice_topic
        assert row.event_id == ev.event_id and ev.event_id.startswith("evt")
        assert row.event_type == ev.WhichOneof("payload")
        assert ev.producer == "revocation-worker"
        assert ev.occurred_at.seconds > 0
        for secret in forbidden:
            assert secret.encode() not in row.payload, (row.event_type, secret)
    assert len({row.event_id for row, _ in events}) == len(events)
    return events


def test_notice_lifecycle_events(worker: Any, receiver: Any) -> None:
    w = worker()
    rcv = receiver(lambda n, req: 500 if n == 0 else 200)
    lic, h = w.licensee()
    ep, secret = w.register(h, rcv.url)
    subject = "sub_outboxtest0001"
    nid = w.make_notice(
        lic, samples=3, models=[{"model_id": "mdl_ob1", "name": "n", "version": "1"}], subject_id=subject
    )
    w.deliver()
    w.wait_status(h, nid, "delivered")
    rcv.wait_for(2)[-1].verify(secret)
    ack = {
        "status": "completed",
        "models": [{"model_id": "mdl_ob1", "action": "retrained"}],
        "evidence": {"contact": PII, "note": "deleted by Jane Doe"},
    }
    assert w.client.post(f"/v1/notices/{nid}/ack", json=ack, headers=h).status_code == 200

    events = _check_envelopes(w, lic, [PII, "Jane Doe", secret, rcv.url])
    assert [row.event_type for row, _ in events] == [
        "notice_created",
        "notice_delivered",
        "notice_acknowledged",
    ]
    notice = w.notice(h, nid)
    for _, ev in events:
        assert (
            ev.notice_id == nid and ev.revocation_id == notice["revocation_id"] and ev.subject_id == subject
        )

    created, delivered, acked = (ev for _, ev in events)
    assert created.notice_created.sample_count == 3 and created.notice_created.model_count == 1
    deadline = dt.datetime.fromisoformat(notice["deadline"].replace("Z", "+00:00"))
    assert created.notice_created.deadline.ToDatetime(tzinfo=dt.UTC) == deadline
    assert delivered.notice_delivered.endpoint_id == ep
    assert delivered.notice_delivered.attempts == 2
    assert delivered.notice_delivered.latency_seconds >= 0
    assert acked.notice_acknowledged.action == pb.ACK_ACTION_COMPLETED
    assert list(acked.notice_acknowledged.model_ids) == ["mdl_ob1"]


def test_overdue_failed_and_disabled_events(worker: Any, receiver: Any) -> None:
    w = worker(worker_retry_window_seconds=0.3)
    # Licensee A: its only endpoint is down for the whole (tiny) retry window -> failed.
    down = receiver(lambda n, req: 503)
    lic_a, h_a = w.licensee()
    _, secret_a = w.register(h_a, down.url)
    failing = w.make_notice(lic_a)
    # Licensee B: its endpoint answers 410 -> disabled; its notice is long past its deadline -> overdue.
    gone = receiver(lambda n, req: 410)
    lic_b, h_b = w.licensee()
    ep_b, secret_b = w.register(h_b, gone.url)
    late = w.make_notice(lic_b, occurred_at=utcnow() - dt.timedelta(days=40))
    w.deliver()
    w.wait_status(h_a, failing, "failed")
    gone.wait_for(1)
    wait_until(lambda: w.client.get(f"/v1/endpoints/{ep_b}", headers=h_b).json()["status"] == "disabled")
    sweep_overdue(w.ctx)
    assert w.notice(h_b, late)["status"] == "overdue"
    for r in down.wait_for(1) + gone.wait_for(1):
        r.verify(secret_a if r in down.requests else secret_b)

    a = _check_envelopes(w, lic_a, [down.url, secret_a])
    assert [row.event_type for row, _ in a] == ["notice_created", "notice_failed"]
    assert a[1][1].notice_id == failing and "503" in a[1][1].notice_failed.reason

    b = _check_envelopes(w, lic_b, [gone.url, secret_b])
    # Its only delivery died with the endpoint, in the same transaction: failed, then overdue.
    assert [row.event_type for row, _ in b] == [
        "notice_created",
        "endpoint_disabled",
        "notice_failed",
        "notice_overdue",
    ]
    disabled = b[1][1]
    assert disabled.endpoint_disabled.endpoint_id == ep_b and disabled.notice_id == ""
    assert b[2][1].notice_id == late and "410" in b[2][1].notice_failed.reason
    assert b[3][1].notice_id == late
