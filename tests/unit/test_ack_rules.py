"""A licensee's final answer to a notice, as plain values (`revocation_worker.notices.rules`): when a
notice is acknowledged, partially acknowledged, and what each ack body means."""

from __future__ import annotations

import hashlib
import json

from revocation_worker.notices.rules import (
    Ack,
    ModelAnswer,
    canonical_json,
    decide,
    digest,
    merge,
    next_status,
    problems,
    samples_outcome,
)

AT = "2026-03-01T12:00:00Z"


def ack(
    outcome: str | None = None,
    *models: ModelAnswer,
    reason: str | None = None,
    basis: str | None = None,
    evidence: dict[str, object] | None = None,
    signed: bool = False,
) -> Ack:
    return Ack(outcome, reason, basis, tuple(models), evidence, signed)


def test_the_v1_body_maps_onto_outcomes() -> None:
    assert samples_outcome("completed", None, None) == "deleted"  # its default was true
    assert samples_outcome("completed", True, None) == "deleted"
    assert samples_outcome(None, True, None) == "deleted"
    # samples_deleted false with no justification: the samples are not answered.
    assert samples_outcome("completed", False, None) is None
    assert samples_outcome(None, None, None) is None
    assert samples_outcome("completed", False, "not_held") == "not_held"


def test_samples_deleted_false_without_justification_is_not_complete() -> None:
    answer = merge(None, ack(samples_outcome("completed", False, None)), AT)
    d = decide([], answer)
    assert (d.complete, d.samples_answered) == (False, False)
    assert next_status("delivered", d.complete) == "partially_acknowledged"


def test_an_ack_omitting_a_named_model_is_not_complete() -> None:
    answer = merge(None, ack("deleted", ModelAnswer("mdl_a", "retrained")), AT)
    d = decide(["mdl_a", "mdl_b"], answer)
    assert not d.complete and d.samples_answered and d.missing_models == ("mdl_b",)


def test_answers_accumulate_to_complete() -> None:
    first = merge(None, ack("deleted", ModelAnswer("mdl_a", "retrained")), AT)
    second = merge(first, ack(None, ModelAnswer("mdl_b", "exempt", "legal_claims")), "2026-03-02T00:00:00Z")
    assert second["outcome"] == "deleted"  # kept from the first
    assert [m["model_id"] for m in second["models"]] == ["mdl_a", "mdl_b"]
    assert decide(["mdl_a", "mdl_b"], second).complete
    assert second["acks"] == 2 and second["answered_at"] == "2026-03-02T00:00:00Z"


def test_justified_outcomes_complete_a_notice_without_models() -> None:
    for outcome, extra in (
        ("not_held", {"reason": "never_received"}),
        ("exempt", {"basis": "legal_obligation"}),
    ):
        answer = merge(None, ack(outcome, **extra), AT)  # type: ignore[arg-type]
        assert decide([], answer).complete


def test_status_moves_only_forward() -> None:
    assert next_status("pending", True) == "acknowledged"
    assert next_status("partially_acknowledged", True) == "acknowledged"
    assert next_status("acknowledged", False) == "acknowledged"  # stays acknowledged
    assert next_status("overdue", False) == "overdue"
    assert next_status("overdue", True) == "acknowledged"
    assert next_status("failed", False) == "partially_acknowledged"


def test_problems_name_the_field() -> None:
    named = ["mdl_a"]
    assert problems(ack("deleted", ModelAnswer("mdl_a", "retrained")), None, named) == []
    fields = {f for f, _ in problems(ack("not_held"), None, named)}
    assert fields == {"body.reason"}
    assert {f for f, _ in problems(ack("exempt"), None, named)} == {"body.basis"}
    assert {f for f, _ in problems(ack("deleted", reason="never_received"), None, named)} == {"body.reason"}
    assert {f for f, _ in problems(ack("deleted", basis="legal_claims"), None, named)} == {"body.basis"}
    assert {f for f, _ in problems(ack("exempt", basis="legal_claims"), True, named)} == {
        "body.samples_deleted"
    }
    assert {f for f, _ in problems(ack("deleted"), False, named)} == {"body.samples_deleted"}
    assert {f for f, _ in problems(ack(None, ModelAnswer("mdl_x", "retrained")), None, named)} == {
        "body.models[0].model_id"
    }
    assert {f for f, _ in problems(ack(None, ModelAnswer("mdl_a", "exempt")), None, named)} == {
        "body.models[0].basis"
    }
    assert {
        f for f, _ in problems(ack(None, ModelAnswer("mdl_a", "retrained", "legal_claims")), None, named)
    } == {"body.models[0].basis"}
    twice = ack(None, ModelAnswer("mdl_a", "retrained"), ModelAnswer("mdl_a", "unlearned"))
    assert {f for f, _ in problems(twice, None, named)} == {"body.models[1].model_id"}
    assert {f for f, _ in problems(ack(), None, named)} == {"body.outcome"}


def test_digests_are_sha256_of_canonical_json() -> None:
    evidence = {"run_ids": ["r1"], "job_ids": ["j1"], "attestation": "Gelöscht"}
    expected = json.dumps(evidence, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_json(evidence) == expected
    assert digest(evidence) == "sha256:" + hashlib.sha256(expected).hexdigest()
    answer = merge(None, ack("deleted", evidence=evidence), AT)
    assert answer["evidence_digest"] == digest(evidence)
    assert answer["ack_digest"] == digest({k: v for k, v in answer.items() if k != "ack_digest"})
    # A changed answer has another digest.
    other = merge(None, ack("deleted", evidence={**evidence, "attestation": "x"}), AT)
    assert other["ack_digest"] != answer["ack_digest"]


def test_evidence_lists_accumulate_and_signatures_must_all_verify() -> None:
    first = merge(None, ack(None, evidence={"job_ids": ["j1"], "note": "a"}, signed=True), AT)
    second = merge(first, ack("deleted", evidence={"job_ids": ["j1", "j2"], "note": "b"}, signed=True), AT)
    assert second["evidence"] == {"job_ids": ["j1", "j2"], "note": "b"}
    assert second["signature_verified"] is True
    third = merge(second, ack(None, evidence={"run_ids": ["r1"]}, signed=False), AT)
    assert third["signature_verified"] is False
    assert third["evidence"]["run_ids"] == ["r1"] and third["evidence"]["job_ids"] == ["j1", "j2"]
