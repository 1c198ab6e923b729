"""Follow-up that someone sees (issue 14): an unanswered notice gets a signed `revocation.reminder`
webhook before its deadline and a `revocation.overdue` one at it, each a message of its own
(webhook-id), received and verified by a real local receiver; answered notices get neither."""

from __future__ import annotations

import datetime as dt
from typing import Any

from revocation_worker.sweeps import sweep_overdue, sweep_reminders

from support.worker import outbox_events

WEEK = 7 * 24 * 3600.0


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_reminder_then_overdue_reach_the_buyer(worker: Any, receiver: Any) -> None:
    w = worker(worker_reminder_before_seconds=WEEK)
    rcv = receiver()
    lic, h = w.licensee()
    ep, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    answered = w.make_notice(lic, models=[])
    w.deliver()
    first = rcv.wait_for(2)
    assert {r.verify(secret)["type"] for r in first} == {"revocation.notice"}
    assert (
        w.client.post(f"/v1/notices/{answered}/ack", json={"outcome": "deleted"}, headers=h).status_code
        == 200
    )
    deadline = _time(w.notice(h, nid)["deadline"])

    # Eight days before the deadline: too early. Six days before: one reminder, for the unanswered one.
    assert sweep_reminders(w.ctx, now=deadline - dt.timedelta(days=8)) == 0
    assert sweep_reminders(w.ctx, now=deadline - dt.timedelta(days=6)) == 1
    reminder = rcv.wait_for(3)[2]
    body = reminder.verify(secret)  # signed like every webhook (Standard Webhooks)
    assert body["type"] == "revocation.reminder"
    assert reminder.webhook_id == f"msg_{nid}_reminder" != first[0].webhook_id
    assert body["data"]["notice_id"] == nid and _time(body["data"]["deadline"]) == deadline
    assert body["data"]["ack_url"].endswith(f"/v1/notices/{nid}/ack") and body["data"]["overdue"] is False
    notice = w.notice(h, nid)
    assert notice["reminded_at"] and notice["status"] == "delivered"
    assert {(d["kind"], d["status"]) for d in notice["deliveries"]} == {
        ("notice", "succeeded"),
        ("reminder", "succeeded"),
    }
    # Once only.
    assert sweep_reminders(w.ctx, now=deadline - dt.timedelta(days=1)) == 0

    # At the deadline: overdue, and the buyer is told too.
    assert sweep_overdue(w.ctx, now=deadline + dt.timedelta(seconds=1)) == 1
    overdue = rcv.wait_for(4)[3]
    body = overdue.verify(secret)
    assert body["type"] == "revocation.overdue" and body["data"]["overdue"] is True
    assert overdue.webhook_id == f"msg_{nid}_overdue"
    assert w.notice(h, nid)["status"] == "overdue"
    assert sweep_overdue(w.ctx, now=deadline + dt.timedelta(seconds=2)) == 0
    w.stop_loops()
    assert rcv.count() == 4  # nothing for the answered notice, nothing twice

    kinds = [row.event_type for row, ev in outbox_events(w.ctx, lic) if ev.notice_id == nid]
    assert kinds == ["notice_created", "notice_delivered", "notice_reminded", "notice_overdue"]
    (reminded,) = [ev for row, ev in outbox_events(w.ctx, lic) if row.event_type == "notice_reminded"]
    assert reminded.notice_reminded.deadline.ToDatetime(tzinfo=dt.UTC) == deadline
    # A reminder's success does not count as the notice's delivery (one NoticeDelivered, with its status).
    (delivered,) = [
        ev
        for row, ev in outbox_events(w.ctx, lic)
        if row.event_type == "notice_delivered" and ev.notice_id == nid
    ]
    assert delivered.notice_delivered.status_code == 200
    assert delivered.notice_delivered.webhook_id == f"msg_{nid}"
    assert delivered.notice_delivered.endpoint_id == ep
    assert delivered.notice_delivered.first_attempt_at.seconds > 0


def test_a_partially_answered_notice_is_reminded_and_a_failing_reminder_fails_nothing(
    worker: Any, receiver: Any
) -> None:
    w = worker(worker_reminder_before_seconds=WEEK, worker_retry_window_seconds=0.2)
    # Answers the notice, then refuses everything after it.
    rcv = receiver(lambda n, req: 200 if n == 0 else 503)
    lic, h = w.licensee()
    _, secret = w.register(h, rcv.url)
    nid = w.make_notice(lic)
    w.deliver()
    rcv.wait_for(1)
    w.wait_status(h, nid, "delivered")
    got = w.client.post(f"/v1/notices/{nid}/ack", json={"outcome": "deleted"}, headers=h).json()
    assert got["status"] == "partially_acknowledged"  # its model is not answered
    deadline = _time(got["deadline"])

    assert sweep_reminders(w.ctx, now=deadline - dt.timedelta(days=3)) == 1
    tries = rcv.wait_for(3)  # the reminder, retried within its (tiny) window
    assert {r.verify(secret)["type"] for r in tries[1:]} == {"revocation.reminder"}

    def reminder_dead() -> bool:
        ds = w.notice(h, nid)["deliveries"]
        return any(d["kind"] == "reminder" and d["status"] == "dead" for d in ds)

    from support.wait import wait_until

    wait_until(reminder_dead, what="the reminder's delivery to die")
    # The notice was delivered and stays as its answer left it: a dead reminder fails nothing.
    assert w.notice(h, nid)["status"] == "partially_acknowledged"
    assert [row.event_type for row, _ in outbox_events(w.ctx, lic)].count("notice_failed") == 0
