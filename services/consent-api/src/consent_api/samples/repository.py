from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from consent_api.samples.models import Sample, SampleHash
from consent_api.subjects.models import Subject
from rescind_common.bulk import EXECUTEMANY_CHUNK, chunks
from rescind_common.db import keyset_page

# The subject's samples with these hashes, matched by a join on the array's elements. As
# `sha256 IN (...)` the planner may filter the subject's rows against the list one by one (no
# statistics yet, or a generic plan): a 10,000-sample batch then took 2-6 s instead of 0.4 s.
_EXISTING_HASHES_PG = text(
    "SELECT s.sha256, s.id FROM unnest(CAST(:hashes AS varchar[])) AS h(sha) "
    "JOIN samples s ON s.subject_id = :subject_id AND s.sha256 = h.sha"
)


def existing_hashes(session: Session, subject_id: str, hashes: Sequence[str]) -> dict[str, str]:
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        matched = conn.execute(_EXISTING_HASHES_PG, {"hashes": list(hashes), "subject_id": subject_id})
        return {str(sha): str(sid) for sha, sid in matched}
    found: dict[str, str] = {}
    for part in chunks(hashes):
        rows = conn.execute(
            select(Sample.sha256, Sample.id).where(Sample.subject_id == subject_id, Sample.sha256.in_(part))
        )
        found.update({str(sha): str(sid) for sha, sid in rows})
    return found


def subject_with_fingerprints(
    session: Session, sub_hash: str, sample_ids: Sequence[str]
) -> tuple[Subject | None, dict[str, tuple[str, str]]]:
    """The subject, locked, and `fingerprints` of those of `sample_ids` (at most IN_LIST_CHUNK) it owns, in
    one query (a grant's read)."""
    rows = session.execute(
        select(Subject, Sample.id, Sample.sha256, Sample.kind)
        .outerjoin(Sample, and_(Sample.subject_id == Subject.id, Sample.id.in_(sample_ids)))
        .where(Subject.sub_hash == sub_hash)
        .with_for_update(of=Subject)
    ).all()
    if not rows:
        return None, {}
    return rows[0][0], {sid: (sha, kind) for _, sid, sha, kind in rows if sid is not None}


def insert_many(session: Session, rows: list[dict[str, Any]]) -> None:
    conn = session.connection()  # Core executemany: no ORM bulk machinery per row
    for part in chunks(rows, EXECUTEMANY_CHUNK):
        conn.execute(insert(Sample), list(part))


def owned(session: Session, subject_id: str, sample_ids: Sequence[str]) -> dict[str, Sample]:
    found: dict[str, Sample] = {}
    for part in chunks(sample_ids):
        for s in session.scalars(select(Sample).where(Sample.subject_id == subject_id, Sample.id.in_(part))):
            found[s.id] = s
    return found


def fingerprints(session: Session, subject_id: str, sample_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """id -> (sha256, kind) of those of `sample_ids` the subject owns (columns only, no ORM objects)."""
    found: dict[str, tuple[str, str]] = {}
    for part in chunks(sample_ids):
        rows = session.execute(
            select(Sample.id, Sample.sha256, Sample.kind).where(
                Sample.subject_id == subject_id, Sample.id.in_(part)
            )
        )
        found.update({sid: (sha, kind) for sid, sha, kind in rows})
    return found


def owned_ids(session: Session, subject_id: str, sample_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in chunks(sample_ids):
        found.update(
            session.scalars(select(Sample.id).where(Sample.subject_id == subject_id, Sample.id.in_(part)))
        )
    return found


def all_ids(session: Session, subject_id: str) -> list[str]:
    return list(session.scalars(select(Sample.id).where(Sample.subject_id == subject_id).order_by(Sample.id)))


def get(session: Session, subject_id: str, sample_id: str) -> Sample | None:
    return session.scalars(
        select(Sample).where(Sample.subject_id == subject_id, Sample.id == sample_id)
    ).one_or_none()


def page(session: Session, subject_id: str, after: str | None, limit: int) -> list[Sample]:
    stmt = select(Sample).where(Sample.subject_id == subject_id)
    return keyset_page(session, stmt, Sample.id, after, limit)


def claim_hashes(session: Session, subject_id: str, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Record the subject as the registrant of these samples' hashes, unless another subject is
    already: returns the hashes another subject holds (the caller refuses the batch and rolls back).
    The primary key decides between two subjects registering the same content at the same moment."""
    conn = session.connection()
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(SampleHash)
    ins = ins.on_conflict_do_nothing(index_elements=["sha256"])
    for part in chunks(rows, EXECUTEMANY_CHUNK):
        conn.execute(
            ins,
            [
                {
                    "sha256": r["sha256"],
                    "subject_id": subject_id,
                    "sample_id": r["id"],
                    "registered_at": r["created_at"],
                }
                for r in part
            ],
        )
    taken: set[str] = set()
    for part in chunks([r["sha256"] for r in rows]):
        taken.update(
            conn.execute(
                select(SampleHash.sha256).where(
                    SampleHash.sha256.in_(part), SampleHash.subject_id != subject_id
                )
            ).scalars()
        )
    return taken
