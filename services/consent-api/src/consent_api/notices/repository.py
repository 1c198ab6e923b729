from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_api.notices.models import RevocationNotice, RevocationResolution


def for_revocations(session: Session, revocation_ids: Sequence[str]) -> dict[str, list[RevocationNotice]]:
    out: dict[str, list[RevocationNotice]] = {r: [] for r in revocation_ids}
    if not revocation_ids:
        return out
    rows = session.scalars(
        select(RevocationNotice)
        .where(RevocationNotice.revocation_id.in_(list(revocation_ids)))
        .order_by(RevocationNotice.revocation_id, RevocationNotice.licensee_id)
    )
    for n in rows:
        out[n.revocation_id].append(n)
    return out


def resolutions(session: Session, revocation_ids: Sequence[str]) -> dict[str, RevocationResolution]:
    if not revocation_ids:
        return {}
    rows = session.scalars(
        select(RevocationResolution).where(RevocationResolution.revocation_id.in_(list(revocation_ids)))
    )
    return {r.revocation_id: r for r in rows}
