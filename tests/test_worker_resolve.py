"""Who is told about a revocation: only holders of what it withdrew (pure logic of the resolver)."""

from __future__ import annotations

from revocation_worker.intake.resolver import Withdrawal, affected


def holder(licensee: str, licenses: list[tuple[str, str, str, list[str]]], models=()):  # type: ignore[no-untyped-def]
    """licenses: (license_id, consent_id, purpose, sample_ids)."""
    samples: dict[str, list[str]] = {}
    for lid, _, _, sids in licenses:
        for s in sids:
            samples.setdefault(s, []).append(lid)
    return {
        "licensee_id": licensee,
        "licenses": [
            {"license_id": lid, "consent_id": c, "purpose": p, "status": "active"}
            for lid, c, p, _ in licenses
        ],
        "samples": [
            {"sample_id": s, "sha256": "0" * 64, "kind": "face_image", "license_ids": lids}
            for s, lids in samples.items()
        ],
        "models": list(models),
    }


def test_a_holder_under_another_consent_is_not_told() -> None:
    a = holder("lic_a", [("lcs_1", "cns_1", "model_training", ["smp_1"])])
    b = holder("lic_b", [("lcs_2", "cns_2", "model_training", ["smp_1"])])  # same sample, other consent
    out = affected([a, b], [Withdrawal("cns_1", frozenset({"smp_1"}), frozenset({"model_training"}), None)])
    assert [h["licensee_id"] for h in out] == ["lic_a"]


def test_a_purpose_still_consented_is_not_told() -> None:
    a = holder("lic_a", [("lcs_1", "cns_1", "evaluation", ["smp_1"])])
    b = holder("lic_b", [("lcs_2", "cns_1", "model_training", ["smp_1"])])
    out = affected([a, b], [Withdrawal("cns_1", frozenset({"smp_1"}), frozenset({"model_training"}), None)])
    assert [h["licensee_id"] for h in out] == ["lic_b"]


def test_only_the_withdrawn_licensee_of_an_open_consent_is_told() -> None:
    a = holder("lic_a", [("lcs_1", "cns_1", "model_training", ["smp_1"])])
    b = holder("lic_b", [("lcs_2", "cns_1", "model_training", ["smp_1"])])
    out = affected(
        [a, b], [Withdrawal("cns_1", frozenset({"smp_1"}), frozenset({"model_training"}), "lic_b")]
    )
    assert [h["licensee_id"] for h in out] == ["lic_b"]


def test_samples_and_models_are_narrowed_to_what_was_withdrawn() -> None:
    model_hit = {
        "model_id": "mdl_1",
        "name": "m",
        "version": "1",
        "shard_ids": ["s1"],
        "sample_ids": ["smp_1", "smp_2"],
        "license_ids": ["lcs_1"],
    }
    model_other = {
        "model_id": "mdl_2",
        "name": "n",
        "version": "1",
        "shard_ids": [],
        "sample_ids": ["smp_3"],
        "license_ids": ["lcs_9"],
    }
    a = holder(
        "lic_a",
        [
            ("lcs_1", "cns_1", "model_training", ["smp_1", "smp_2"]),
            ("lcs_9", "cns_9", "model_training", ["smp_3"]),
        ],
        [model_hit, model_other],
    )
    out = affected(
        [a], [Withdrawal("cns_1", frozenset({"smp_2", "smp_3"}), frozenset({"model_training"}), None)]
    )
    assert [s["sample_id"] for s in out[0]["samples"]] == ["smp_2"]
    assert [m["model_id"] for m in out[0]["models"]] == ["mdl_1"]
