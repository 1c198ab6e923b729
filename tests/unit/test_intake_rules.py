"""Who a revocation's notices go to, decided from plain values: no database, no registry
(`revocation_worker.intake.rules`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from revocation_worker.intake.holdings import HeldLicense, HeldModel, Holdings
from revocation_worker.intake.rules import (
    Pending,
    Withdrawal,
    affected,
    groups,
    merge_parts,
    narrower,
    pending_of,
    retry_delay,
)
from revocation_worker.notices.service import HolderNotice

TRAINING = frozenset({"model_training"})


@dataclass(frozen=True)
class Part:
    revocation_id: str
    consent_id: str
    sample_ids: list[str]
    purposes: list[str]
    only_licensee_id: str | None = None


def lic(
    license_id: str,
    licensee: str,
    consent: str,
    sample_ids: set[str] | None,
    purpose: str = "model_training",
) -> HeldLicense:
    return HeldLicense(license_id, licensee, licensee.upper(), "active", consent, purpose, sample_ids)


def holdings(requested: Sequence[str], *licenses: HeldLicense, models: Sequence[HeldModel] = ()) -> Holdings:
    return Holdings(
        requested=frozenset(requested),
        licenses={x.license_id: x for x in licenses},
        refs={s: (f"sha-{s}", "audio") for s in requested},
        models={m.model_id: m for m in models},
    )


def told(notices: Sequence[HolderNotice]) -> dict[str, set[str]]:
    return {n["licensee_id"]: set(n["sample_ids"]) for n in notices}


def test_parts_of_one_consent_merge_into_one_withdrawal() -> None:
    parts = [
        Part("rev_1", "con_b", ["s3"], ["model_training"]),
        Part("rev_1", "con_a", ["s1"], ["model_training"]),
        Part("rev_1", "con_a", ["s2"], ["evaluation"]),
    ]
    assert merge_parts(parts) == [
        Withdrawal("con_a", frozenset({"s1", "s2"}), frozenset({"model_training", "evaluation"}), None),
        Withdrawal("con_b", frozenset({"s3"}), TRAINING, None),
    ]
    p = pending_of("rev_1", parts)
    assert p == Pending("rev_1", merge_parts(parts), ["s1", "s2", "s3"])


def test_only_holders_under_the_withdrawn_consent_and_purpose_are_told() -> None:
    w = [Withdrawal("con_a", frozenset({"s1", "s2"}), TRAINING, None)]
    h = holdings(
        ["s1", "s2"],
        lic("l1", "acme", "con_a", None),  # both samples, under the withdrawn consent
        lic("l2", "beta", "con_a", {"s2"}),  # one of them
        lic("l3", "gamma", "con_other", None),  # under another consent: still consented
        lic("l4", "delta", "con_a", None, purpose="evaluation"),  # a purpose not withdrawn
    )
    out = affected(h, w)
    assert told(out) == {"acme": {"s1", "s2"}, "beta": {"s2"}}
    acme = next(n for n in out if n["licensee_id"] == "acme")
    assert acme["license_ids"] == ["l1"]
    assert acme["revocation_samples"].refs["s1"] == ("sha-s1", "audio")


def test_a_withdrawal_for_one_licensee_tells_only_that_licensee() -> None:
    w = [Withdrawal("con_a", frozenset({"s1"}), TRAINING, "beta")]
    h = holdings(["s1"], lic("l1", "acme", "con_a", None), lic("l2", "beta", "con_a", None))
    assert told(affected(h, w)) == {"beta": {"s1"}}


def test_models_of_the_licenses_hit_are_named() -> None:
    w = [Withdrawal("con_a", frozenset({"s1"}), TRAINING, None)]
    hit = HeldModel("m1", "acme", "voice", "1", {"sh1"}, {"l1"})
    other = HeldModel("m2", "acme", "other", "1", set(), {"l9"})
    h = holdings(["s1"], lic("l1", "acme", "con_a", None), models=[hit, other])
    (notice,) = affected(h, w)
    assert notice["models"] == [{"model_id": "m1", "name": "voice", "version": "1", "shard_ids": ["sh1"]}]


def test_nobody_holding_the_samples_means_no_notice() -> None:
    w = [Withdrawal("con_a", frozenset({"s1"}), TRAINING, None)]
    assert affected(holdings(["s1"]), w) == []


def test_a_shared_answer_narrowed_to_one_revocation_tells_what_its_own_lookup_would() -> None:
    shared = holdings(
        ["s1", "s2", "s3"],
        lic("l1", "acme", "con_a", {"s1", "s2"}),
        lic("l2", "beta", "con_b", {"s3"}),
        models=[HeldModel("m1", "beta", "voice", "1", {"sh"}, {"l2"})],
    )
    narrow = narrower(shared)
    own, widened = narrow(["s1", "s2"])
    assert set(own.licenses) == {"l1"} and own.licenses["l1"].sample_ids is None  # all it asked for
    assert own.models == {} and not widened
    w = [Withdrawal("con_a", frozenset({"s1", "s2"}), TRAINING, None)]
    alone = holdings(["s1", "s2"], lic("l1", "acme", "con_a", None))
    assert told(affected(own, w)) == told(affected(alone, w)) == {"acme": {"s1", "s2"}}


def test_a_sharded_model_linked_outside_the_revocation_widens_the_shared_answer() -> None:
    shared = holdings(
        ["s1", "s2"],
        lic("l1", "acme", "con_a", {"s1"}),
        lic("l2", "acme", "con_b", {"s2"}),
        models=[HeldModel("m1", "acme", "voice", "1", {"sh1", "sh2"}, {"l1", "l2"})],
    )
    _, widened = narrower(shared)(["s1"])
    assert widened


def test_lookup_groups_stay_within_the_limit_and_a_big_revocation_goes_alone() -> None:
    def p(rid: str, n: int) -> Pending:
        return Pending(rid, [], [f"{rid}-{i}" for i in range(n)])

    out = list(groups([p("a", 4), p("b", 5), p("c", 2), p("d", 20), p("e", 1)], limit=10))
    assert [[x.id for x in g] for g in out] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert list(groups([], limit=10)) == []


def test_retry_delay_doubles_up_to_a_minute_with_at_most_a_fifth_more() -> None:
    assert [retry_delay(n, lambda: 0.0) for n in (1, 2, 3, 7, 8, 20)] == [1.0, 2.0, 4.0, 60.0, 60.0, 60.0]
    assert retry_delay(1, lambda: 1.0) == 1.2
    for n in range(0, 15):
        assert min(60.0, 0.5 * 2 ** min(n, 10)) <= retry_delay(n) <= 72.0
