"""Pure rules behind the seller's view and the proof: the notice fold (statuses never go back, the
first delivery stays, a stale or partial answer never replaces a full one), overdue, an erasure's
status from its holders, and the RFC 6962 Merkle root of the withdrawn samples."""

from __future__ import annotations

import datetime as dt

import pytest

from consent_api.notices.models import RevocationNotice, RevocationResolution
from consent_api.notices.rules import Step, fold, is_overdue, step_of
from consent_api.notices.service import erasure_status, overall_status
from consent_api.proofs.merkle import merkle_root

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

# Certificate Transparency's RFC 6962 test vectors: the tree hash of the first n of these leaves.
CT_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


@pytest.mark.parametrize("n", sorted(CT_ROOTS))
def test_merkle_root_is_rfc6962(n):
    assert merkle_root(CT_LEAVES[:n]) == CT_ROOTS[n]


def test_merkle_root_sorts_dedupes_and_ignores_case():
    a, b = "ab" * 32, "01" * 32
    assert merkle_root([a, b, a.upper()]) == merkle_root([b, a])
    assert merkle_root([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle_root([a]) != merkle_root([b])


def answer(at: dt.datetime, complete: bool, outcome: str = "deleted") -> Step:
    kind = "notice_acknowledged" if complete else "notice_partially_acknowledged"
    status = "acknowledged" if complete else "partially_acknowledged"
    values = {
        "outcome": outcome,
        "basis": None,
        "model_answers": [],
        "complete": complete,
        "evidence_digest": None,
        "ack_digest": f"sha256:{outcome}",
        "signature_verified": False,
        "answered_at": at,
    }
    return Step(kind, status, at, values)


def delivered(at: dt.datetime, code: int) -> Step:
    return Step(
        "notice_delivered",
        "delivered",
        at,
        {"status_code": code, "webhook_id": "msg_1", "first_attempt_at": at},
    )


def test_a_partial_answer_then_a_full_one_acknowledges():
    out = fold("delivered", None, [answer(T0, False), answer(T0 + dt.timedelta(hours=1), True, "not_held")])
    assert out.status == "acknowledged" and out.details["outcome"] == "not_held" and out.details["complete"]


def test_a_full_answer_is_never_replaced_by_a_partial_or_older_one():
    out = fold(None, None, [answer(T0, True), answer(T0 + dt.timedelta(hours=1), False, "exempt")])
    assert out.status == "acknowledged" and out.details["outcome"] == "deleted"
    out = fold(
        None, None, [answer(T0, False, "not_held"), answer(T0 - dt.timedelta(hours=1), False, "exempt")]
    )
    assert out.details["outcome"] == "not_held"


def test_the_first_delivery_stays_and_a_failed_notice_can_be_delivered_again():
    out = fold("failed", None, [delivered(T0, 204), delivered(T0 + dt.timedelta(hours=1), 200)])
    assert out.status == "delivered"
    assert out.details["delivered_at"] == T0 and out.details["delivery_status_code"] == 204


def test_overdue_and_a_partial_answer_show_whichever_came_later():
    overdue = Step("notice_overdue", "overdue", T0, {"deadline": T0})
    assert fold("delivered", None, [overdue, answer(T0, False)]).status == "partially_acknowledged"
    assert fold("delivered", None, [answer(T0, False), overdue]).status == "overdue"
    assert fold("delivered", None, [answer(T0, True), overdue]).status == "acknowledged"


def test_overdue_is_the_workers_word_or_a_deadline_passed_without_a_full_answer():
    late = T0 + dt.timedelta(days=31)
    assert is_overdue("delivered", {"deadline": T0}, late)
    assert not is_overdue("delivered", {"deadline": T0}, T0 - dt.timedelta(seconds=1))
    assert not is_overdue("acknowledged", {"deadline": T0}, late)
    assert is_overdue("acknowledged", {"deadline": T0, "overdue_at": T0}, late)
    assert not is_overdue("pending", {}, late)


def notice(licensee: str, status: str, **kw) -> RevocationNotice:
    return RevocationNotice(
        revocation_id="rev_1",
        licensee_id=licensee,
        notice_id=f"ntc_{licensee}",
        status=status,
        updated_at=T0,
        **kw,
    )


RESOLVED = RevocationResolution(
    revocation_id="rev_1", notice_count=2, licensee_ids=["a", "b"], resolved_at=T0
)


@pytest.mark.parametrize(
    ("notices", "expected"),
    [
        ([], "in_progress"),  # the holders are not in yet
        ([notice("a", "acknowledged", answered_at=T0)], "in_progress"),  # b not heard of
        ([notice("a", "acknowledged", answered_at=T0), notice("b", "delivered", deadline=T0)], "in_progress"),
        ([notice("a", "acknowledged", answered_at=T0), notice("b", "partially_acknowledged")], "in_progress"),
        (
            [notice("a", "acknowledged", answered_at=T0), notice("b", "acknowledged", answered_at=T0)],
            "completed",
        ),
        (
            [notice("a", "acknowledged", answered_at=T0), notice("b", "overdue", overdue_at=T0)],
            "completed_with_exceptions",
        ),
        (
            [notice("a", "acknowledged"), notice("b", "failed", deadline=T0 - dt.timedelta(days=1))],
            "completed_with_exceptions",
        ),
    ],
)
def test_erasure_waits_for_every_holder(notices, expected):
    assert erasure_status("pending", RESOLVED, notices, T0)[0] == expected


def test_erasure_with_nothing_to_tell_or_nobody_holding_completes():
    assert erasure_status("completed", None, [], T0) == ("completed", None)
    assert erasure_status("pending", None, [], T0)[0] == "in_progress"
    nobody = RevocationResolution(revocation_id="rev_1", notice_count=0, licensee_ids=[], resolved_at=T0)
    assert erasure_status("pending", nobody, [], T0) == ("completed", T0)


def test_a_revocation_shows_partially_acknowledged_while_a_holder_answered_in_part():
    mixed = [notice("a", "acknowledged"), notice("b", "partially_acknowledged")]
    assert overall_status("pending", RESOLVED, mixed) == "partially_acknowledged"
    assert overall_status("pending", RESOLVED, [*mixed[:1], notice("b", "overdue")]) == "overdue"


def test_what_a_worker_event_says_about_a_notice():
    """Real NoticeEvent protobufs, decoded into a step: names, licenses, whole models and shards."""
    from support.notices import Worker

    w = Worker("rev_1", "sub_1")
    created = w.created(
        "lic_a",
        name="Acme",
        deadline=T0,
        at=T0,
        licenses=[
            {"license_id": "lcn_1", "consent_id": "cns_1", "purposes": ["evaluation"], "trigger": "expiry"}
        ],
        models=[
            {"model_id": "m_whole", "name": "n", "version": "1", "whole": True, "license_ids": ["lcn_1"]},
            {
                "model_id": "m_shard",
                "name": "s",
                "version": "2",
                "shard_ids": ["s1"],
                "license_ids": ["lcn_1"],
            },
        ],
    )
    out = fold(None, None, [step_of(created, T0)])
    assert out.status == "pending" and out.details["licensee_name"] == "Acme"
    assert out.details["told_at"] == T0 and out.details["deadline"] == T0
    assert out.details["licenses"][0]["trigger"] == "expiry"
    assert [(m["model_id"], m["whole"], m["shard_ids"]) for m in out.details["models"]] == [
        ("m_whole", True, []),
        ("m_shard", False, ["s1"]),
    ]
    # A reminder changes no status; an event about no notice is no step.
    assert fold("delivered", None, [step_of(w.reminded("lic_a", deadline=T0), T0)]).status == "delivered"
    assert step_of(w.resolved("lic_a"), T0) is None


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 13, 33])
def test_the_cli_recomputes_the_services_merkle_root(n):
    """`rescind proof verify --samples` (bottom-up) and the service (recursive split) agree."""
    import hashlib

    from rescind_cli.proofs import merkle_root as cli_root

    hashes = [hashlib.sha256(f"sample-{n}-{i}".encode()).hexdigest() for i in range(n)]
    assert cli_root(hashes) == merkle_root(hashes)
    assert cli_root([h.upper() for h in reversed(hashes)] + hashes[:1]) == merkle_root(hashes)
