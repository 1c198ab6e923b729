"""Consent receipt claims, after the Kantara Consent Receipt v1.1 and ISO/IEC TS 27560 fields."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from consent_api.config import ConsentSettings

INLINE_SAMPLE_IDS = 1000
SENSITIVE_KINDS = {"face_image", "voice_recording", "handwriting"}


# ISO/IEC TS 27560 `legal_basis`: the subject's consent, explicit for the biometric kinds.
LEGAL_BASIS = "consent"
LEGAL_BASIS_REFERENCE = "GDPR Art. 6(1)(a) and, for biometric data, Art. 9(2)(a)"


def controller(settings: ConsentSettings) -> dict[str, Any]:
    """The controller as Kantara CR v1.1 `piiControllers[]` names it (plus `url`, kept from before:
    the service sellers withdraw at)."""
    return {
        "piiController": settings.consent_controller_name,
        "onBehalf": False,
        "contact": settings.consent_controller_contact,
        "address": settings.consent_controller_address,
        "email": settings.consent_controller_email,
        "phone": settings.consent_controller_phone,
        "piiControllerUrl": settings.consent_controller_url,
        "url": settings.consent_public_url,
    }


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
    withdrawal_url = f"{settings.consent_public_url}/v1/consents/{consent_id}/revoke"
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
        "piiControllers": [controller(settings)],
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
            "url": withdrawal_url,
            "note": "Withdrawal is as easy as the grant (GDPR Art. 7(3)); every holder is notified.",
        },
        # ISO/IEC TS 27560 consent record fields (additive; the Kantara names above stay).
        "legalBasis": LEGAL_BASIS,
        "consentState": "given",
        "consentType": "explicit",
        "withdrawalMethod": "API call (HTTP POST) by the seller app on the subject's behalf",
        "withdrawalUrl": withdrawal_url,
        "iso27560": {
            "schema": "ISO/IEC TS 27560:2023",
            "legal_basis": LEGAL_BASIS,
            "legal_basis_reference": LEGAL_BASIS_REFERENCE,
            "state": "given",
            "state_at": iat,
            "withdrawal_method": "POST",
            "withdrawal_url": withdrawal_url,
        },
    }
    if len(sample_ids) <= INLINE_SAMPLE_IDS:
        claims["sample_ids"] = sample_ids
    return claims
