"""Who is told about a revocation: only holders of what it withdrew (pure logic of the resolver,
over the registry's `licenses` view of the holders lookup)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from revocation_worker.intake.holdings import Holdings, HoldingsMerger
from revocation_worker.intake.resolver import Withdrawal, affected

TRAINING = frozenset({"model_training"})


def answer(
    requested: Sequence[str],
    licenses: list[tuple[str, str, str, str, list[str]]],
    models: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The registry's licenses view for `requested`; licenses: (license_id, licensee_id,
    consent_id, purpose, sample_ids held)."""
    asked = set(requested)
    out = []
    for lid, licensee, consent, purpose, sids in licenses:
        holds = set(sids)
        held = [s for s in requested if s in holds]
        if not held:
            continue
        every = set(held) == asked
        out.append(
            {
                "license_id": lid,
                "licensee_id": licensee,
                "licensee_name": licensee,
                "status": "active",
                "consent_id": consent,
                "purpose": purpose,
                "dataset": None,
                "sample_count": len(held),
                "all_requested": every,
                "sample_ids": [] if every else held,
            }
        )
    return {
        "licenses": out,
        "samples": [{"sample_id": s, "sha256": "0" * 64, "kind": "face_image"} for s in requested],
        "models": list(models),
        "unknown_sample_ids": [],
    }


def holdings(
    requested: Sequence[str],
    licenses: list[tuple[str, str, str, str, list[str]]],
    models: Sequence[dict[str, Any]] = (),
    batch: int = 10_000,
) -> Holdings:
    merger = HoldingsMerger()
    for i in range(0, len(requested), batch):
        part = requested[i : i + batch]
        merger.add(part, answer(part, licenses, [m for m in models if i == 0]))
    return merger.result()


def told(out: list[Any]) -> dict[str, list[str]]:
    return {h["licensee_id"]: sorted(h["sample_ids"]) for h in out}


def test_a_holder_under_another_consent_is_not_told() -> None:
    h = holdings(
        ["smp_1"],
        [
            ("lcs_1", "lic_a", "cns_1", "model_training", ["smp_1"]),
            ("lcs_2", "lic_b", "cns_2", "model_training", ["smp_1"]),
        ],
    )
    out = affected(h, [Withdrawal("cns_1", frozenset({"smp_1"}), TRAINING, None)])
    assert [x["licensee_id"] for x in out] == ["lic_a"]


def test_a_purpose_still_consented_is_not_told() -> None:
    h = holdings(
        ["smp_1"],
        [
            ("lcs_1", "lic_a", "cns_1", "evaluation", ["smp_1"]),
            ("lcs_2", "lic_b", "cns_1", "model_training", ["smp_1"]),
        ],
    )
    out = affected(h, [Withdrawal("cns_1", frozenset({"smp_1"}), TRAINING, None)])
    assert [x["licensee_id"] for x in out] == ["lic_b"]


def test_only_the_withdrawn_licensee_of_an_open_consent_is_told() -> None:
    h = holdings(
        ["smp_1"],
        [
            ("lcs_1", "lic_a", "cns_1", "model_training", ["smp_1"]),
            ("lcs_2", "lic_b", "cns_1", "model_training", ["smp_1"]),
        ],
    )
    out = affected(h, [Withdrawal("cns_1", frozenset({"smp_1"}), TRAINING, "lic_b")])
    assert [x["licensee_id"] for x in out] == ["lic_b"]


def test_samples_and_models_are_narrowed_to_what_was_withdrawn() -> None:
    model_hit = {
        "model_id": "mdl_1",
        "licensee_id": "lic_a",
        "name": "m",
        "version": "1",
        "shard_ids": ["s1"],
        "license_ids": ["lcs_1"],
    }
    model_other = {
        "model_id": "mdl_2",
        "licensee_id": "lic_a",
        "name": "n",
        "version": "1",
        "shard_ids": [],
        "license_ids": ["lcs_9"],
    }
    h = holdings(
        ["smp_2", "smp_3"],
        [
            ("lcs_1", "lic_a", "cns_1", "model_training", ["smp_1", "smp_2"]),
            ("lcs_9", "lic_a", "cns_9", "model_training", ["smp_3"]),
        ],
        [model_hit, model_other],
    )
    out = affected(h, [Withdrawal("cns_1", frozenset({"smp_2", "smp_3"}), TRAINING, None)])
    assert told(out) == {"lic_a": ["smp_2"]}
    assert out[0]["models"] == [{"model_id": "mdl_1", "name": "m", "version": "1", "shard_ids": ["s1"]}]
    assert sorted(out[0]["revocation_samples"].ids) == ["smp_2"]


def test_a_fan_out_shares_one_sample_set_and_lists_only_partial_holders() -> None:
    samples = [f"smp_{i:05d}" for i in range(2500)]
    licenses = [(f"lcs_{n}", f"lic_{n:03d}", "cns_1", "model_training", samples) for n in range(100)]
    licenses.append(("lcs_part", "lic_part", "cns_1", "model_training", samples[100:1100]))
    licenses.append(("lcs_other", "lic_other", "cns_2", "model_training", samples))
    licenses.append(("lcs_eval", "lic_000", "cns_1", "evaluation", samples[:10]))  # purpose kept
    # Three lookup batches of 1,000, merged.
    h = holdings(samples, licenses, batch=1000)
    assert h.licenses["lcs_0"].sample_ids is None and len(h.licenses["lcs_part"].sample_ids or ()) == 1000
    assert len(h) == 102

    w = Withdrawal("cns_1", frozenset(samples), TRAINING, None)
    out = affected(h, [w])
    assert [x["licensee_id"] for x in out] == [f"lic_{n:03d}" for n in range(100)] + ["lic_part"]
    full = [x for x in out if x["licensee_id"] != "lic_part"]
    # One set object for the 100 full holders and the revocation: no per-(licensee x sample) copy.
    shared = full[0]["revocation_samples"]
    assert all(x["sample_ids"] is w.samples and x["revocation_samples"] is shared for x in full)
    assert shared.ids is w.samples and len(shared) == 2500
    assert sorted(out[-1]["sample_ids"]) == samples[100:1100]
    assert shared.ref(samples[0]) == ("0" * 64, "face_image")


def test_two_withdrawn_consents_union_and_a_license_under_each() -> None:
    s1, s2 = ["smp_a1", "smp_a2"], ["smp_b1"]
    h = holdings(
        s1 + s2,
        [
            ("lcs_1", "lic_a", "cns_1", "model_training", s1),
            ("lcs_2", "lic_a", "cns_2", "model_training", s2),
            ("lcs_3", "lic_b", "cns_2", "model_training", s2),
        ],
    )
    out = affected(
        h,
        [
            Withdrawal("cns_1", frozenset(s1), TRAINING, None),
            Withdrawal("cns_2", frozenset(s2), TRAINING, None),
        ],
    )
    assert told(out) == {"lic_a": sorted(s1 + s2), "lic_b": s2}
    assert sorted(out[0]["revocation_samples"].ids) == sorted(s1 + s2)
    assert out[0]["license_ids"] == ["lcs_1", "lcs_2"]


def test_nothing_held_tells_nobody() -> None:
    assert affected(Holdings(), [Withdrawal("cns_1", frozenset({"smp_1"}), TRAINING, None)]) == []
