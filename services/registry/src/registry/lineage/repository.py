from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from registry.licenses.models import License
from registry.lineage.models import ModelLicense, TrainedModel
from registry.sql import among, id_chunks
from rescind_common.bulk import EXECUTEMANY_CHUNK, chunks
from rescind_common.db import keyset_page


def get(session: Session, model_id: str) -> TrainedModel | None:
    return session.get(TrainedModel, model_id)


def get_many(session: Session, ids: Iterable[str]) -> dict[str, TrainedModel]:
    out: dict[str, TrainedModel] = {}
    for part in id_chunks(session, sorted(set(ids))):
        for row in session.scalars(select(TrainedModel).where(among(session, TrainedModel.id, part))):
            out[row.id] = row
    return out


def find(session: Session, licensee_id: str, name: str, version: str) -> TrainedModel | None:
    stmt = select(TrainedModel).where(
        TrainedModel.licensee_id == licensee_id, TrainedModel.name == name, TrainedModel.version == version
    )
    return session.scalars(stmt).one_or_none()


def add_links(session: Session, model_id: str, links: Sequence[tuple[str, str]]) -> None:
    """(license_id, shard_id) pairs, already deduplicated."""
    rows = [{"model_id": model_id, "license_id": lic, "shard_id": shard} for lic, shard in links]
    for part in chunks(rows, EXECUTEMANY_CHUNK):
        session.execute(insert(ModelLicense), list(part))


def links(session: Session, model_ids: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """(model_id, license_id, shard_id, license status) of these models."""
    out: list[tuple[str, str, str, str]] = []
    for part in id_chunks(session, model_ids):
        rows = session.execute(
            select(ModelLicense.model_id, ModelLicense.license_id, ModelLicense.shard_id, License.status)
            .join(License, License.id == ModelLicense.license_id)
            .where(among(session, ModelLicense.model_id, part))
            .order_by(ModelLicense.model_id, ModelLicense.shard_id, ModelLicense.license_id)
        )
        out.extend((str(m), str(lic), str(sh), str(st)) for m, lic, sh, st in rows)
    return out


def by_licenses(session: Session, license_ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """(model_id, license_id, shard_id) for every model trained on one of these licenses."""
    out: list[tuple[str, str, str]] = []
    conn = session.connection()
    for part in id_chunks(session, license_ids):
        rows = conn.execute(
            select(ModelLicense.model_id, ModelLicense.license_id, ModelLicense.shard_id).where(
                among(session, ModelLicense.license_id, part)
            )
        )
        out.extend((str(m), str(lic), str(sh)) for m, lic, sh in rows)
    return out


def page(session: Session, licensee_id: str | None, after: str | None, limit: int) -> list[TrainedModel]:
    stmt = select(TrainedModel)
    if licensee_id is not None:
        stmt = stmt.where(TrainedModel.licensee_id == licensee_id)
    return keyset_page(session, stmt, TrainedModel.id, after, limit)
