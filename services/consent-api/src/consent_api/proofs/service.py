"""The signed record of one revocation: what was withdrawn and what every holder told did about it,
as one compact JWS under the receipt keys (`/.well-known/jwks.json`), verifiable offline.

The payload (`typ` rescind-proof+jwt) commits to the withdrawn samples by a Merkle root
(`proofs.merkle`), names each holder with its delivery, final answer, actions per model and
digests, and gives the position of every step in the subject's audit chain (chain id = subject id,
seq, entry hash), so an auditor can match each claim to `/v1/audit/entries` and the chain's
checkpoints.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from consent_api.consents.models import Consent
from consent_api.context import AppContext
from consent_api.events import notice_trigger
from consent_api.notices import repository as notices_repo
from consent_api.notices.rules import iso
from consent_api.notices.service import overall_status
from consent_api.proofs import merkle, repository
from consent_api.receipts.claims import LEGAL_BASIS
from consent_api.revocations.models import Revocation
from consent_api.revocations.service import notice_out
from rescind_common.db import utcnow
from rescind_common.ids import new_id

PROOF_TYPE = "rescind-proof+jwt"
PROOF_FORMAT = "rescind.revocation-proof.v1"


# ISO/IEC TS 27560 consent states of a consent this revocation touched, by its status now.
STATE = {"active": "given", "expired": "expired"}


def purposes_of(revocation: Revocation, consents: list[Consent]) -> list[str]:
    """The purposes withdrawn: the one named by a purpose withdrawal, else every purpose of the
    consents it touched."""
    if revocation.purpose:
        return [revocation.purpose]
    return sorted({p for c in consents for p in c.purposes or []})


def consent_record(c: Consent) -> dict[str, Any]:
    """A touched consent's state now (ISO/IEC TS 27560): `withdrawn` once it ended, `given` while it
    lives on for what was not withdrawn (other purposes or samples)."""
    return {
        "id": c.id,
        "legal_basis": LEGAL_BASIS,
        "state": STATE.get(c.status, "withdrawn"),
        "withdrawn_purposes": list(c.revoked_purposes or []),
        "ended_at": iso(c.ended_at),
    }


def claims(session: Session, ctx: AppContext, revocation: Revocation, now: dt.datetime) -> dict[str, Any]:
    hashes = repository.withdrawn_sha256s(session, revocation.id)
    rows = notices_repo.for_revocations(session, [revocation.id])[revocation.id]
    resolution = notices_repo.resolutions(session, [revocation.id]).get(revocation.id)
    entry = repository.revocation_entry(session, revocation.subject_id, revocation.id)
    consents = repository.consents(session, list(revocation.consent_ids))
    notices = []
    for n in rows:
        view = notice_out(n, now)
        notices.append(
            {
                "notice_id": n.notice_id,
                "licensee_id": n.licensee_id,
                "licensee_name": n.licensee_name,
                "webhook_id": n.webhook_id,
                "told_at": iso(n.told_at),
                "first_delivery": {
                    "delivered_at": iso(n.delivered_at),
                    "first_attempt_at": iso(n.first_attempt_at),
                    "status_code": n.delivery_status_code,
                },
                "final_answer": {
                    "status": n.status,
                    "outcome": n.outcome,
                    "basis": n.basis,
                    "complete": n.complete,
                    "answered_at": iso(n.answered_at),
                    "signature_verified": n.signature_verified,
                },
                "licenses": n.licenses or [],
                "models": [m.model_dump() for m in view.models],
                "evidence_digest": n.evidence_digest,
                "ack_digest": n.ack_digest,
                "deadline": iso(n.deadline),
                "overdue": view.overdue,
                "audit": [
                    {k: s.get(k) for k in ("step", "chain_id", "seq", "hash", "at")} for s in n.steps or []
                ],
            }
        )
    return {
        "iss": ctx.settings.consent_public_url,
        "sub": revocation.subject_id,
        "iat": int(now.timestamp()),
        "jti": new_id("prf"),
        "format": PROOF_FORMAT,
        "issued_at": iso(now),
        "revocation": {
            "id": revocation.id,
            "scope": revocation.scope,
            # In the notices' vocabulary (withdrawal, purpose_withdrawal, ...), not the stored one.
            "trigger": notice_trigger(revocation.trigger, revocation.scope),
            "purposes": purposes_of(revocation, consents),
            "consent_id": revocation.consent_id,
            "licensee_id": revocation.licensee_id,
            "created_at": iso(revocation.created_at),
            "status": overall_status(revocation.status, resolution, rows),
            "audit": (
                {"step": "revoked", "chain_id": entry.subject_id, "seq": entry.seq, "hash": entry.hash}
                if entry
                else None
            ),
        },
        "consents": list(revocation.consent_ids),
        "consent_records": [consent_record(c) for c in consents],
        "samples": {
            "merkle_root": merkle.merkle_root(hashes),
            "construction": merkle.CONSTRUCTION,
            "count": len(set(hashes)),
        },
        "sample_count": revocation.sample_count,
        "holders_named": sorted(resolution.licensee_ids or []) if resolution else None,
        "notices": notices,
    }


def proof(session: Session, ctx: AppContext, revocation: Revocation) -> str:
    """The revocation's proof as it stands now, signed."""
    return ctx.signer.sign(claims(session, ctx, revocation, utcnow()), typ=PROOF_TYPE)
