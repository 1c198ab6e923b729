"""Recording licenses: only what an active consent in the projection covers."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from registry.context import AppContext
from registry.licensees import repository as licensees_repo
from registry.licenses import repository
from registry.licenses.models import License
from registry.licenses.schemas import Dataset, LicenseIn, LicenseOut
from registry.projection import repository as projection
from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.problems import PROBLEM_BASE, Problem, field_error

NOT_ACTIVE = PROBLEM_BASE + "consent-not-active"
NOT_COVERED = PROBLEM_BASE + "consent-does-not-cover"
MAX_LISTED = 100  # sample errors listed in one problem; the rest are counted


def check_size(ctx: AppContext, body: LicenseIn) -> None:
    limit = ctx.settings.registry_max_license_samples
    if len(body.sample_ids) > limit:
        raise Problem(413, f"A license names at most {limit} samples.", limit=limit)


def _unknown_licensee(licensee_id: str) -> Problem:
    return Problem(
        422,
        f"Unknown licensee {licensee_id}.",
        type_=PROBLEM_BASE + "unknown-licensee",
        errors=[field_error("body.licensee_id", "unknown licensee", value=licensee_id)],
    )


def wait_for_consent(ctx: AppContext, body: LicenseIn) -> None:
    """Give the projection a moment to catch up with a grant made just before this request.

    Runs before the request's own transaction starts, one short session per poll, so that the
    consumer can commit meanwhile (SQLite has one writer; the request would otherwise hold it)."""
    deadline = time.monotonic() + ctx.settings.registry_projection_wait_seconds
    with ctx.session_factory() as session:
        if licensees_repo.get(session, body.licensee_id) is None:
            raise _unknown_licensee(body.licensee_id)
    while True:
        with ctx.session_factory() as session:
            if projection.consent_exists(session, body.consent_id):
                return
        if time.monotonic() >= deadline:
            return  # record() refuses it, naming the consent
        time.sleep(ctx.settings.registry_projection_poll_seconds)


def _dataset_key(body: LicenseIn) -> tuple[str, str]:
    return (body.dataset.name, body.dataset.version) if body.dataset else ("", "")


def _sample_errors(kind: str, items: list[tuple[int, str]], detail: str) -> list[dict[str, Any]]:
    return [field_error(f"body.sample_ids[{i}]", detail, value=s, reason=kind) for i, s in items[:MAX_LISTED]]


def record(session: Session, body: LicenseIn) -> tuple[License, bool]:
    """Create the license (True) or return the identical one already recorded (False)."""
    if licensees_repo.get(session, body.licensee_id) is None:
        raise _unknown_licensee(body.licensee_id)
    # The lock serialises this check with the projection's revocations of this consent.
    consent = projection.get_consent(session, body.consent_id, lock=True)
    if consent is None:
        raise Problem(
            409,
            f"Consent {body.consent_id} is unknown to the registry: no active consent covers this license.",
            type_=NOT_ACTIVE,
            reason="unknown_consent",
            errors=[field_error("body.consent_id", "unknown consent", value=body.consent_id)],
        )
    now = utcnow()
    status = consent.status
    if status == "active" and consent.expires_at is not None and consent.expires_at <= now:
        status = "expired"  # its expiry event is on the way
    if status != "active":
        raise Problem(
            409,
            f"Consent {consent.consent_id} is {status}: no active consent covers this license.",
            type_=NOT_ACTIVE,
            reason=f"consent_{status}",
            consent_status=status,
            errors=[field_error("body.consent_id", f"consent {status}", value=body.consent_id)],
        )

    errors: list[dict[str, Any]] = []
    reasons: list[str] = []
    if consent.licensee_id is not None and consent.licensee_id != body.licensee_id:
        reasons.append("licensee_not_covered")
        errors.append(
            field_error(
                "body.licensee_id", "the consent is limited to another licensee", value=body.licensee_id
            )
        )
    if body.licensee_id in (consent.excluded_licensees or []):
        reasons.append("licensee_withdrawn")
        errors.append(
            field_error("body.licensee_id", "the subject withdrew this licensee", value=body.licensee_id)
        )
    if body.purpose not in consent.purposes:
        reasons.append("purpose_not_covered")
        errors.append(field_error("body.purpose", "not a purpose of this consent", value=body.purpose))
    elif body.purpose in (consent.revoked_purposes or []):
        reasons.append("purpose_revoked")
        errors.append(field_error("body.purpose", "withdrawn from this consent", value=body.purpose))

    first_index: dict[str, int] = {}
    for i, sid in enumerate(body.sample_ids):
        first_index.setdefault(sid, i)
    sample_ids = list(first_index)
    states = projection.consent_sample_states(session, consent.consent_id, sample_ids)
    outside = [s for s in sample_ids if s not in states]
    withdrawn = [(first_index[s], s) for s in sample_ids if states.get(s)]
    if outside:
        known = projection.known_samples(session, outside)
        unknown = [(first_index[s], s) for s in outside if s not in known]
        uncovered = [(first_index[s], s) for s in outside if s in known]
        if unknown:
            raise Problem(
                422,
                f"{len(unknown)} sample id(s) are unknown to the registry.",
                type_=PROBLEM_BASE + "unknown-samples",
                errors=_sample_errors("unknown_sample", unknown, "unknown sample"),
                unknown_count=len(unknown),
            )
        reasons.append("samples_not_covered")
        errors += _sample_errors("sample_not_covered", uncovered, "not covered by this consent")
    if withdrawn:
        reasons.append("samples_revoked")
        errors += _sample_errors("sample_revoked", withdrawn, "withdrawn from this consent")
    if errors:
        raise Problem(
            409,
            f"Consent {consent.consent_id} does not cover this license: {', '.join(reasons)}.",
            type_=NOT_COVERED,
            reason=reasons[0],
            reasons=reasons,
            errors=errors,
            uncovered_sample_count=len(outside) + len(withdrawn),
        )

    name, version = _dataset_key(body)
    existing = repository.find(
        session,
        licensee_id=body.licensee_id,
        consent_id=consent.consent_id,
        purpose=body.purpose,
        dataset_name=name,
        dataset_version=version,
        lock=True,
    )
    if existing is not None:
        have = repository.sample_ids_in(session, existing.id, sample_ids)
        new = [s for s in sample_ids if s not in have]
        if new and existing.status == "revoked":
            raise Problem(
                409,
                f"License {existing.id} was revoked; record new samples under a new dataset version.",
                type_=PROBLEM_BASE + "license-revoked",
                license_id=existing.id,
            )
        if new:
            # The same licensee received more samples under the same consent and purpose.
            repository.add_samples_ignoring_duplicates(session, existing.id, new)
            existing.sample_count += len(new)
        return existing, False

    license = License(
        id=new_id("lcs"),
        licensee_id=body.licensee_id,
        consent_id=consent.consent_id,
        subject_id=consent.subject_id,
        purpose=body.purpose,
        dataset_name=name,
        dataset_version=version,
        status="active",
        sample_count=len(sample_ids),
        revoked_sample_count=0,
        created_at=now,
    )
    session.add(license)
    session.flush()
    repository.add_samples(session, license.id, sample_ids)
    return license, True


def visible(session: Session, license_id: str, licensee: str | None) -> License:
    """The license if this caller may see it (licensee: its own; None: operator), else a 404."""
    license = repository.get(session, license_id)
    if license is None or (licensee is not None and license.licensee_id != licensee):
        raise Problem(404, f"No license {license_id}.")
    return license


def dataset_of(license: License) -> Dataset | None:
    return (
        Dataset(name=license.dataset_name, version=license.dataset_version) if license.dataset_name else None
    )


def to_out(license: License) -> LicenseOut:
    return LicenseOut(
        id=license.id,
        licensee_id=license.licensee_id,
        consent_id=license.consent_id,
        purpose=license.purpose,
        dataset=dataset_of(license),
        status=license.status,
        sample_count=license.sample_count,
        revoked_sample_count=license.revoked_sample_count,
        created_at=license.created_at,
        revoked_at=license.revoked_at,
    )
