from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any, cast

from sqlalchemy import Connection, Row, Select, Table, Update, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from registry.licenses.models import License, LicenseSample
from registry.projection.models import ProjectedSample
from registry.sql import (
    among,
    chunk_size,
    id_chunks,
    insert_ignoring_duplicates,
    is_postgres_conn,
    member,
)
from rescind_common.bulk import EXECUTEMANY_CHUNK, chunks
from rescind_common.db import keyset_page


def get(session: Session, license_id: str) -> License | None:
    return session.get(License, license_id)


def get_many(session: Session, ids: Iterable[str]) -> dict[str, License]:
    out: dict[str, License] = {}
    for part in id_chunks(session, sorted(set(ids))):
        for row in session.scalars(select(License).where(among(session, License.id, part))):
            out[row.id] = row
    return out


def find(
    session: Session,
    *,
    licensee_id: str,
    consent_id: str,
    purpose: str,
    dataset_name: str,
    dataset_version: str,
    lock: bool = False,
) -> License | None:
    stmt = select(License).where(
        License.licensee_id == licensee_id,
        License.consent_id == consent_id,
        License.purpose == purpose,
        License.dataset_name == dataset_name,
        License.dataset_version == dataset_version,
    )
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def by_dataset(session: Session, licensee_id: str, name: str, version: str) -> list[License]:
    stmt = select(License).where(
        License.licensee_id == licensee_id, License.dataset_name == name, License.dataset_version == version
    )
    return list(session.scalars(stmt.order_by(License.id)))


def page(
    session: Session, licensee_id: str | None, status: str | None, after: str | None, limit: int
) -> list[License]:
    stmt = select(License)
    if licensee_id is not None:
        stmt = stmt.where(License.licensee_id == licensee_id)
    if status:
        stmt = stmt.where(License.status == status)
    return keyset_page(session, stmt, License.id, after, limit)


def add_samples(session: Session, license_id: str, sample_ids: Sequence[str]) -> None:
    """A new license's samples: plain executemany inserts, no conflict possible."""
    rows: list[dict[str, Any]] = [{"license_id": license_id, "sample_id": s} for s in sample_ids]
    for part in chunks(rows, EXECUTEMANY_CHUNK):
        session.execute(insert(LicenseSample), list(part))


def add_samples_ignoring_duplicates(session: Session, license_id: str, sample_ids: Sequence[str]) -> None:
    rows = [{"license_id": license_id, "sample_id": s} for s in sample_ids]
    insert_ignoring_duplicates(session, LicenseSample, rows, ["license_id", "sample_id"])


def sample_ids_in(session: Session, license_id: str, sample_ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for part in id_chunks(session, sample_ids):
        out.update(
            session.scalars(
                select(LicenseSample.sample_id).where(
                    LicenseSample.license_id == license_id, among(session, LicenseSample.sample_id, part)
                )
            )
        )
    return out


def samples_page(
    session: Session, license_id: str, after: str | None, limit: int
) -> list[tuple[LicenseSample, ProjectedSample | None]]:
    stmt = (
        select(LicenseSample, ProjectedSample)
        .outerjoin(ProjectedSample, ProjectedSample.sample_id == LicenseSample.sample_id)
        .where(LicenseSample.license_id == license_id)
    )
    if after:
        stmt = stmt.where(LicenseSample.sample_id > after)
    rows = session.execute(stmt.order_by(LicenseSample.sample_id).limit(limit))
    return [(ls, ps) for ls, ps in rows]


LICENSES = cast(Table, License.__table__)
LICENSE_SAMPLES = cast(Table, LicenseSample.__table__)


@cache
def _revocation_statements(postgres: bool) -> dict[str, Select[Any] | Update]:
    lic, ls = LICENSES.c, LICENSE_SAMPLES.c
    withdraw = update(LICENSE_SAMPLES).values(
        revoked_at=bindparam("b_at", type_=ls.revoked_at.type), revocation_id=bindparam("b_revocation_id")
    )
    of_licenses = (member(postgres, ls.license_id, "b_license_ids"), ls.revoked_at.is_(None))
    return {
        "lock": select(
            lic.id,
            lic.consent_id,
            lic.purpose,
            lic.licensee_id,
            lic.status,
            lic.sample_count,
            lic.revoked_sample_count,
            lic.revoked_at,
        )
        .where(member(postgres, lic.consent_id, "ids"))
        .order_by(lic.id)
        .with_for_update(),
        "withdraw_all": withdraw.where(*of_licenses).returning(ls.license_id, ls.sample_id),
        "withdraw_some": withdraw.where(
            *of_licenses, member(postgres, ls.sample_id, "b_sample_ids")
        ).returning(ls.license_id, ls.sample_id),
        "counts": update(LICENSES)
        .where(lic.id == bindparam("b_id"))
        .values(
            revoked_sample_count=bindparam("b_revoked_sample_count"),
            status=bindparam("b_status"),
            revoked_at=bindparam("b_revoked_at", type_=lic.revoked_at.type),
        ),
    }


def lock_for_consents(conn: Connection, consent_ids: Sequence[str]) -> list[Row[Any]]:
    """The licenses under these consents (id, consent_id, purpose, licensee_id, status,
    sample_count, revoked_sample_count, revoked_at), locked in id order (after their consents: the order
    license creation takes)."""
    if not consent_ids:
        return []
    stmt = _revocation_statements(is_postgres_conn(conn))["lock"]
    return list(conn.execute(stmt, {"ids": list(consent_ids)}))


def revoke_samples(
    conn: Connection,
    license_ids: Sequence[str],
    sample_ids: Sequence[str] | None,
    revocation_id: str,
    at: dt.datetime,
) -> dict[str, list[str]]:
    """Mark these samples (None: all) of these licenses withdrawn; earlier withdrawals keep theirs.
    Returns license id -> the samples withdrawn from it now (those of its rows this marked)."""
    postgres = is_postgres_conn(conn)
    statements = _revocation_statements(postgres)
    size = chunk_size(postgres)
    params = {"b_at": at, "b_revocation_id": revocation_id}
    out: dict[str, list[str]] = {}
    for lic_part in chunks(license_ids, size):
        params["b_license_ids"] = list(lic_part)
        parts: Iterable[Sequence[str] | None] = [None] if sample_ids is None else chunks(sample_ids, size)
        for part in parts:
            name = "withdraw_all"
            if part is not None:
                name, params["b_sample_ids"] = "withdraw_some", list(part)
            for license_id, sample_id in conn.execute(statements[name], params):
                out.setdefault(license_id, []).append(sample_id)
    return out


def set_counts(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """b_id, b_revoked_sample_count, b_status, b_revoked_at per license."""
    if rows:
        conn.execute(_revocation_statements(is_postgres_conn(conn))["counts"], list(rows))


def holdings(session: Session, sample_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(sample_id, license_id) for every license holding one of these samples, revoked or not.
    Served by ix_license_samples_sample_id_license_id alone (an index-only scan on PostgreSQL)."""
    out: list[tuple[str, str]] = []
    conn = session.connection()  # plain rows, no ORM bookkeeping: this can be thousands of rows
    for part in id_chunks(session, sample_ids):
        stmt = select(LicenseSample.sample_id, LicenseSample.license_id)
        out.extend(
            (s, lic) for s, lic in conn.execute(stmt.where(among(session, LicenseSample.sample_id, part)))
        )
    return out


def summaries(session: Session, ids: Iterable[str]) -> dict[str, Any]:
    """license id -> row (id, licensee_id, status, consent_id, purpose, dataset_name, dataset_version),
    as plain rows: the holders lookup reads thousands of them."""
    conn = session.connection()
    cols = (
        License.id,
        License.licensee_id,
        License.status,
        License.consent_id,
        License.purpose,
        License.dataset_name,
        License.dataset_version,
    )
    out: dict[str, Any] = {}
    for part in id_chunks(session, sorted(set(ids))):
        out.update(
            (row.id, row) for row in conn.execute(select(*cols).where(among(session, License.id, part)))
        )
    return out


def holding_counts(session: Session, sample_ids: Sequence[str]) -> dict[str, int]:
    """license id -> how many of these (distinct) samples it holds, revoked or not: one GROUP BY per
    chunk over ix_license_samples_sample_id_license_id, never the (sample, license) pairs."""
    out: dict[str, int] = {}
    conn = session.connection()
    for part in id_chunks(session, sample_ids):
        stmt = (
            select(LicenseSample.license_id, func.count())
            .where(among(session, LicenseSample.sample_id, part))
            .group_by(LicenseSample.license_id)
        )
        for license_id, n in conn.execute(stmt):
            out[license_id] = out.get(license_id, 0) + int(n)
    return out


def held_among(
    session: Session, license_ids: Sequence[str], sample_ids: Sequence[str]
) -> dict[str, list[str]]:
    """license id -> which of these samples it holds, for these licenses only (the ones holding a
    strict subset of a lookup: the others are answered by a count)."""
    out: dict[str, list[str]] = {}
    if not license_ids:
        return out
    conn = session.connection()
    for lic_part in id_chunks(session, sorted(license_ids)):
        for part in id_chunks(session, sample_ids):
            stmt = select(LicenseSample.license_id, LicenseSample.sample_id).where(
                among(session, LicenseSample.sample_id, part),
                among(session, LicenseSample.license_id, lic_part),
            )
            for license_id, sample_id in conn.execute(stmt):
                out.setdefault(license_id, []).append(sample_id)
    return out
