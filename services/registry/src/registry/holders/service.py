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
        holder["licenses"].append(_license_fields(lic))
        for sid in by_license[license_id]:
            holder["samples"].setdefault(sid, []).append(license_id)

    per_model: dict[str, tuple[set[str], set[tuple[str, str]]]] = {}  # samples, links
    for model_id, license_id, shard in links:
        samples, model_links = per_model.setdefault(model_id, (set(), set()))
        samples |= by_license[license_id]
        model_links.add((license_id, shard))
    for model_id in sorted(per_model):
        model = models[model_id]
        samples, model_links = per_model[model_id]
        holders[model.licensee_id]["models"].append(
            {
                "model_id": model.id,
                "name": model.name,
                "version": model.version,
                **_lineage(model_links),
                "sample_ids": sorted(samples, key=order.__getitem__),
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


def lookup_by_license(session: Session, requested: list[str]) -> dict[str, Any]:
    """The `licenses` view as plain data in the shape of HoldersByLicenseOut: one entry per license
    with its count of requested samples, the samples themselves only for licenses holding a strict
    subset. 100 licenses each holding all of 10,000 requested samples answer in ~100 entries plus
    10,000 sample refs, not 1,000,000 pairs; nothing here is per (license x sample) for them."""
    sample_ids = list(dict.fromkeys(requested))
    counts = licenses_repo.holding_counts(session, sample_ids)
    partial = [lic for lic, n in counts.items() if n < len(sample_ids)]
    held = licenses_repo.held_among(session, partial, sample_ids)
    licenses = licenses_repo.summaries(session, counts)
    licensees = licensees_repo.get_many(session, {lic.licensee_id for lic in licenses.values()})
    refs = projection.sample_refs(session, sample_ids)
    links = lineage_repo.by_licenses(session, sorted(licenses))
    models = lineage_repo.get_many(session, {m for m, _, _ in links})

    order = {sid: i for i, sid in enumerate(sample_ids)}
    out_licenses = []
    for license_id in sorted(licenses, key=lambda i: (licenses[i].licensee_id, i)):
        lic = licenses[license_id]
        all_requested = counts[license_id] >= len(sample_ids)
        out_licenses.append(
            {
                **_license_fields(lic),
                "licensee_id": lic.licensee_id,
                "licensee_name": licensees[lic.licensee_id].name,
                "sample_count": counts[license_id],
                "all_requested": all_requested,
                "sample_ids": []
                if all_requested
                else sorted(held.get(license_id, ()), key=order.__getitem__),
            }
        )

    per_model: dict[str, set[tuple[str, str]]] = {}  # (license id, shard id or '') links
    for model_id, license_id, shard in links:
        per_model.setdefault(model_id, set()).add((license_id, shard))
    out_models = [
        {
            "model_id": model_id,
            "licensee_id": models[model_id].licensee_id,
            "name": models[model_id].name,
            "version": models[model_id].version,
            **_lineage(per_model[model_id]),
        }
        for model_id in sorted(per_model)
    ]

    if len(partial) < len(counts):  # some license holds every requested sample
        held_ids: set[str] | None = None
    else:
        held_ids = {sid for sids in held.values() for sid in sids}
    samples: list[dict[str, str | None]] = []
    unknown = []
    for sid in sample_ids:
        ref = refs.get(sid)
        if ref is not None:
            samples.append({"sample_id": sid, "sha256": ref[0], "kind": ref[1]})
        elif held_ids is None or sid in held_ids:
            samples.append({"sample_id": sid, "sha256": None, "kind": None})
        else:
            unknown.append(sid)
    return {"licenses": out_licenses, "samples": samples, "models": out_models, "unknown_sample_ids": unknown}


def _license_fields(lic: Any) -> dict[str, Any]:
    """What both views say of a license (a `licenses_repo.summaries` row)."""
    return {
        "license_id": lic.id,
        "status": lic.status,
        "consent_id": lic.consent_id,
        "purpose": lic.purpose,
        "dataset": {"name": lic.dataset_name, "version": lic.dataset_version} if lic.dataset_name else None,
    }


def _lineage(links: set[tuple[str, str]]) -> dict[str, Any]:
    """What both views say of a model's links to the answer's licenses: each link (a license into
    the whole model, or into one shard), and the summary: `whole` when some license went into the
    whole model (its shards are then not listed: the whole model must be acted on), else the shards."""
    whole = any(not shard for _, shard in links)
    return {
        "shard_ids": [] if whole else sorted({shard for _, shard in links}),
        "license_ids": sorted({lic for lic, _ in links}),
        "whole": whole,
        "links": [{"license_id": lic, "shard_id": shard or None} for lic, shard in sorted(links)],
    }
