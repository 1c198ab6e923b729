"""Per-licensee deadlines: the operator's overrides and the rule each notice is made with."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from rescind_common.db import utcnow
from rescind_common.problems import Problem, field_error
from revocation_worker.config import WorkerSettings
from revocation_worker.policy import repository
from revocation_worker.policy.models import LicenseePolicy
from revocation_worker.policy.rules import Deadline, rule_in_force
from revocation_worker.policy.schemas import PolicyIn, PolicyOut


def default_rule(settings: WorkerSettings) -> Deadline:
    return rule_in_force(settings.worker_notice_deadline_months, settings.worker_notice_deadline_days)


def rules_for(session: Session, settings: WorkerSettings, licensee_ids: Iterable[str]) -> dict[str, Deadline]:
    """The deadline rule in force for each of these licensees (one query)."""
    wanted = set(licensee_ids)
    overrides = repository.of_many(session, wanted)
    out: dict[str, Deadline] = {}
    for lic in wanted:
        p = overrides.get(lic)
        out[lic] = rule_in_force(
            settings.worker_notice_deadline_months,
            settings.worker_notice_deadline_days,
            p.deadline_months if p else None,
            p.deadline_days if p else None,
        )
    return out


def to_out(settings: WorkerSettings, licensee_id: str, p: LicenseePolicy | None) -> PolicyOut:
    rule = rule_in_force(
        settings.worker_notice_deadline_months,
        settings.worker_notice_deadline_days,
        p.deadline_months if p else None,
        p.deadline_days if p else None,
    )
    return PolicyOut(
        licensee_id=licensee_id,
        deadline_days=p.deadline_days if p else None,
        deadline_months=p.deadline_months if p else None,
        default=p is None,
        effective_deadline_days=rule.days,
        effective_deadline_months=rule.months if rule.days is None else None,
        updated_at=p.updated_at if p else None,
    )


def put(session: Session, settings: WorkerSettings, licensee_id: str, body: PolicyIn) -> PolicyOut:
    """Set (or, with neither field, clear) a licensee's override. Notices made from now on use it;
    existing notices keep their deadline."""
    if body.deadline_days is not None and body.deadline_months is not None:
        raise Problem(
            422,
            "Give deadline_days or deadline_months, not both.",
            errors=[field_error("body.deadline_days", "only one of deadline_days and deadline_months")],
        )
    if body.deadline_days is None and body.deadline_months is None:
        repository.remove(session, licensee_id)
        return to_out(settings, licensee_id, None)
    p = repository.get(session, licensee_id)
    if p is None:
        p = LicenseePolicy(licensee_id=licensee_id)
        session.add(p)
    p.deadline_days = float(body.deadline_days) if body.deadline_days is not None else None
    p.deadline_months = body.deadline_months
    p.updated_at = utcnow()
    session.flush()
    return to_out(settings, licensee_id, p)
