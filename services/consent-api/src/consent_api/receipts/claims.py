"""Consent receipt claims, after the Kantara Consent Receipt v1.1 and ISO/IEC TS 27560 fields."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from consent_api.config import ConsentSettings

INLINE_SAMPLE_IDS = 1000
SENSITIVE_KINDS = {"face_image", "voice_recording", "handwriting"}


def samples_digest(sha256s: list[str]) -> str:
    """Commits the receipt to the exact set of sample fingerprints, however many there are."""
    return hashlib.sha256("\n".join(sorted(sha256s)).encode()).hexdigest()


def build(
    settings: ConsentSettings,
    *,
    receipt_id: str,
    consent_id: str,
    subject_id: str,
    issued_at: dt.datetime,
    purposes: list[str],
    licensee_id: str | None,
    expires_at: dt.datetime | None,
    compensation: dict[str, Any] | None,
    sample_ids: list[str],
    sample_sha256s: list[str],
    kinds: list[str],
) -> dict[str, Any]:
    iat = int(issued_at.timestamp())
    termination = (
        expires_at.isoformat().replace("+00:00", "Z") if expires_at else "on withdrawal by the subject"
    )
    claims: dict[str, Any] = {
        "iss": settings.consent_public_url,
        "sub": subject_id,
        "iat": iat,
        "jti": receipt_id,
        # Kantara CR v1.1 / ISO/IEC TS 27560 record fields
        "version": "KI-CR-v1.1.0",
        "consentReceiptID": receipt_id,
        "consentTimestamp": iat,
        "collectionMethod": "API call by a seller app on the subject's behalf (Rescind consent-api)",
        "jurisdiction": "EU GDPR; Illinois BIPA; California CCPA",
        "language": "en",
        "piiPrincipalId": subject_id,
        "piiControllers": [
            {
                "piiController": settings.consent_controller_name,
                "contact": settings.consent_controller_contact,
                "url": settings.consent_public_url,
            }
        ],
        "policyUrl": settings.consent_policy_url,
        "services": [
            {
                "service": "Licensing of identity data for AI training",
                "purposes": [
                    {
                        "purpose": p,
                        "purposeCategory": [p],
                        "consentType": "EXPLICIT",
                        "piiCategory": sorted(set(kinds)),
                        "primaryPurpose": i == 0,
                        "termination": termination,
                        "thirdPartyDisclosure": True,
                        "thirdPartyName": licensee_id or "any licensee of the marketplace",
                    }
                    for i, p in enumerate(purposes)
                ],
            }
        ],
        "sensitive": bool(SENSITIVE_KINDS & set(kinds)),
        "spiCat": sorted(SENSITIVE_KINDS & set(kinds)),
        # Rescind specifics
        "consent_id": consent_id,
        "purposes": purposes,
        "licensee_id": licensee_id,
        "expires_at": expires_at.isoformat().replace("+00:00", "Z") if expires_at else None,
        "compensation": compensation,
        "sample_count": len(sample_ids),
        "samples_sha256_digest": samples_digest(sample_sha256s),
        "withdrawal": {
            "method": "POST",
            "url": f"{settings.consent_public_url}/v1/consents/{consent_id}/revoke",
            "note": "Withdrawal is as easy as the grant (GDPR Art. 7(3)); every holder is notified.",
        },
    }
    if len(sample_ids) <= INLINE_SAMPLE_IDS:
        claims["sample_ids"] = sample_ids
    return claims
