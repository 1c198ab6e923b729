"""Notices: reads, their samples and models, and the one statement of a resolution's writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, select
from sqlalchemy.orm import Session

from rescind_common import bulk
from rescind_common.bulk import chunks
from rescind_common.db import keyset_page, utcnow
from rescind_common.outbox import outbox_write
from revocation_worker.db import Outbox
from revocation_worker.notices.models import (
    Delivery,
    Notice,
    NoticeLicense,
    NoticeModel,
    NoticeSample,
    RevocationSample,
    RevocationSampleSet,
)
from revocation_worker.notices.rows import LicenseRow, ModelRow, NoticeLike, NoticeRow, SampleRow

__all__ = ["LicenseRow", "ModelRow", "NoticeLike", "NoticeRow", "SampleRow"]


def get_own(session: Session, licensee_id: str, notice_id: str, *, lock: bool = False) -> Notice | None:
    stmt = select(Notice).where(Notice.licensee_id == licensee_id, Notice.id == notice_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def get(session: Session, notice_id: str, *, lock: bool = False) -> Notice | None:
    stmt = select(Notice).where(Notice.id == notice_id)
    if lock:
        # Locked, it is read afresh even when this session already holds it.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalars(stmt).one_or_none()


def page(
    session: Session,
    licensee_id: str | None,
    status: str | None,
    after: str | None,
    limit: int,
    revocation_id: str | None = None,
) -> list[Notice]:
    stmt = select(Notice)
    if licensee_id is not None:
        stmt = stmt.where(Notice.licensee_id == licensee_id)
    if status:
        stmt = stmt.where(Notice.status == status)
    if revocation_id:
        stmt = stmt.where(Notice.revocation_id == revocation_id)
    return keyset_page(session, stmt, Notice.id, after, limit)


def samples_page(session: Session, notice: Notice, after: str | None, limit: int) -> list[SampleRow]:
    """A notice's samples by sample id: its revocation's shared set when it covers all of it, else
    its own notice_samples rows (every notice made before the shared sets existed)."""
    if notice.covers_revocation_samples:
        cols = (RevocationSample.sample_id, RevocationSample.sha256, RevocationSample.kind)
        stmt = select(*cols).where(RevocationSample.revocation_id == notice.revocation_id)
        key = RevocationSample.sample_id
    else:
        stmt = select(NoticeSample.sample_id, NoticeSample.sha256, NoticeSample.kind).where(
            NoticeSample.notice_id == notice.id
        )
        key = NoticeSample.sample_id
    if after:
        stmt = stmt.where(key > after)
    return [SampleRow(*row) for row in session.execute(stmt.order_by(key).limit(limit))]


def models_of(session: Session, notice_id: str) -> list[NoticeModel]:
    return list(
        session.scalars(
            select(NoticeModel).where(NoticeModel.notice_id == notice_id).order_by(NoticeModel.model_id)
        )
    )


_NOTICE_ROWS = select(*(cast(Table, Notice.__table__).c[name] for name in NoticeRow._fields)).where(
    cast(Table, Notice.__table__).c.id.in_(bindparam("ids", expanding=True))
)


def notice_rows(session: Session, ids: Iterable[str]) -> dict[str, NoticeRow]:
    """Notices by id as plain rows, for building their webhook bodies."""
    wanted = sorted(set(ids))
    out: dict[str, NoticeRow] = {}
    for part in chunks(wanted):
        for row in session.execute(_NOTICE_ROWS, {"ids": list(part)}):
            out[row[0]] = NoticeRow(*row)
    return out


def _first_samples_stmt(table: Table, key: str) -> Select[tuple[str, str, str, str]]:
    """The first :limit samples by id of each of :keys (`table.key`), numbered by a window function
    (PostgreSQL and SQLite alike); built once, bound per call."""
    c = table.c
    ranked = (
        select(
            c[key],
            c.sample_id,
            c.sha256,
            c.kind,
            func.row_number().over(partition_by=c[key], order_by=c.sample_id).label("rn"),
        )
        .where(c[key].in_(bindparam("keys", expanding=True)))
        .subquery()
    )
    r = ranked.c
    return (
        select(r[key], r.sample_id, r.sha256, r.kind).where(r.rn <= bindparam("limit")).order_by(r[key], r.rn)
    )


_SHARED_FIRST = _first_samples_stmt(cast(Table, RevocationSample.__table__), "revocation_id")


_OWN_FIRST = _first_samples_stmt(cast(Table, NoticeSample.__table__), "notice_id")


_MODEL_TABLE = cast(Table, NoticeModel.__table__)
_MODELS_OF = (
    select(_MODEL_TABLE.c.notice_id, *(_MODEL_TABLE.c[name] for name in ModelRow._fields))
    .where(_MODEL_TABLE.c.notice_id.in_(bindparam("ids", expanding=True)))
    .order_by(_MODEL_TABLE.c.notice_id, _MODEL_TABLE.c.model_id)
)
_LICENSE_TABLE = cast(Table, NoticeLicense.__table__)
_LICENSES_OF = (
    select(_LICENSE_TABLE.c.notice_id, *(_LICENSE_TABLE.c[name] for name in LicenseRow._fields))
    .where(_LICENSE_TABLE.c.notice_id.in_(bindparam("ids", expanding=True)))
    .order_by(_LICENSE_TABLE.c.notice_id, _LICENSE_TABLE.c.license_id)
)


def first_samples_of(
    session: Session, notices: Sequence[NoticeLike], limit: int
) -> dict[str, list[SampleRow]]:
    """`samples_page(session, notice, None, limit)` for many notices in one query per source (the
    revocation's shared set for notices covering it, their own rows for the others)."""
    out: dict[str, list[SampleRow]] = {n.id: [] for n in notices}
    by_revocation: dict[str, list[str]] = {}
    own: set[str] = set()
    for n in notices:
        if n.covers_revocation_samples:
            by_revocation.setdefault(n.revocation_id, []).append(n.id)
        else:
            own.add(n.id)
    if limit <= 0:
        return out
    sources: list[tuple[Select[Any], list[str], bool]] = [
        (_SHARED_FIRST, sorted(by_revocation), True),
        (_OWN_FIRST, sorted(own), False),
    ]
    for stmt, keys, shared in sources:
        for part in chunks(keys):
            for k, sid, sha, kind in session.execute(stmt, {"keys": list(part), "limit": limit}):
                row = SampleRow(sid, sha, kind)
                for notice_id in by_revocation[k] if shared else (k,):
                    out[notice_id].append(row)
    return out


def models_of_many(session: Session, notice_ids: Sequence[str]) -> dict[str, list[ModelRow]]:
    """`models_of` for many notices in one query (per 900 ids), each notice's by model id."""
    out: dict[str, list[ModelRow]] = {i: [] for i in notice_ids}
    wanted = sorted(set(notice_ids))
    for part in chunks(wanted):
        for notice_id, *row in session.execute(_MODELS_OF, {"ids": list(part)}):
            out[notice_id].append(ModelRow(*row))
    return out


def licenses_of_many(session: Session, notice_ids: Sequence[str]) -> dict[str, list[LicenseRow]]:
    """The licenses each of these notices' revocation hit (per 900 ids), by license id."""
    out: dict[str, list[LicenseRow]] = {i: [] for i in notice_ids}
    wanted = sorted(set(notice_ids))
    for part in chunks(wanted):
        for notice_id, *row in session.execute(_LICENSES_OF, {"ids": list(part)}):
            out[notice_id].append(LicenseRow(*row))
    return out


def _insert_rows(session: Session, table: Table, rows: Iterable[tuple[str, str, str, str]]) -> None:
    """Multi-row inserts of (key, sample_id, sha256, kind): COPY on PostgreSQL (in the session's
    transaction), executemany batches elsewhere; never one ORM object per row. No rows, no
    statement (an empty COPY is still a round trip)."""
    it = iter(rows)
    first = next(it, None)
    if first is None:
        return
    columns = [c.name for c in table.columns]
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        with dbapi.cursor() as cur, cur.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            copy.write_row(first)
            for row in it:
                copy.write_row(row)
        return
    batch = [dict(zip(columns, first, strict=True))]
    batch.extend(dict(zip(columns, row, strict=True)) for row in it)
    bulk.execute(conn, [bulk.insert_rows(table, batch)])


def revocation_sample_sets(session: Session, revocation_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    """(sample_count, digest) of each of these revocations' stored sample sets (those that have one)."""
    found: dict[str, tuple[int, str]] = {}
    ids = sorted(set(revocation_ids))
    for part in chunks(ids):
        for rid, count, digest in session.execute(
            select(
                RevocationSampleSet.revocation_id,
                RevocationSampleSet.sample_count,
                RevocationSampleSet.digest,
            ).where(RevocationSampleSet.revocation_id.in_(list(part)))
        ):
            found[str(rid)] = (int(count), str(digest))
    return found


def insert_revocation_sample_sets(
    session: Session, sets: Sequence[tuple[str, str, Sequence[tuple[str, str, str]]]]
) -> None:
    """Store revocations' sample sets: (revocation id, digest, [(sample_id, sha256, kind)])."""
    if not sets:
        return
    now = utcnow()
    insert_rows(
        session,
        RevocationSampleSet,
        [
            {"revocation_id": rid, "sample_count": len(refs), "digest": digest, "created_at": now}
            for rid, digest, refs in sets
        ],
    )
    _insert_rows(
        session,
        cast(Table, RevocationSample.__table__),
        ((rid, sid, h, k) for rid, _, refs in sets for sid, h, k in refs),
    )


def insert_notice_samples(session: Session, rows: Iterable[tuple[str, str, str, str]]) -> None:
    """Notices' own samples: (notice_id, sample_id, sha256, kind), for notices covering part of
    their revocation's set."""
    _insert_rows(session, cast(Table, NoticeSample.__table__), rows)


def insert_rows(session: Session, model: type[Any], rows: Sequence[dict[str, Any]]) -> None:
    """Plain rows (no ORM objects) in one statement on PostgreSQL (rescind_common.bulk)."""
    bulk.execute(session, [bulk.insert_rows(model, rows)])


def told(session: Session, revocation_ids: Sequence[str]) -> set[tuple[str, str]]:
    """(revocation, licensee) of every notice of these revocations."""
    out: set[tuple[str, str]] = set()
    ids = sorted(set(revocation_ids))
    for part in chunks(ids):
        of = Notice.revocation_id.in_(list(part))
        stmt = select(Notice.revocation_id, Notice.licensee_id).where(of)
        out.update((str(r), str(lic)) for r, lic in session.connection().execute(stmt))
    return out


def lock_notices_skip_locked(session: Session, ids: Iterable[str]) -> dict[str, Notice]:
    """The notices nobody else holds, row-locked in id order; the others are left for later."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    stmt = select(Notice).where(Notice.id.in_(wanted)).order_by(Notice.id).with_for_update(skip_locked=True)
    return {n.id: n for n in session.scalars(stmt)}


def overdue_candidates(session: Session, now: dt.datetime, limit: int) -> list[str]:
    return list(
        session.scalars(
            select(Notice.id)
            .where(
                Notice.status.in_(["pending", "delivered", "failed", "partially_acknowledged"]),
                Notice.deadline < now,
            )
            .limit(limit)
        )
    )


def reminder_candidates(
    session: Session, now: dt.datetime, before: float, statuses: Sequence[str], limit: int
) -> list[str]:
    """Unanswered, unreminded notices whose deadline is within `before` seconds, soonest first."""
    return list(
        session.scalars(
            select(Notice.id)
            .where(
                Notice.status.in_(list(statuses)),
                Notice.reminded_at.is_(None),
                Notice.deadline > now,
                Notice.deadline <= now + dt.timedelta(seconds=before),
            )
            .order_by(Notice.deadline, Notice.id)
            .limit(limit)
        )
    )


def count_by_status(session: Session) -> dict[str, int]:
    return {
        str(s): int(n)
        for s, n in session.execute(select(Notice.status, func.count()).group_by(Notice.status))
    }


def insert_created(
    session: Session,
    notices: Sequence[dict[str, Any]],
    models: Sequence[dict[str, Any]],
    deliveries: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    licenses: Sequence[dict[str, Any]] = (),
) -> None:
    """New notices, their models, licenses and deliveries, then the events: one statement on
    PostgreSQL (models, licenses and deliveries reference notices of the same statement: foreign
    keys are checked at its end), else one executemany per table, in that order."""
    session.flush()  # as publish_many: pending ORM changes first
    bulk.execute(
        session,
        [
            bulk.insert_rows(Notice, notices),
            bulk.insert_rows(NoticeModel, models),
            bulk.insert_rows(NoticeLicense, licenses),
            bulk.insert_rows(Delivery, deliveries),
            outbox_write(Outbox, events),
        ],
    )
