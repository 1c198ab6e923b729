"""What revocation-worker's audit chains record, one chain per licensee: its endpoints (created,
disabled, enabled, secret rotated; the URL as a digest), its notices (created, delivered,
acknowledged — the ack as a digest —, overdue, failed) and re-drives (a delivery put back in
line), its ack keys and deadline policy. Ids, statuses and digests only. Recorded from the writes themselves
(rescind_common.audit_chain): the notice, ack and delivery code need not know."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table

from rescind_common import audit_chain
from revocation_worker.ackkeys.models import AckKey
from revocation_worker.audit.models import AuditEntry, AuditHead
from revocation_worker.endpoints.models import Endpoint
from revocation_worker.notices.models import Delivery, Notice
from revocation_worker.policy.models import LicenseePolicy


def _t(model: Any) -> Table:
    return cast(Table, model.__table__)


def _redriven(op: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    # A delivery back to pending from dead, failed or cancelled: a re-drive or a redeliver.
    return op == "updated" and new.get("status") == "pending" and old.get("status") not in (None, "pending")


SPECS = (
    audit_chain.AuditSpec(
        _t(Endpoint),
        "endpoint",
        chain="licensee_id",
        fields=("status", "secret_key_id", "previous_secret_key_id"),
        digested=("url",),
    ),
    audit_chain.AuditSpec(
        _t(Notice),
        "notice",
        chain="licensee_id",
        fields=("revocation_id", "status", "sample_count", "deadline", "reminded_at"),
        digested=("ack", "answer"),
    ),
    # The keys that verify a licensee's signed acks, and the deadline it was granted.
    audit_chain.AuditSpec(
        _t(AckKey), "ack_key", chain="licensee_id", fields=("kid", "alg"), digested=("jwk",)
    ),
    audit_chain.AuditSpec(
        _t(LicenseePolicy),
        "policy",
        chain="licensee_id",
        fields=("deadline_days", "deadline_months"),
        key="licensee_id",
    ),
    audit_chain.AuditSpec(
        _t(Delivery),
        "delivery",
        chain="licensee_id",
        fields=("notice_id", "endpoint_id", "status"),
        when=_redriven,
        # Re-drives go through the ORM; the delivery loop's bulk writes are attempts, not state
        # changes of the audit's concern (the notice's own status is recorded).
        bulk_updates=False,
    ),
)


def install() -> None:
    audit_chain.register(audit_chain.AuditRecorder(_t(AuditEntry), _t(AuditHead), SPECS))
