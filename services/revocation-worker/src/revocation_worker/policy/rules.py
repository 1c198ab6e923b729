"""When a notice is due: pure functions of the revocation's time and the deadline in force."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deadline:
    """A deadline of `months` calendar months or of `days` days (exactly one is set)."""

    months: int | None = None
    days: float | None = None


def add_months(at: dt.datetime, months: int) -> dt.datetime:
    """`at` plus whole calendar months, the day clamped to the end of a shorter month (Jan 31 + 1 ->
    Feb 28, or 29 in a leap year), time of day and zone kept."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def deadline_of(revoked_at: dt.datetime, rule: Deadline) -> dt.datetime:
    """The notice's deadline: days when given, else calendar months (counted in UTC)."""
    if rule.days is not None:
        return revoked_at + dt.timedelta(days=rule.days)
    return add_months(revoked_at.astimezone(dt.UTC), rule.months or 1)


def rule_in_force(
    default_months: int,
    default_days: float | None,
    override_months: int | None = None,
    override_days: float | None = None,
) -> Deadline:
    """A licensee's override when it has one, else the settings' days when set, else their months."""
    if override_days is not None:
        return Deadline(days=override_days)
    if override_months is not None:
        return Deadline(months=override_months)
    if default_days is not None:
        return Deadline(days=default_days)
    return Deadline(months=default_months)


def remind_at(created_at: dt.datetime, deadline: dt.datetime, before: float) -> dt.datetime:
    """When an unanswered notice's reminder is due: `before` seconds ahead of its deadline, or half-way
    from its creation to its deadline when it was made closer to it than that."""
    return max(deadline - dt.timedelta(seconds=before), created_at + (deadline - created_at) / 2)


# A notice still waiting for (part of) its answer.
UNANSWERED = ("pending", "delivered", "failed", "partially_acknowledged")


def reminder_due(
    status: str,
    reminded_at: dt.datetime | None,
    created_at: dt.datetime,
    deadline: dt.datetime,
    now: dt.datetime,
    before: float,
) -> bool:
    """Once per notice, while unanswered and before its deadline (at it, it is overdue instead)."""
    return (
        status in UNANSWERED
        and reminded_at is None
        and now < deadline
        and now >= remind_at(created_at, deadline, before)
    )
