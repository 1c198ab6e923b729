"""The registry's holders answer in its `licenses` view, merged over lookup batches.

Per license: how many of the requested samples it holds, and which only when it holds part of
them; the requested samples' refs once. Its size grows with licenses plus samples, never with
their product: 100 licensees each holding 10,000 withdrawn samples are 100 entries, not 1,000,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class HeldLicense:
    license_id: str
    licensee_id: str
    licensee_name: str
    status: str
    consent_id: str
    purpose: str
    # None: every requested sample; else the requested samples it holds.
    sample_ids: set[str] | None


@dataclass
class HeldModel:
    model_id: str
    licensee_id: str
    name: str
    version: str
    shard_ids: set[str] = field(default_factory=set)
    license_ids: set[str] = field(default_factory=set)
    # (license id, shard id; '' for the whole model): each link of the model to the answer's
    # licenses, what the models to act on are computed from (rules.model_to_act_on).
    links: set[tuple[str, str]] = field(default_factory=set)
    # False when the registry gave no links (an older registry) and they were guessed, widely:
    # every license linked to every shard named.
    exact: bool = True


@dataclass
class Holdings:
    requested: frozenset[str] = frozenset()
    licenses: dict[str, HeldLicense] = field(default_factory=dict)
    # sample id -> (sha256, kind) of the requested samples the registry knows (None: not projected)
    refs: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    models: dict[str, HeldModel] = field(default_factory=dict)
    unknown_sample_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        """How many licensees hold some of the requested samples."""
        return len({lic.licensee_id for lic in self.licenses.values()})

    def ref(self, sample_id: str) -> tuple[str, str]:
        sha256, kind = self.refs.get(sample_id, (None, None))
        return sha256 or "", kind or "other"


class HoldingsMerger:
    """Merge the answers of consecutive lookup batches (disjoint slices of one request)."""

    def __init__(self) -> None:
        self._batches: list[Sequence[str]] = []
        self._full: dict[str, list[int]] = {}  # license id -> batches it holds entirely
        self._partial: dict[str, set[str]] = {}
        self._out = Holdings()

    def add(self, batch: Sequence[str], answer: dict[str, Any]) -> None:
        index = len(self._batches)
        self._batches.append(batch)
        out = self._out
        for lic in answer["licenses"]:
            license_id = str(lic["license_id"])
            if license_id not in out.licenses:
                out.licenses[license_id] = HeldLicense(
                    license_id=license_id,
                    licensee_id=str(lic["licensee_id"]),
                    licensee_name=str(lic.get("licensee_name", "")),
                    status=str(lic.get("status", "")),
                    consent_id=str(lic["consent_id"]),
                    purpose=str(lic["purpose"]),
                    sample_ids=None,
                )
            if lic["all_requested"]:
                self._full.setdefault(license_id, []).append(index)
            else:
                self._partial.setdefault(license_id, set()).update(lic["sample_ids"])
        for s in answer["samples"]:
            out.refs[str(s["sample_id"])] = (s.get("sha256"), s.get("kind"))
        for m in answer["models"]:
            model = out.models.get(m["model_id"])
            if model is None:
                model = out.models[m["model_id"]] = HeldModel(
                    model_id=str(m["model_id"]),
                    licensee_id=str(m["licensee_id"]),
                    name=str(m.get("name", "")),
                    version=str(m.get("version", "")),
                )
            model.shard_ids.update(m.get("shard_ids") or [])
            model.license_ids.update(m.get("license_ids") or [])
            if "links" in m:
                model.links.update((str(x["license_id"]), str(x.get("shard_id") or "")) for x in m["links"])
            else:
                model.exact = False
                shards = m.get("shard_ids") or [""]
                model.links.update((str(lic), s) for lic in m.get("license_ids") or [] for s in shards)
        out.unknown_sample_ids.extend(answer.get("unknown_sample_ids", []))

    def result(self) -> Holdings:
        out = self._out
        out.requested = frozenset(s for batch in self._batches for s in batch)
        for license_id, lic in out.licenses.items():
            full = self._full.get(license_id, [])
            if len(full) == len(self._batches):
                lic.sample_ids = None
                continue
            held = self._partial.get(license_id, set())
            for index in full:
                held.update(self._batches[index])
            lic.sample_ids = held
        return out
