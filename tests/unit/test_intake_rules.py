"""Who a revocation's notices go to, decided from plain values: no database, no registry
(`revocation_worker.intake.rules`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from revocation_worker.intake.holdings import HeldLicense, HeldModel, Holdings
from revocation_worker.intake.rules import (
    ActOn,
    Pending,
    Withdrawal,
    affected,
    groups,
    merge_parts,
    model_to_act_on,
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


def model(model_id: str, licensee: str, *links: tuple[str, str]) -> HeldModel:
    """A model as the registry answers it: its (license, shard; '' = whole model) links."""
    shards = {sh for _, sh in links}
    return HeldModel(
        model_id,
        licensee,
        model_id.upper(),
        "1",
        set() if "" in shards else shards,
        {lic for lic, _ in links},
        set(links),
    )


def test_model_to_act_on_whole_only() -> None:
    assert model_to_act_on([("l1", "")], {"l1"}) == ActOn("whole", [], ["l1"])


def test_model_to_act_on_shards_only() -> None:
    assert model_to_act_on([("l1", "s2"), ("l1", "s1")], {"l1"}) == ActOn("shards", ["s1", "s2"], ["l1"])


def test_model_to_act_on_whole_and_shard_of_the_same_model_is_the_whole_model() -> None:
    # The whole model and one shard both trained on hit licenses: the shard alone would miss the rest.
    links = [("l1", ""), ("l2", "s7")]
    assert model_to_act_on(links, {"l1", "l2"}) == ActOn("whole", [], ["l1", "l2"])


def test_model_to_act_on_ignores_licenses_not_hit() -> None:
    links = [("l1", "s1"), ("l2", "s2"), ("l3", "")]
    # l3 went into the whole model but is not hit: only l1's shard.
    assert model_to_act_on(links, {"l1"}) == ActOn("shards", ["s1"], ["l1"])
    # Only l3 hit: the whole model, named by l3 alone.
    assert model_to_act_on(links, {"l3"}) == ActOn("whole", [], ["l3"])
    # Nothing of the model hit: nothing to act on.
    assert model_to_act_on(links, {"l9"}) is None
    assert model_to_act_on([], {"l1"}) is None


def test_model_to_act_on_two_licenses_of_one_model() -> None:
    assert model_to_act_on([("l1", "s1"), ("l2", "s1")], {"l1", "l2"}) == ActOn(
        "shards", ["s1"], ["l1", "l2"]
    )
    assert model_to_act_on([("l1", ""), ("l2", "")], {"l1", "l2"}) == ActOn("whole", [], ["l1", "l2"])
    # One license into two shards and the whole model: whole.
    assert model_to_act_on([("l1", "s1"), ("l1", "")], {"l1"}) == ActOn("whole", [], ["l1"])


def test_models_of_the_licenses_hit_are_named() -> None:
    w = [Withdrawal("con_a", frozenset({"s1"}), TRAINING, None)]
    hit = model("m1", "acme", ("l1", "sh1"))
    other = model("m2", "acme", ("l9", ""))
    h = holdings(["s1"], lic("l1", "acme", "con_a", None), models=[hit, other])
    (notice,) = affected(h, w)
    assert notice["models"] == [
        {
            "model_id": "m1",
            "name": "M1",
            "version": "1",
            "shard_ids": ["sh1"],
            "scope": "shards",
            "license_ids": ["l1"],
        }
    ]


def test_each_license_hit_is_named_with_its_consent_purposes_and_sample_count() -> None:
    w = [
        Withdrawal("con_a", frozenset({"s1", "s2"}), frozenset({"model_training", "evaluation"}), None),
        Withdrawal("con_b", frozenset({"s3"}), frozenset({"evaluation"}), None),
    ]
    h = holdings(
        ["s1", "s2", "s3"],
        lic("l1", "acme", "con_a", {"s1", "s2"}),
        lic("l2", "acme", "con_b", {"s3"}, purpose="evaluation"),
        lic("l3", "acme", "con_b", {"s3"}),  # model_training of con_b is not withdrawn
    )
    (notice,) = affected(h, w)
    assert notice["licensee_name"] == "ACME"
    assert notice["licenses"] == [
        {
            "license_id": "l1",
            "consent_id": "con_a",
            "purposes": ["evaluation", "model_training"],
            "sample_count": 2,
        },
        {"license_id": "l2", "consent_id": "con_b", "purposes": ["evaluation"], "sample_count": 1},
    ]
    assert notice["license_ids"] == ["l1", "l2"]


def _acts(notice: HolderNotice) -> dict[str, tuple[str, list[str], list[str]]]:
    return {m["model_id"]: (m["scope"], m["shard_ids"], m["license_ids"]) for m in notice["models"]}


def test_every_combination_of_whole_and_shard_links_on_one_holder() -> None:
    """One licensee, four licenses (two hit, two left alone) and models linked every way."""
    w = [Withdrawal("con_a", frozenset({"s1", "s2"}), TRAINING, None)]
    h = holdings(
        ["s1", "s2"],
        lic("l_hit1", "acme", "con_a", {"s1"}),
        lic("l_hit2", "acme", "con_a", {"s2"}),
        lic("l_other", "acme", "con_other", {"s1"}),  # same sample, another consent: not hit
        lic("l_eval", "acme", "con_a", {"s2"}, purpose="evaluation"),  # purpose not withdrawn
        models=[
            model("whole_only", "acme", ("l_hit1", "")),
            model("shards_only", "acme", ("l_hit1", "a"), ("l_hit1", "b")),
            model("whole_and_shard", "acme", ("l_hit1", ""), ("l_hit2", "c")),
            model("not_hit", "acme", ("l_other", ""), ("l_eval", "d")),
            model("hit_shard_unhit_whole", "acme", ("l_hit2", "e"), ("l_other", "")),
            model("unhit_shard_hit_shard", "acme", ("l_hit1", "f"), ("l_eval", "g")),
            model("two_licenses", "acme", ("l_hit1", "h"), ("l_hit2", "i")),
        ],
    )
    (notice,) = affected(h, w)
    assert _acts(notice) == {
        "whole_only": ("whole", [], ["l_hit1"]),
        "shards_only": ("shards", ["a", "b"], ["l_hit1"]),
        "whole_and_shard": ("whole", [], ["l_hit1", "l_hit2"]),
        "hit_shard_unhit_whole": ("shards", ["e"], ["l_hit2"]),
        "unhit_shard_hit_shard": ("shards", ["f"], ["l_hit1"]),
        "two_licenses": ("shards", ["h", "i"], ["l_hit1", "l_hit2"]),
    }
    assert [x["license_id"] for x in notice["licenses"]] == ["l_hit1", "l_hit2"]


def test_a_model_of_another_licensee_is_not_named() -> None:
    w = [Withdrawal("con_a", frozenset({"s1"}), TRAINING, None)]
    h = holdings(
        ["s1"],
        lic("l1", "acme", "con_a", None),
        lic("l2", "beta", "con_a", None),
        models=[model("m_acme", "acme", ("l1", "")), model("m_beta", "beta", ("l2", "x"))],
    )
    out = {n["licensee_id"]: _acts(n) for n in affected(h, w)}
    assert out == {"acme": {"m_acme": ("whole", [], ["l1"])}, "beta": {"m_beta": ("shards", ["x"], ["l2"])}}


def test_nobody_holding_the_samples_means_no_notice() -> None:
    w = [Withdrawal("con_a", frozenset({"s1"}), TRAINING, None)]
    assert affected(holdings(["s1"]), w) == []


def test_a_shared_answer_narrowed_to_one_revocation_tells_what_its_own_lookup_would() -> None:
    shared = holdings(
        ["s1", "s2", "s3"],
        lic("l1", "acme", "con_a", {"s1", "s2"}),
        lic("l2", "beta", "con_b", {"s3"}),
        models=[model("m1", "beta", ("l2", "sh"))],
    )
    narrow = narrower(shared)
    own, widened = narrow(["s1", "s2"])
    assert set(own.licenses) == {"l1"} and own.licenses["l1"].sample_ids is None  # all it asked for
    assert own.models == {} and not widened
    w = [Withdrawal("con_a", frozenset({"s1", "s2"}), TRAINING, None)]
    alone = holdings(["s1", "s2"], lic("l1", "acme", "con_a", None))
    assert told(affected(own, w)) == told(affected(alone, w)) == {"acme": {"s1", "s2"}}


def test_a_sharded_model_linked_outside_the_revocation_is_exact_from_its_links() -> None:
    shared = holdings(
        ["s1", "s2"],
        lic("l1", "acme", "con_a", {"s1"}),
        lic("l2", "acme", "con_b", {"s2"}),
        models=[model("m1", "acme", ("l1", "sh1"), ("l2", "sh2"))],
    )
    own, widened = narrower(shared)(["s1"])
    assert not widened  # the links say which shard is whose: no second lookup needed
    (notice,) = affected(own, [Withdrawal("con_a", frozenset({"s1"}), TRAINING, None)])
    assert _acts(notice) == {"m1": ("shards", ["sh1"], ["l1"])}


def test_a_sharded_model_without_links_widens_the_shared_answer() -> None:
    # An older registry's answer: shard ids and license ids only, the links guessed (inexact).
    guessed = HeldModel("m1", "acme", "voice", "1", {"sh1", "sh2"}, {"l1", "l2"}, exact=False)
    shared = holdings(
        ["s1", "s2"],
        lic("l1", "acme", "con_a", {"s1"}),
        lic("l2", "acme", "con_b", {"s2"}),
        models=[guessed],
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


def _answer(models: list[dict[str, object]]) -> dict[str, object]:
    lic_ = {
        "license_id": "l1",
        "licensee_id": "acme",
        "licensee_name": "Acme",
        "status": "active",
        "consent_id": "con_a",
        "purpose": "model_training",
        "all_requested": True,
        "sample_ids": [],
    }
    return {"licenses": [lic_], "samples": [], "models": models, "unknown_sample_ids": []}


def test_the_registry_links_are_read_exactly_and_guessed_widely_without_them() -> None:
    from revocation_worker.intake.holdings import HoldingsMerger

    base = {"licensee_id": "acme", "name": "m", "version": "1"}
    merger = HoldingsMerger()
    merger.add(
        ["s1"],
        _answer(
            [
                {
                    **base,
                    "model_id": "exact",
                    "shard_ids": [],
                    "license_ids": ["l1", "l2"],
                    "whole": True,
                    "links": [
                        {"license_id": "l1", "shard_id": "sh1"},
                        {"license_id": "l2", "shard_id": None},
                    ],
                },
                # An older registry: no links; every license is taken as linked to every shard named.
                {**base, "model_id": "old", "shard_ids": ["sh1", "sh2"], "license_ids": ["l1", "l2"]},
                {**base, "model_id": "old_whole", "shard_ids": [], "license_ids": ["l1"]},
            ]
        ),
    )
    models = merger.result().models
    assert models["exact"].exact and models["exact"].links == {("l1", "sh1"), ("l2", "")}
    assert model_to_act_on(models["exact"].links, {"l1"}) == ActOn("shards", ["sh1"], ["l1"])
    assert not models["old"].exact
    assert models["old"].links == {(lic_, sh) for lic_ in ("l1", "l2") for sh in ("sh1", "sh2")}
    assert models["old_whole"].links == {("l1", "")}
