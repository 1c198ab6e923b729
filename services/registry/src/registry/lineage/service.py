"""Declaring models and what they were trained on (licenses, dataset snapshots, shards)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.context import AppContext
from registry.licensees import repository as licensees_repo
from registry.licenses import repository as licenses_repo
from registry.licenses.schemas import Dataset
from registry.lineage import repository
from registry.lineage.models import TrainedModel
from registry.lineage.schemas import ModelIn, ModelOut, ShardOut
from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.problems import PROBLEM_BASE, Problem, field_error


@dataclass
class Ref:
    field: str
    license_id: str
    shard_id: str  # '' = the whole model


def _datasets(
    session: Session, licensee_id: str, datasets: list[Dataset], field: str, shard: str, out: list[Ref]
) -> list[dict[str, Any]]:
    errors = []
    for i, ds in enumerate(datasets):
        found = licenses_repo.by_dataset(session, licensee_id, ds.name, ds.version)
        if not found:
            errors.append(
                field_error(
                    f"{field}[{i}]", "no own license of this dataset", name=ds.name, version=ds.version
                )
            )
        out += [Ref(f"{field}[{i}]", lic.id, shard) for lic in found]
    return errors


def declare(session: Session, ctx: AppContext, licensee_id: str, body: ModelIn) -> TrainedModel:
    if licensees_repo.get(session, licensee_id) is None:
        raise Problem(403, f"No licensee {licensee_id} is registered; ask an operator to create it.")
    # Before any lookup (one query per dataset): each valid entry adds at least one license.
    limit = ctx.settings.registry_max_model_licenses
    entries = len(body.license_ids) + len(body.datasets)
    entries += sum(len(s.license_ids) + len(s.datasets) for s in body.shards)
    if entries > limit or len(body.shards) > limit:
        raise Problem(413, f"A model names at most {limit} licenses.", limit=limit)
    refs: list[Ref] = [Ref(f"body.license_ids[{i}]", lid, "") for i, lid in enumerate(body.license_ids)]
    errors = _datasets(session, licensee_id, body.datasets, "body.datasets", "", refs)
    seen_shards: set[str] = set()
    for j, shard in enumerate(body.shards):
        if shard.shard_id in seen_shards:
            errors.append(
                field_error(f"body.shards[{j}].shard_id", "repeated shard id", value=shard.shard_id)
            )
        seen_shards.add(shard.shard_id)
        if not shard.license_ids and not shard.datasets:
            errors.append(field_error(f"body.shards[{j}]", "a shard names licenses or datasets"))
        refs += [
            Ref(f"body.shards[{j}].license_ids[{k}]", lid, shard.shard_id)
            for k, lid in enumerate(shard.license_ids)
        ]
        errors += _datasets(
            session, licensee_id, shard.datasets, f"body.shards[{j}].datasets", shard.shard_id, refs
        )
    if not refs and not errors:
        errors.append(field_error("body.license_ids", "a model is trained on at least one license"))
    if errors:
        raise Problem(422, "Invalid training sources.", errors=errors)
    if len(refs) > limit:
        raise Problem(413, f"A model names at most {limit} licenses.", limit=limit)

    licenses = licenses_repo.get_many(session, {r.license_id for r in refs})
    # Another licensee's license reads exactly like one that does not exist.
    foreign = [
        r for r in refs if r.license_id not in licenses or licenses[r.license_id].licensee_id != licensee_id
    ]
    if foreign:
        raise Problem(
            422,
            "Unknown license ids.",
            type_=PROBLEM_BASE + "unknown-licenses",
            errors=[field_error(r.field, "unknown license", value=r.license_id) for r in foreign],
        )
    revoked = [r for r in refs if licenses[r.license_id].status == "revoked"]
    if revoked:
        raise Problem(
            409,
            "Revoked licenses cannot back a new model.",
            type_=PROBLEM_BASE + "license-revoked",
            errors=[field_error(r.field, "license revoked", value=r.license_id) for r in revoked],
        )
    if repository.find(session, licensee_id, body.name, body.version) is not None:
        raise _duplicate(body)

    model = TrainedModel(
        id=new_id("mdl"), licensee_id=licensee_id, name=body.name, version=body.version, created_at=utcnow()
    )
    try:
        with session.begin_nested():
            session.add(model)
            session.flush()
    except IntegrityError as exc:  # a concurrent declaration of the same name and version
        raise _duplicate(body) from exc
    repository.add_links(session, model.id, list(dict.fromkeys((r.license_id, r.shard_id) for r in refs)))
    return model


def _duplicate(body: ModelIn) -> Problem:
    return Problem(
        409,
        f"A model {body.name} version {body.version} is already declared.",
        type_=PROBLEM_BASE + "duplicate-model",
        errors=[field_error("body.version", "already declared for this name", value=body.version)],
    )


def to_out(session: Session, models: Sequence[TrainedModel]) -> list[ModelOut]:
    links = repository.links(session, [m.id for m in models])
    out = []
    for m in models:
        mine = [(lic, shard, status) for mid, lic, shard, status in links if mid == m.id]
        shards: dict[str, list[str]] = {}
        for lic, shard, _ in mine:
            if shard:
                shards.setdefault(shard, []).append(lic)
        out.append(
            ModelOut(
                id=m.id,
                licensee_id=m.licensee_id,
                name=m.name,
                version=m.version,
                created_at=m.created_at,
                license_ids=[lic for lic, shard, _ in mine if not shard],
                shards=[ShardOut(shard_id=s, license_ids=ids) for s, ids in shards.items()],
                revoked_license_ids=sorted({lic for lic, _, status in mine if status == "revoked"}),
            )
        )
    return out
