"""What the registry's audit chains record: each licensee's chain holds the licensee's creation,
its licenses (created, samples withdrawn, revoked) and its declared models. Ids, statuses,
counts and digests only: no names in clear, no contact data. Recorded from the ORM and Core
writes themselves (rescind_common.audit_chain), so no service function has to remember to."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table

from registry.audit.models import AuditEntry, AuditHead
from registry.licensees.models import Licensee
from registry.licenses.models import License
from registry.lineage.models import TrainedModel
from rescind_common import audit_chain


def _t(model: Any) -> Table:
    return cast(Table, model.__table__)


SPECS = (
    audit_chain.AuditSpec(_t(Licensee), "licensee", chain="id", fields=(), digested=("name",)),
    audit_chain.AuditSpec(
        _t(License),
        "license",
        chain="licensee_id",
        fields=("consent_id", "purpose", "status", "sample_count", "revoked_sample_count"),
        digested=("dataset_name", "dataset_version"),
        # the projection's withdrawal (licenses.repository.set_counts)
        core_params={"b_id": "id", "b_status": "status", "b_revoked_sample_count": "revoked_sample_count"},
    ),
    audit_chain.AuditSpec(
        _t(TrainedModel), "model", chain="licensee_id", fields=(), digested=("name", "version")
    ),
)


def install() -> None:
    audit_chain.register(audit_chain.AuditRecorder(_t(AuditEntry), _t(AuditHead), SPECS))
