"""A revocation's overall status, from what each licensee told reached."""

from __future__ import annotations

from consent_api.notices.models import RevocationNotice, RevocationResolution


def overall_status(
    base_status: str, resolution: RevocationResolution | None, notices: list[RevocationNotice]
) -> str:
    """`completed` when nothing had to be told; otherwise the least advanced licensee decides,
    except that any overdue or failed notice shows (the seller must see a problem)."""
    if base_status == "completed":
        return "completed"
    if resolution is None and not notices:
        return "pending"
    if resolution is not None and resolution.notice_count == 0 and not notices:
        return "completed"
    statuses = {n.status for n in notices}
    if resolution is not None and len(notices) < resolution.notice_count:
        statuses.add("pending")
    if "overdue" in statuses:
        return "overdue"
    if "failed" in statuses:
        return "failed"
    if statuses == {"acknowledged"}:
        return "acknowledged"
    if statuses <= {"delivered", "acknowledged"}:
        return "delivered"
    return "pending"
