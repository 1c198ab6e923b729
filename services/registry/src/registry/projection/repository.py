from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, cast

from sqlalchemy import Connection, Insert, Row, Select, Table, Update, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.projection.models import (
    ProcessedEvent,
    ProjectedConsent,
    ProjectedConsentSample,
    ProjectedSample,
    SubjectErasure,
)
from registry.sql import among, id_chunks, insert_ignoring_duplicates, is_postgres_conn, member


def add_samples(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    insert_ignoring_duplicates(session, ProjectedSample, rows, ["sample_id"])


def get_consent(session: Session, consent_id: str, *, lock: bool = False) -> ProjectedConsent | None:
    stmt = select(ProjectedConsent).where(ProjectedConsent.consent_id == consent_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def consent_exists(session: Session, consent_id: str) -> bool:
    stmt = select(ProjectedConsent.consent_id).where(ProjectedConsent.consent_id == consent_id)
    return session.scalar(stmt) is not None


def add_consent_samples(session: Session, consent_id: str, sample_ids: Sequence[str]) -> None:
    rows = [{"consent_id": consent_id, "sample_id": s, "revoked": False} for s in sample_ids]
    insert_ignoring_duplicates(session, ProjectedConsentSample, rows, ["consent_id", "sample_id"])


def consent_sample_states(session: Session, consent_id: str, sample_ids: Sequence[str]) -> dict[str, bool]:
    """sample id -> revoked?, for those of `sample_ids` the consent covers (or covered)."""
    out: dict[str, bool] = {}
    for part in id_chunks(session, sample_ids):
        rows = session.execute(
            select(ProjectedConsentSample.sample_id, ProjectedConsentSample.revoked).where(
                ProjectedConsentSample.consent_id == consent_id,
                among(session, ProjectedConsentSample.sample_id, part),
            )
        )
        out.update({str(s): bool(r) for s, r in rows})
    return out


def known_samples(session: Session, sample_ids: Sequence[str]) -> dict[str, ProjectedSample]:
    out: dict[str, ProjectedSample] = {}
    for part in id_chunks(session, sample_ids):
        for s in session.scalars(
            select(ProjectedSample).where(among(session, ProjectedSample.sample_id, part))
        ):
            out[s.sample_id] = s
    return out


def processed_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0)


def sample_refs(session: Session, sample_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """sample id -> (sha256, kind) for the ones the projection knows, as plain rows."""
    conn = session.connection()
    out: dict[str, tuple[str, str]] = {}
    for part in id_chunks(session, sample_ids):
        stmt = select(ProjectedSample.sample_id, ProjectedSample.sha256, ProjectedSample.kind)
        out.update(
            (s, (h, k))
            for s, h, k in conn.execute(stmt.where(among(session, ProjectedSample.sample_id, part)))
        )
    return out


# -- the projection consumer's statements -----------------------------------------------------------
# Built once per dialect with bound parameters (ids as one array on PostgreSQL, an expanding IN on
# SQLite), run on the session's connection: no ORM objects, no per-call statement building or
# compiling. The consumer applies a poll's events in a few of these (projection.service).

CONSENTS = cast(Table, ProjectedConsent.__table__)
CONSENT_SAMPLES = cast(Table, ProjectedConsentSample.__table__)
ERASURES = cast(Table, SubjectErasure.__table__)
SAMPLES = cast(Table, ProjectedSample.__table__)


def _insert_ignoring(postgres: bool, table: Table, keys: list[str]) -> Insert:
    insert = postgresql.insert if postgres else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=keys)


@cache
def _statements(postgres: bool) -> dict[str, Select[Any] | Insert | Update]:
    c, cs = CONSENTS.c, CONSENT_SAMPLES.c
    return {
        "lock": select(
            c.consent_id,
            c.purposes,
            c.revoked_purposes,
            c.excluded_licensees,
            c.status,
            c.granted_at,
            c.ended_at,
            c.ended_by,
        )
        .where(member(postgres, c.consent_id, "ids"))
        .order_by(c.consent_id)
        .with_for_update(),
        "insert_consents": CONSENTS.insert(),
        "grant": update(CONSENTS)
        .where(c.consent_id == bindparam("b_id"))
        .values(
            licensee_id=bindparam("b_licensee_id"),
            purposes=bindparam("b_purposes", type_=c.purposes.type),
            expires_at=bindparam("b_expires_at", type_=c.expires_at.type),
            granted_at=bindparam("b_granted_at", type_=c.granted_at.type),
            updated_at=bindparam("b_updated_at", type_=c.updated_at.type),
        ),
        "state": update(CONSENTS)
        .where(c.consent_id == bindparam("b_id"))
        .values(
            revoked_purposes=bindparam("b_revoked_purposes", type_=c.revoked_purposes.type),
            excluded_licensees=bindparam("b_excluded_licensees", type_=c.excluded_licensees.type),
            status=bindparam("b_status"),
            ended_at=bindparam("b_ended_at", type_=c.ended_at.type),
            ended_by=bindparam("b_ended_by"),
            updated_at=bindparam("b_updated_at", type_=c.updated_at.type),
        ),
        "add_samples": _insert_ignoring(postgres, CONSENT_SAMPLES, ["consent_id", "sample_id"]),
        "revoke_all": update(CONSENT_SAMPLES)
        .where(cs.consent_id == bindparam("b_id"), cs.revoked.is_(False))
        .values(
            revoked=True,
            revoked_at=bindparam("b_at", type_=cs.revoked_at.type),
            revocation_id=bindparam("b_revocation_id"),
        ),
        "revoke_some": update(CONSENT_SAMPLES)
        .where(
            cs.consent_id == bindparam("b_id"),
            cs.sample_id == bindparam("b_sample_id"),
            cs.revoked.is_(False),
        )
        .values(
            revoked=True,
            revoked_at=bindparam("b_at", type_=cs.revoked_at.type),
            revocation_id=bindparam("b_revocation_id"),
        ),
        "add_erasures": _insert_ignoring(postgres, ERASURES, ["revocation_id"]),
        "add_projected_samples": _insert_ignoring(postgres, SAMPLES, ["sample_id"]),
    }


def _run(conn: Connection, name: str, params: Any) -> Any:
    return conn.execute(_statements(is_postgres_conn(conn))[name], params)


def lock_consent_states(conn: Connection, consent_ids: Sequence[str]) -> dict[str, Row[Any]]:
    """consent id -> its state (purposes, revoked_purposes, excluded_licensees, status, granted_at,
    ended_at, ended_by), rows locked (in id order) for the rest of the transaction: license
    creation locks the consent too, so a license is either refused or recorded before a revocation
    marks its samples."""
    if not consent_ids:
        return {}
    return {row.consent_id: row for row in _run(conn, "lock", {"ids": list(consent_ids)})}


def add_sample_rows(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """sample_id, subject_id, sha256, kind, registered_at; a known sample id stays as it is."""
    if rows:
        _run(conn, "add_projected_samples", list(rows))


def insert_consents(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Full rows (every column) of consents not in the projection yet."""
    if rows:
        _run(conn, "insert_consents", list(rows))


def set_granted(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """b_id, b_licensee_id, b_purposes, b_expires_at, b_granted_at, b_updated_at per consent."""
    if rows:
        _run(conn, "grant", list(rows))


def set_states(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """b_id, b_revoked_purposes, b_excluded_licensees, b_status, b_ended_at, b_ended_by,
    b_updated_at per consent."""
    if rows:
        _run(conn, "state", list(rows))


def insert_consent_samples(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """(consent_id, sample_id, revoked=False) rows; ones already there stay as they are."""
    if rows:
        _run(conn, "add_samples", list(rows))


def revoke_all_consent_samples(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """b_id, b_revocation_id, b_at per consent: withdraw every sample of it; already withdrawn
    ones keep their first revocation."""
    if rows:
        _run(conn, "revoke_all", list(rows))


def revoke_consent_samples(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """b_id, b_sample_id, b_revocation_id, b_at per (consent, sample): withdraw it; already
    withdrawn ones keep their first revocation."""
    if rows:
        _run(conn, "revoke_some", list(rows))


def add_erasures(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """revocation_id, subject_id, sample_count, occurred_at; a known revocation id stays as is."""
    if rows:
        _run(conn, "add_erasures", list(rows))
