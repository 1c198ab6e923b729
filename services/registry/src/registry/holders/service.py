"""Who holds these samples, under which licenses, and which of their models contain them.

Revoked licenses are included (with their status): a buyer still holds the data until it
confirms deletion. Every step is a chunked index lookup: license_samples by sample_id (an
index-only scan), then licenses, licensees and samples by primary key, model_licenses by
license_id. Rows are read as plain tuples and the answer is built as plain data and validated
once: a 1,000-sample lookup can touch thousands of licenses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from registry.licensees import repository as licensees_repo
from registry.licenses import repository as licenses_repo
from registry.lineage import repository as lineage_repo
from registry.projection import repository as projection


def lookup(session: Session, requested: list[str]) -> dict[str, Any]:
    """The answer as plain data in the shape of HoldersOut (built from database rows, so a second
    validation of thousands of entries would only cost time)."""
    sample_ids = list(dict.fromkeys(requested))
    order = {sid: i for i, sid in enumerate(sample_ids)}
    pairs = licenses_repo.holdings(session, sample_ids)
    by_license: dict[str, set[str]] = {}
    for sid, license_id in pairs:
        by_license.setdefault(license_id, set()).add(sid)
    licenses = licenses_repo.summaries(session, by_license)
    licensees = licensees_repo.get_many(session, {lic.licensee_id for lic in licenses.values()})
    refs = projection.sample_refs(session, sample_ids)
    links = lineage_repo.by_licenses(session, sorted(licenses))
    models = lineage_repo.get_many(session, {m for m, _, _ in links})

    holders: dict[str, dict[str, Any]] = {
        lid: {
            "licensee_id": lid,
            "licensee_name": licensees[lid].name,
            "samples": {},
            "licenses": [],
            "models": [],
        }
        for lid in sorted({lic.licensee_id for lic in licenses.values()})
    }
    for license_id in sorted(licenses):
        lic = licenses[license_id]
        holder = holders[lic.licensee_id]
        holder["licenses"].append(
            {
                "license_id": lic.id,
                "status": lic.status,
                "consent_id": lic.consent_id,
                "purpose": lic.purpose,
                "dataset": {"name": lic.dataset_name, "version": lic.dataset_version}
                if lic.dataset_name
                else None,
            }
        )
        for sid in by_license[license_id]:
            holder["samples"].setdefault(sid, []).append(license_id)

    per_model: dict[str, tuple[set[str], set[str], set[str]]] = {}  # shards, samples, licenses
    for model_id, license_id, shard in links:
        shards, samples, lics = per_model.setdefault(model_id, (set(), set(), set()))
        if shard:
            shards.add(shard)
        samples |= by_license[license_id]
        lics.add(license_id)
    for model_id in sorted(per_model):
        model = models[model_id]
        shards, samples, lics = per_model[model_id]
        holders[model.licensee_id]["models"].append(
            {
                "model_id": model.id,
                "name": model.name,
                "version": model.version,
                "shard_ids": sorted(shards),
                "sample_ids": sorted(samples, key=order.__getitem__),
                "license_ids": sorted(lics),
            }
        )

    for holder in holders.values():
        held: dict[str, list[str]] = holder["samples"]
        holder["samples"] = [
            {
                "sample_id": sid,
                "sha256": refs[sid][0] if sid in refs else None,
                "kind": refs[sid][1] if sid in refs else None,
                "license_ids": held[sid],
            }
            for sid in sorted(held, key=order.__getitem__)
        ]
    held_ids = {sid for sid, _ in pairs}
    unknown = [s for s in sample_ids if s not in refs and s not in held_ids]
    return {"holders": list(holders.values()), "unknown_sample_ids": unknown}
