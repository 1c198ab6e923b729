"""The intake's decisions as functions of values: which consents a revocation withdraws, which
licensees hold what it withdrew (and which of their models), how revocations are grouped for one
holders lookup, how long a failed one waits. No database, no registry here: resolver.py calls
these between its reads and its writes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from revocation_worker.intake.holdings import HeldLicense, HeldModel, Holdings
from revocation_worker.notices.service import HolderNotice, RevocationSamples


@dataclass(frozen=True)
class Withdrawal:
    """What one consent's part of a revocation withdraws."""

    consent_id: str
    samples: frozenset[str]
    purposes: frozenset[str]
    only_licensee_id: str | None


class PartLike(Protocol):
    """What merging reads of a revocation part: a `RevocationPart` or a plain row."""

    @property
    def revocation_id(self) -> str: ...
    @property
    def consent_id(self) -> str: ...
    @property
    def sample_ids(self) -> list[str]: ...
    @property
    def purposes(self) -> list[str]: ...
    @property
    def only_licensee_id(self) -> str | None: ...


def merge_parts(parts: Sequence[PartLike]) -> list[Withdrawal]:
    merged: dict[str, tuple[set[str], set[str], str | None]] = {}
    for part in parts:
        samples, purposes, _ = merged.setdefault(part.consent_id, (set(), set(), part.only_licensee_id))
        samples.update(part.sample_ids)
        purposes.update(part.purposes)
    return [Withdrawal(cid, frozenset(s), frozenset(p), only) for cid, (s, p, only) in sorted(merged.items())]


@dataclass(frozen=True)
class ActOn:
    """What a licensee must do to one model: retrain (or unlearn from) the whole of it, or only
    some shards; and the hit licenses that make it so."""

    scope: Literal["whole", "shards"]
    shard_ids: list[str]  # empty when the scope is whole
    license_ids: list[str]


def model_to_act_on(links: Iterable[tuple[str, str]], hit: Set[str]) -> ActOn | None:
    """From a model's links (license id, shard id; '' when the license went into the whole model)
    and the licenses a revocation hit: the whole model when any hit license went into the whole
    model, else exactly the shards the hit licenses went into; None when no hit license is linked
    (a license the revocation left alone contributes nothing, neither the model nor a shard)."""
    own = {(lic, shard) for lic, shard in links if lic in hit}
    if not own:
        return None
    license_ids = sorted({lic for lic, _ in own})
    if any(not shard for _, shard in own):
        return ActOn("whole", [], license_ids)
    return ActOn("shards", sorted({shard for _, shard in own}), license_ids)


def affected(holdings: Holdings, withdrawals: list[Withdrawal]) -> list[HolderNotice]:
    """Keep only what this revocation withdrew: a licensee is told about a sample only when it holds
    it under a license whose consent is withdrawn for that license's purpose (and for that licensee,
    when only one was withdrawn); a licensee holding it under ANOTHER consent, for a purpose still
    consented, or not the one withdrawn is not told. Per license hit: its consent, the purposes
    withdrawn and how many of its samples. Models: those linked to the licenses hit, each whole or
    by shard as `model_to_act_on` decides from its links to those licenses only.

    A license holding every requested sample is hit by the withdrawals' own sample sets, shared by
    every such licensee (and by the revocation's RevocationSamples): a fan-out to 100 licensees of
    10,000 samples holds 10,000 ids once, not 1,000,000."""
    by_consent: dict[str, list[int]] = {}
    for i, w in enumerate(withdrawals):
        by_consent.setdefault(w.consent_id, []).append(i)
    whole_cache: dict[tuple[int, ...], frozenset[str]] = {}

    def whole(index: tuple[int, ...]) -> frozenset[str]:
        """The requested samples these withdrawals withdraw (memoised: shared between licensees)."""
        got = whole_cache.get(index)
        if got is None:
            if len(index) == 1:
                got = withdrawals[index[0]].samples
            else:
                got = frozenset().union(*(withdrawals[i].samples for i in index))
            if not got <= holdings.requested:
                got = got & holdings.requested
            whole_cache[index] = got
        return got

    # licensee -> (hit sample sets with the withdrawals when whole, hit license ids, their entries)
    hits: dict[
        str, tuple[list[tuple[Set[str], tuple[int, ...] | None]], list[str], list[dict[str, Any]]]
    ] = {}
    for license_id in sorted(holdings.licenses):
        lic = holdings.licenses[license_id]
        index = tuple(
            i
            for i in by_consent.get(lic.consent_id, [])
            if lic.purpose in withdrawals[i].purposes
            and withdrawals[i].only_licensee_id in (None, lic.licensee_id)
        )
        if not index:
            continue
        pool = whole(index)
        if lic.sample_ids is None:
            part: tuple[Set[str], tuple[int, ...] | None] = (pool, index)
        else:
            part = ({s for s in lic.sample_ids if s in pool}, None)
        if part[0]:
            parts, license_ids, entries = hits.setdefault(lic.licensee_id, ([], [], []))
            parts.append(part)
            license_ids.append(license_id)
            entries.append(
                {
                    "license_id": license_id,
                    "consent_id": lic.consent_id,
                    "purposes": sorted({p for i in index for p in withdrawals[i].purposes}),
                    "sample_count": len(part[0]),
                }
            )

    per_licensee: dict[str, Set[str]] = {}
    for licensee_id, (parts, _, _) in hits.items():
        if len(parts) == 1:
            per_licensee[licensee_id] = parts[0][0]
        elif all(index is not None for _, index in parts):
            per_licensee[licensee_id] = whole(tuple(sorted({i for _, index in parts for i in index or ()})))
        else:
            per_licensee[licensee_id] = set().union(*(sample_set for sample_set, _ in parts))
    # The revocation's sample set: the largest licensee set when it contains the others (the usual
    # fan-out: the withdrawal itself, by reference), else their union.
    distinct = sorted({id(s): s for s in per_licensee.values()}.values(), key=len, reverse=True)
    everything: Set[str] = distinct[0] if distinct else frozenset()
    if any(not s <= everything for s in distinct[1:]):
        everything = frozenset().union(*distinct)
    shared = RevocationSamples(everything, {sid: holdings.ref(sid) for sid in everything})

    models_of: dict[str, list[HeldModel]] = {}
    for model_id in sorted(holdings.models):
        model = holdings.models[model_id]
        models_of.setdefault(model.licensee_id, []).append(model)
    out: list[HolderNotice] = []
    for licensee_id in sorted(per_licensee):
        _, license_ids, entries = hits[licensee_id]
        hit = frozenset(license_ids)
        models: list[dict[str, Any]] = []
        for m in models_of.get(licensee_id, []):
            act = model_to_act_on(m.links, hit)
            if act is not None:
                models.append(
                    {
                        "model_id": m.model_id,
                        "name": m.name,
                        "version": m.version,
                        "shard_ids": act.shard_ids,
                        "scope": act.scope,
                        "license_ids": act.license_ids,
                    }
                )
        out.append(
            {
                "licensee_id": licensee_id,
                "licensee_name": holdings.licenses[license_ids[0]].licensee_name,
                "sample_ids": per_licensee[licensee_id],
                "revocation_samples": shared,
                "license_ids": license_ids,
                "licenses": entries,
                "models": models,
            }
        )
    return out


@dataclass(frozen=True)
class Pending:
    """A claimed revocation on its way to notices."""

    id: str
    withdrawals: list[Withdrawal]
    samples: list[str]


def pending_of(revocation_id: str, parts: Sequence[PartLike]) -> Pending:
    """A revocation ready for its lookup: its withdrawals and every sample they name, sorted
    (TypeError, ValueError or AttributeError for a malformed part)."""
    ws = merge_parts(parts)
    return Pending(revocation_id, ws, sorted({s for w in ws for s in w.samples}))


def groups(pending: Sequence[Pending], limit: int) -> Iterator[list[Pending]]:
    """Revocations in lookup groups of at most `limit` samples in all (a bigger revocation
    goes alone), so one batch never holds more than about one lookup's worth of holdings."""
    group: list[Pending] = []
    size = 0
    for p in pending:
        if group and size + len(p.samples) > limit:
            yield group
            group, size = [], 0
        group.append(p)
        size += len(p.samples)
    if group:
        yield group


def narrower(raw: Holdings) -> Callable[[list[str]], tuple[Holdings, bool]]:
    """The shared answer cut down to one revocation's samples: only the licenses holding some of
    them and their models (what `affected` keeps is the same; its cost no longer grows with the
    size of the batch). Also True when a sharded model of those licenses, whose links the
    registry did not give (an older registry), is linked to licenses outside them: its shard ids
    may then be wider than this revocation's own lookup would give. With links (every current
    registry) the models to act on are exact whatever the batch: `model_to_act_on` keeps only the
    links to the licenses hit."""
    whole = [lic for lic in raw.licenses.values() if lic.sample_ids is None]
    by_sample: dict[str, list[HeldLicense]] = {}
    for lic in raw.licenses.values():
        for sid in lic.sample_ids or ():
            by_sample.setdefault(sid, []).append(lic)
    models_by_license: dict[str, list[HeldModel]] = {}
    for model in raw.models.values():
        for license_id in model.license_ids:
            models_by_license.setdefault(license_id, []).append(model)

    def narrow(samples: list[str]) -> tuple[Holdings, bool]:
        wanted = frozenset(samples)
        held: dict[str, set[str]] = {}
        for sid in samples:
            for lic in by_sample.get(sid, []):
                held.setdefault(lic.license_id, set()).add(sid)
        licenses = {lic.license_id: lic for lic in whole}
        for license_id, sids in held.items():
            lic = raw.licenses[license_id]
            licenses[license_id] = HeldLicense(
                license_id=lic.license_id,
                licensee_id=lic.licensee_id,
                licensee_name=lic.licensee_name,
                status=lic.status,
                consent_id=lic.consent_id,
                purpose=lic.purpose,
                sample_ids=None if sids == wanted else sids,
            )
        models = {m.model_id: m for lid in licenses for m in models_by_license.get(lid, [])}
        widened = any(
            not m.exact and m.shard_ids and not m.license_ids <= licenses.keys() for m in models.values()
        )
        return Holdings(requested=wanted, licenses=licenses, refs=raw.refs, models=models), widened

    return narrow


def retry_delay(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before a revocation (or a recheck) that failed `attempts` times is tried again:
    doubling from one second up to a minute, plus up to a fifth more so that failures of one
    registry outage do not retry together."""
    return min(60.0, 0.5 * 2 ** min(attempts, 10)) * (1 + rand() * 0.2)
