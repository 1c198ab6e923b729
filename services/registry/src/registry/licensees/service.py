from __future__ import annotations

from sqlalchemy.orm import Session

from registry.licensees import repository
from registry.licensees.models import Licensee
from registry.licensees.schemas import LicenseeIn, LicenseeOut
from rescind_common.auth import Principal, Role
from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.problems import Problem


def create(session: Session, body: LicenseeIn) -> Licensee:
    licensee = Licensee(
        id=new_id("lic"), name=body.name, contact_email=body.contact_email, created_at=utcnow()
    )
    session.add(licensee)
    session.flush()
    return licensee


def visible(session: Session, principal: Principal, licensee_id: str) -> Licensee:
    """Operators see every licensee, a licensee only itself; anything else is a 404."""
    licensee = repository.get(session, licensee_id)
    if licensee is None or (principal.role != Role.OPERATOR and principal.sub != licensee_id):
        raise Problem(404, f"No licensee {licensee_id}.")
    return licensee


def to_out(licensee: Licensee) -> LicenseeOut:
    return LicenseeOut(
        id=licensee.id,
        name=licensee.name,
        contact_email=licensee.contact_email,
        created_at=licensee.created_at,
    )
