from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, select, update
from sqlalchemy.orm import Session

from consent_api.consents.models import Consent, ConsentSample
from rescind_common import bulk
from rescind_common.bulk import EXECUTEMANY_CHUNK, chunks
from rescind_common.db import keyset_page


def row_insert(values: dict[str, Any]) -> bulk.Write:
    """The consent row as a write for `rescind_common.bulk.execute`."""
    return bulk.insert_rows(Consent, [values])


def add_samples(session: Session, consent_id: str, sample_ids: Sequence[str]) -> None:
    rows: list[dict[str, Any]] = [{"consent_id": consent_id, "sample_id": s} for s in sample_ids]
    conn = session.connection()
    for part in chunks(rows, EXECUTEMANY_CHUNK):
        conn.execute(insert(ConsentSample), list(part))


def sample_insert(consent_id: str, sample_id: str) -> bulk.Write:
    """The link of a one-sample consent, as a write for `rescind_common.bulk.execute`."""
    link = {"consent_id": consent_id, "sample_id": sample_id, "revoked_at": None, "revocation_id": None}
    return bulk.insert_rows(ConsentSample, [link])


def get(session: Session, subject_id: str, consent_id: str, *, lock: bool = False) -> Consent | None:
    stmt = select(Consent).where(Consent.subject_id == subject_id, Consent.id == consent_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def get_with_active_sample_ids(
    session: Session, subject_id: str, consent_id: str
) -> tuple[Consent | None, list[str]]:
    """The consent, locked, and the ids of its samples not yet revoked (in id order), in one query."""
    rows = session.execute(
        select(Consent, ConsentSample.sample_id)
        .outerjoin(
            ConsentSample,
            and_(ConsentSample.consent_id == Consent.id, ConsentSample.revoked_at.is_(None)),
        )
        .where(Consent.subject_id == subject_id, Consent.id == consent_id)
        .order_by(ConsentSample.sample_id)
        .with_for_update(of=Consent)
    ).all()
    if not rows:
        return None, []
    return rows[0][0], [sid for _, sid in rows if sid is not None]


def active_sample_ids_of(session: Session, consent_ids: Sequence[str]) -> dict[str, list[str]]:
    """consent id -> the ids of its samples not yet revoked (in id order), for many consents at once."""
    out: dict[str, list[str]] = {cid: [] for cid in consent_ids}
    conn = session.connection()
    for part in chunks(consent_ids):
        rows = conn.execute(
            select(_LINKS.c.consent_id, _LINKS.c.sample_id)
            .where(_LINKS.c.consent_id.in_(part), _LINKS.c.revoked_at.is_(None))
            .order_by(_LINKS.c.consent_id, _LINKS.c.sample_id)
        )
        for cid, sid in rows:
            out[cid].append(sid)
    return out


def page(
    session: Session, subject_id: str, status: str | None, after: str | None, limit: int
) -> list[Consent]:
    stmt = select(Consent).where(Consent.subject_id == subject_id)
    if status:
        stmt = stmt.where(Consent.status == status)
    return keyset_page(session, stmt, Consent.id, after, limit)


def active_for_subject(session: Session, subject_id: str) -> list[Consent]:
    stmt = select(Consent).where(Consent.subject_id == subject_id, Consent.status == "active")
    return list(session.scalars(stmt.order_by(Consent.id).with_for_update()))


def sample_ids(session: Session, consent_id: str, *, active: bool | None = None) -> list[str]:
    stmt = select(ConsentSample.sample_id).where(ConsentSample.consent_id == consent_id)
    if active is True:
        stmt = stmt.where(ConsentSample.revoked_at.is_(None))
    elif active is False:
        stmt = stmt.where(ConsentSample.revoked_at.is_not(None))
    return list(session.scalars(stmt.order_by(ConsentSample.sample_id)))


def active_consents_with_samples(
    session: Session, subject_id: str, sample_ids: Sequence[str]
) -> dict[str, set[str]]:
    """consent id -> which of these samples it still covers."""
    out: dict[str, set[str]] = {}
    for part in chunks(sample_ids):
        rows = session.execute(
            select(ConsentSample.consent_id, ConsentSample.sample_id)
            .join(Consent, Consent.id == ConsentSample.consent_id)
            .where(
                Consent.subject_id == subject_id,
                Consent.status == "active",
                ConsentSample.revoked_at.is_(None),
                ConsentSample.sample_id.in_(part),
            )
        )
        for cid, sid in rows:
            out.setdefault(cid, set()).add(sid)
    return out


_CONSENTS = cast(Table, Consent.__table__)
_LINKS = cast(Table, ConsentSample.__table__)
# What a revocation changes on a consent, as one UPDATE template.
_CONSENT_UPDATE = (
    update(_CONSENTS)
    .where(_CONSENTS.c.id == bindparam("cupd_id"))
    .values(
        {
            name: bindparam(f"cupd_{name}", type_=_CONSENTS.c[name].type)
            for name in (
                "status",
                "ended_at",
                "active_sample_count",
                "revoked_purposes",
                "excluded_licensees",
            )
        }
    )
)
_MARK_REVOKED = (
    update(_LINKS)
    .where(
        _LINKS.c.consent_id == bindparam("mark_consent_id"),
        _LINKS.c.sample_id.in_(bindparam("mark_sample_ids", expanding=True)),
        _LINKS.c.revoked_at.is_(None),
    )
    .values(
        revoked_at=bindparam("mark_at", type_=_LINKS.c.revoked_at.type),
        revocation_id=bindparam("mark_revocation_id"),
    )
)


def consent_update(consent: Consent) -> bulk.Write:
    """The revocation's changes to `consent` (as the caller set them on the object), as a write for
    `rescind_common.bulk.execute`."""
    return bulk.statement(
        _CONSENT_UPDATE,
        {
            "cupd_id": consent.id,
            "cupd_status": consent.status,
            "cupd_ended_at": consent.ended_at,
            "cupd_active_sample_count": consent.active_sample_count,
            "cupd_revoked_purposes": consent.revoked_purposes or [],
            "cupd_excluded_licensees": consent.excluded_licensees or [],
        },
    )


def mark_revoked(consent_id: str, sample_ids: Sequence[str], revocation_id: str, at: Any) -> bulk.Write:
    """Mark these (at most IN_LIST_CHUNK) of the consent's samples revoked, as a write for
    `rescind_common.bulk.execute`."""
    return bulk.statement(
        _MARK_REVOKED,
        {
            "mark_consent_id": consent_id,
            "mark_sample_ids": list(sample_ids),
            "mark_at": at,
            "mark_revocation_id": revocation_id,
        },
    )


def expired_candidates(session: Session, now: Any, limit: int) -> list[tuple[str, str]]:
    rows = session.execute(
        select(Consent.id, Consent.subject_id)
        .where(Consent.status == "active", Consent.expires_at.is_not(None), Consent.expires_at <= now)
        .order_by(Consent.expires_at)
        .limit(limit)
    )
    return [(cid, sid) for cid, sid in rows]
