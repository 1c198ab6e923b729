"""Notice deadlines and reminders as plain values (`revocation_worker.policy.rules`): one calendar
month (GDPR Art. 12(3)) by default, days when configured, a licensee's override first."""

from __future__ import annotations

import datetime as dt

from revocation_worker.policy.rules import (
    Deadline,
    add_months,
    deadline_of,
    remind_at,
    reminder_due,
    rule_in_force,
)


def at(y: int, m: int, d: int, h: int = 12) -> dt.datetime:
    return dt.datetime(y, m, d, h, 30, 15, 123, tzinfo=dt.UTC)


def test_one_calendar_month_clamps_to_the_end_of_a_shorter_month() -> None:
    month = Deadline(months=1)
    assert deadline_of(at(2026, 1, 31), month) == at(2026, 2, 28)
    assert deadline_of(at(2028, 1, 31), month) == at(2028, 2, 29)  # leap year
    assert deadline_of(at(2026, 3, 31), month) == at(2026, 4, 30)
    assert deadline_of(at(2026, 1, 15), month) == at(2026, 2, 15)
    assert deadline_of(at(2026, 12, 31), month) == at(2027, 1, 31)  # over the year's end
    assert deadline_of(at(2026, 2, 28), month) == at(2026, 3, 28)


def test_several_months_and_time_of_day_kept() -> None:
    assert add_months(at(2026, 11, 30, 23), 3) == at(2027, 2, 28, 23)
    assert add_months(at(2026, 8, 31), 18) == at(2028, 2, 29)
    # Counted in UTC whatever zone the time comes in.
    cet = dt.timezone(dt.timedelta(hours=1))
    local = dt.datetime(2026, 2, 1, 0, 30, tzinfo=cet)  # Jan 31, 23:30 UTC
    assert deadline_of(local, Deadline(months=1)) == dt.datetime(2026, 2, 28, 23, 30, tzinfo=dt.UTC)


def test_days_when_set() -> None:
    assert deadline_of(at(2026, 1, 31), Deadline(days=30)) == at(2026, 3, 2)
    assert deadline_of(at(2026, 1, 31), Deadline(days=0.5)) == at(2026, 1, 31) + dt.timedelta(hours=12)


def test_rule_in_force_override_then_days_then_months() -> None:
    assert rule_in_force(1, None) == Deadline(months=1)
    assert rule_in_force(1, 30.0) == Deadline(days=30.0)  # an explicit days setting wins
    assert rule_in_force(1, 30.0, override_months=2) == Deadline(months=2)
    assert rule_in_force(1, None, override_days=10.0) == Deadline(days=10.0)


def test_reminder_before_the_deadline_or_half_way() -> None:
    week = 7 * 86400.0
    created, deadline = at(2026, 1, 31), at(2026, 2, 28)
    assert remind_at(created, deadline, week) == at(2026, 2, 21)
    # Made five days before its deadline: reminded half-way.
    late = deadline - dt.timedelta(days=5)
    assert remind_at(late, deadline, week) == deadline - dt.timedelta(days=2.5)
    assert not reminder_due("delivered", None, created, deadline, at(2026, 2, 20), week)
    assert reminder_due("delivered", None, created, deadline, at(2026, 2, 21), week)
    assert reminder_due("partially_acknowledged", None, created, deadline, at(2026, 2, 25), week)
    # Not twice, not once answered, not at or past the deadline (overdue instead).
    assert not reminder_due("delivered", at(2026, 2, 21), created, deadline, at(2026, 2, 25), week)
    assert not reminder_due("acknowledged", None, created, deadline, at(2026, 2, 25), week)
    assert not reminder_due("overdue", None, created, deadline, at(2026, 2, 25), week)
    assert not reminder_due("delivered", None, created, deadline, deadline, week)
