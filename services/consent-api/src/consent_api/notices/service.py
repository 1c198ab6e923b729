"""A revocation's overall status, from what each licensee told reached."""

from __future__ import annotations

from consent_api.notices.models import RevocationNotice, RevocationResolution


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
    if statuses <= {"delivered", "acknowledged"}:
        return "delivered"
    return "pending"
