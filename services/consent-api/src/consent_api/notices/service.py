"""A revocation's overall status, from what each licensee told reached."""

from __future__ import annotations

import datetime as dt

from consent_api.notices.models import RevocationNotice, RevocationResolution
from consent_api.notices.rules import is_overdue


def overall_status(
    base_status: str, resolution: RevocationResolution | None, notices: list[RevocationNotice]
) -> str:
    """`completed` when nothing had to be told; otherwise the least advanced licensee decides,
    except that any overdue or failed notice shows (the seller must see a problem).

    A licensee the resolution named whose notice has not arrived yet counts as pending. Notices
    may also come for licensees it did not name (told later: a license recorded while the registry
    lagged behind the revocation); they count like the others, and never stand in for a named
    licensee still missing (so the resolution's licensees are compared, not only its count)."""
    if base_status == "completed":
        return "completed"
    if resolution is None and not notices:
        return "pending"
    if resolution is not None and resolution.notice_count == 0 and not notices:
        return "completed"
    statuses = {n.status for n in notices}
    if resolution is not None:
        seen = {n.licensee_id for n in notices}
        if resolution.licensee_ids is not None:
            missing = bool(set(resolution.licensee_ids) - seen)
        else:  # a resolution recorded before its licensees were
            missing = len(notices) < resolution.notice_count
        if missing:
            statuses.add("pending")
    if "overdue" in statuses:
        return "overdue"
    if "failed" in statuses:
        return "failed"
    if statuses == {"acknowledged"}:
        return "acknowledged"
    if "partially_acknowledged" in statuses and statuses <= {
        "delivered",
        "partially_acknowledged",
        "acknowledged",
    }:
        return "partially_acknowledged"
    if statuses <= {"delivered", "acknowledged"}:
        return "delivered"
    return "pending"


def erasure_status(
    base_status: str,
    resolution: RevocationResolution | None,
    notices: list[RevocationNotice],
    now: dt.datetime,
) -> tuple[str, dt.datetime | None]:
    """An erasure request's status and completion time, from its revocation's holders.

    `in_progress` until every holder the resolution named has a notice and each notice has a final
    answer (acknowledged) or is overdue; then `completed` when every holder answered in full, else
    `completed_with_exceptions` (overdue, failed or only partly answered by the deadline). Nothing
    to tell, or nobody holding the samples: `completed` at once (the revocation's own time)."""
    if base_status == "completed":
        return "completed", None
    if resolution is None:
        return "in_progress", None
    seen = {n.licensee_id for n in notices}
    if resolution.licensee_ids is not None:
        if set(resolution.licensee_ids) - seen:
            return "in_progress", None
    elif len(notices) < resolution.notice_count:
        return "in_progress", None
    if not notices:
        return "completed", resolution.resolved_at
    ends: list[dt.datetime] = []
    exceptions = False
    for n in notices:
        if n.status == "acknowledged":
            ends.append(n.answered_at or n.updated_at)
        elif is_overdue(n.status, {"overdue_at": n.overdue_at, "deadline": n.deadline}, now):
            exceptions = True
            ends.append(n.overdue_at or n.deadline or n.updated_at)
        else:
            return "in_progress", None
    return ("completed_with_exceptions" if exceptions else "completed"), max(ends)
