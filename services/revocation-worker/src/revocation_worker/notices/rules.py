"""A licensee's final answer to a notice: the rules alone (no database, no clock).

Modelled on the California DROP outcomes. The samples are `deleted`, `not_held` (with a reason) or
`exempt` (with a legal basis); every model the notice named is `retrained`, `unlearned`,
`withdrawn` or `exempt` (with a basis). Answers accumulate over several acks (`merge`); a notice
is `acknowledged` only when the samples are answered and every named model is (`decide`), else
`partially_acknowledged`; once acknowledged it stays so (`next_status`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

Outcome = Literal["deleted", "not_held", "exempt"]
NotHeldReason = Literal["never_received", "already_deleted", "not_identifiable", "returned_to_seller"]
ExemptBasis = Literal[
    "legal_obligation", "legal_claims", "public_interest", "freedom_of_expression", "research_archiving"
]
ModelActionName = Literal["retrained", "unlearned", "withdrawn", "exempt"]

OUTCOMES: tuple[str, ...] = get_args(Outcome)
REASONS: tuple[str, ...] = get_args(NotHeldReason)
BASES: tuple[str, ...] = get_args(ExemptBasis)
ACTIONS: tuple[str, ...] = get_args(ModelActionName)

# Evidence lists that accumulate over acks (the other keys: the latest value wins).
LIST_EVIDENCE = ("job_ids", "run_ids")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8 (no ASCII escaping): what digests and signatures cover."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    model_id: str
    action: str
    basis: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """What one POST answers (None: not answered by it)."""

    outcome: str | None
    reason: str | None
    basis: str | None
    models: tuple[ModelAnswer, ...]
    evidence: Mapping[str, Any] | None
    signature_verified: bool


def samples_outcome(status: str | None, samples_deleted: bool | None, outcome: str | None) -> str | None:
    """The samples' outcome an ack gives, the v1 body mapped: `samples_deleted: true` (or a bare
    `status: completed`, whose default it was) is `deleted`; `false` without an outcome answers
    nothing about the samples."""
    if outcome is not None:
        return outcome
    if samples_deleted is True or (samples_deleted is None and status == "completed"):
        return "deleted"
    return None


def problems(
    ack: Ack, samples_deleted: bool | None, named: Iterable[str], status: str | None = None
) -> list[tuple[str, str]]:
    """(field, message) for each thing wrong with one ack against the models the notice named
    (`samples_deleted`, `status`: the v1 fields as given)."""
    out: list[tuple[str, str]] = []
    if samples_deleted is True and ack.outcome not in (None, "deleted"):
        out.append(("body.samples_deleted", f"true contradicts outcome {ack.outcome!r}"))
    if samples_deleted is False and ack.outcome == "deleted":
        out.append(("body.samples_deleted", "false contradicts outcome 'deleted'"))
    if ack.outcome == "not_held" and ack.reason is None:
        out.append(("body.reason", f"required with outcome not_held (one of {', '.join(REASONS)})"))
    if ack.reason is not None and ack.outcome != "not_held":
        out.append(("body.reason", "only with outcome not_held"))
    if ack.outcome == "exempt" and ack.basis is None:
        out.append(("body.basis", f"required with outcome exempt (one of {', '.join(BASES)})"))
    if ack.basis is not None and ack.outcome != "exempt":
        out.append(("body.basis", "only with outcome exempt"))
    known = set(named)
    seen: set[str] = set()
    for i, m in enumerate(ack.models):
        if m.model_id not in known:
            out.append((f"body.models[{i}].model_id", "not in this notice"))
        elif m.model_id in seen:
            out.append((f"body.models[{i}].model_id", "answered twice in this ack"))
        seen.add(m.model_id)
        if m.action == "exempt" and m.basis is None:
            out.append(
                (f"body.models[{i}].basis", f"required with action exempt (one of {', '.join(BASES)})")
            )
        if m.basis is not None and m.action != "exempt":
            out.append((f"body.models[{i}].basis", "only with action exempt"))
    if (
        ack.outcome is None
        and not ack.models
        and ack.evidence is None
        and samples_deleted is None
        and not status
    ):
        out.append(("body.outcome", "the ack answers nothing: give an outcome, models or evidence"))
    return out


def _merge_evidence(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if new is None:
        return dict(old) if old is not None else None
    merged = dict(old or {})
    for key, value in new.items():
        before = merged.get(key)
        if key in LIST_EVIDENCE and isinstance(before, list) and isinstance(value, list):
            merged[key] = before + [v for v in value if v not in before]
        else:
            merged[key] = value
    return merged


def merge(previous: Mapping[str, Any] | None, ack: Ack, answered_at: str) -> dict[str, Any]:
    """The stored answer after this ack: its samples outcome (if any) replaces the earlier one, its
    model answers replace earlier answers for the same models, evidence accumulates. The answer is
    signature-verified only when every ack in it was. Digests: `evidence_digest` over the evidence,
    `ack_digest` over the whole answer without it."""
    prev = dict(previous or {})
    models = {m["model_id"]: dict(m) for m in prev.get("models", [])}
    for m in ack.models:
        models[m.model_id] = {"model_id": m.model_id, "action": m.action, "basis": m.basis}
    outcome: str | None
    reason: str | None
    basis: str | None
    if ack.outcome is not None:
        outcome, reason, basis = ack.outcome, ack.reason, ack.basis
    else:
        outcome, reason, basis = prev.get("outcome"), prev.get("reason"), prev.get("basis")
    evidence = _merge_evidence(prev.get("evidence"), ack.evidence)
    answer: dict[str, Any] = {
        "outcome": outcome,
        "reason": reason,
        "basis": basis,
        "models": [models[k] for k in sorted(models)],
        "evidence": evidence,
        "evidence_digest": digest(evidence) if evidence is not None else None,
        "answered_at": answered_at,
        "acks": int(prev.get("acks", 0)) + 1,
        "signature_verified": bool(prev.get("signature_verified", True)) and ack.signature_verified,
    }
    answer["ack_digest"] = digest(answer)
    return answer


@dataclass(frozen=True, slots=True)
class Decision:
    complete: bool
    samples_answered: bool
    missing_models: tuple[str, ...]


def decide(named: Sequence[str], answer: Mapping[str, Any]) -> Decision:
    """Complete only when the samples have a final outcome and every named model has an action."""
    answered = {m["model_id"] for m in answer.get("models", [])}
    missing = tuple(sorted(set(named) - answered))
    samples = answer.get("outcome") in OUTCOMES
    return Decision(samples and not missing, samples, missing)


def next_status(current: str, complete: bool) -> str:
    """The notice's status after an ack: acknowledged when complete (and for good); otherwise
    partially acknowledged, except that an overdue notice stays overdue until it is complete."""
    if current == "acknowledged" or complete:
        return "acknowledged"
    if current == "overdue":
        return "overdue"
    return "partially_acknowledged"
