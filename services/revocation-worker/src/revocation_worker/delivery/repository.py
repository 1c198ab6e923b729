"""Deliveries: adding and cancelling them, leasing due ones, batch loads for sending and recording,
the one statement of a recording pass, the next due time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from rescind_common import bulk
from rescind_common.bulk import chunks
from rescind_common.db import UTCDateTime, utcnow
from rescind_common.outbox import outbox_write
from revocation_worker.db import Outbox
from revocation_worker.delivery import rules
from revocation_worker.endpoints.models import Endpoint
from revocation_worker.notices.models import Delivery, DeliveryAttempt, Notice
from revocation_worker.notices.rows import NoticeRow

_DELIVERIES = cast(Table, Delivery.__table__)
_NOTICES = cast(Table, Notice.__table__)
_ENDPOINTS = cast(Table, Endpoint.__table__)
_ATTEMPTS = cast(Table, DeliveryAttempt.__table__)


class EndpointSecrets(NamedTuple):
    """What signing reads of an endpoint (`endpoints.signing_secrets`)."""

    id: str
    secret_sealed: bytes
    secret_key_id: str
    previous_secret_sealed: bytes | None
    previous_secret_key_id: str | None
    previous_secret_expires_at: dt.datetime | None


class LeasedRow(NamedTuple):
    """What sending a leased delivery needs of its endpoint and notice (None: gone)."""

    delivery_id: int
    url: str | None
    endpoint: EndpointSecrets | None
    notice: NoticeRow | None


_NOTICE_COLUMNS = [_NOTICES.c[name] for name in NoticeRow._fields]
_NEXT_DUE = (
    select(func.min(_DELIVERIES.c.next_attempt_at))
    .where(_DELIVERIES.c.status == "pending", _DELIVERIES.c.next_attempt_at > bindparam("now"))
    .scalar_subquery()
)
_LEASED = (
    select(
        _DELIVERIES.c.id,
        _NEXT_DUE,
        _ENDPOINTS.c.url,
        *(_ENDPOINTS.c[name] for name in EndpointSecrets._fields),
        *_NOTICE_COLUMNS,
    )
    .select_from(
        _DELIVERIES.outerjoin(_ENDPOINTS, _ENDPOINTS.c.id == _DELIVERIES.c.endpoint_id).outerjoin(
            _NOTICES, _NOTICES.c.id == _DELIVERIES.c.notice_id
        )
    )
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
)
_SECRETS = slice(3, 3 + len(EndpointSecrets._fields))
_NOTICE = slice(_SECRETS.stop, None)


def leased_rows(
    session: Session, ids: Sequence[int], now: dt.datetime
) -> tuple[dict[int, LeasedRow], dt.datetime | None]:
    """Leased deliveries' endpoints and notices as plain rows, in one query (per 900) instead of
    one per table; with them, what `next_due_at(now)` says (the same probe, a scalar subquery)."""
    out: dict[int, LeasedRow] = {}
    next_due: dt.datetime | None = None
    wanted = sorted(set(ids))
    conn = session.connection()
    for part in chunks(wanted):
        for row in conn.execute(_LEASED, {"ids": list(part), "now": now}):
            next_due = row[1]
            endpoint = EndpointSecrets(*row[_SECRETS])
            notice = NoticeRow(*row[_NOTICE])
            out[int(row[0])] = LeasedRow(
                int(row[0]),
                row[2],
                endpoint if endpoint.id is not None else None,
                notice if notice.id is not None else None,
            )
    return out, next_due


def cancel(session: Session, ids: Sequence[int]) -> None:
    if ids:
        session.execute(
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id.in_(list(ids)))
            .values(status="cancelled", lease_until=None, lease_owner=None)
        )


def release(session: Session, ids: Sequence[int]) -> None:
    """Give leases back (nothing was sent): the deliveries are due again at once."""
    if ids:
        session.execute(
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id.in_(list(ids)), _DELIVERIES.c.status == "pending")
            .values(lease_until=None, lease_owner=None)
        )


def add_attempts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One multi-row INSERT for every attempt of a recording pass."""
    bulk.execute(session, [bulk.insert_rows(DeliveryAttempt, rows)])


def next_due_at(session: Session, after: dt.datetime) -> dt.datetime | None:
    """When the earliest pending delivery not yet due becomes due (one probe of the
    (status, next_attempt_at) index)."""
    return session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status == "pending", Delivery.next_attempt_at > after
        )
    )


def _locking(table: Table, *columns: str) -> Any:
    """SELECT these columns of the rows whose id is in :ids, row-locked in id order (every
    recorder locks alike); built once, bound per call."""
    c = table.c
    return (
        select(*(c[name] for name in columns))
        .where(c.id.in_(bindparam("ids", expanding=True)))
        .order_by(c.id)
        .with_for_update()
    )


_LOCK_DELIVERIES = _locking(
    _DELIVERIES,
    "id",
    "notice_id",
    "endpoint_id",
    "status",
    "attempts",
    "first_attempt_at",
    "next_attempt_at",
    "succeeded_at",
    "kind",
)
_LOCK_NOTICES = _locking(
    _NOTICES, "id", "licensee_id", "revocation_id", "subject_id", "status", "delivered_at", "revoked_at"
)
_LOCK_ENDPOINTS = _locking(_ENDPOINTS, "id", "status", "failing_since", "last_success_at")


def lock_delivery_states(session: Session, ids: Iterable[int]) -> dict[int, rules.Delivery]:
    """The deliveries' recording state, row-locked in id order (every recorder locks alike)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_LOCK_DELIVERIES, {"ids": wanted})
    return {
        int(r[0]): rules.Delivery(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], kind=str(r[8]))
        for r in rows
    }


def lock_notice_states(session: Session, ids: Iterable[str]) -> dict[str, rules.Notice]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_LOCK_NOTICES, {"ids": wanted})
    return {str(r[0]): rules.Notice(*r) for r in rows}


def delivery_statuses_of(session: Session, notice_id: str) -> dict[int, str]:
    """The notice's own deliveries' statuses (not its reminders' or overdue notices')."""
    c = _DELIVERIES.c
    rows = session.execute(select(c.id, c.status).where(c.notice_id == notice_id, c.kind == "notice"))
    return {int(i): str(st) for i, st in rows}


def _deliveries_write(states: Sequence[rules.Delivery]) -> bulk.Write:
    """The recorded deliveries, their leases released."""
    return bulk.update_rows(
        Delivery,
        [
            {
                "id": d.id,
                "status": d.status,
                "attempts": d.attempts,
                "first_attempt_at": d.first_attempt_at,
                "last_attempt_at": d.last_attempt_at,
                "next_attempt_at": d.next_attempt_at,
                "succeeded_at": d.succeeded_at,
                "last_status_code": d.last_status_code,
                "last_error": d.last_error,
                "lease_until": None,
                "lease_owner": None,
            }
            for d in states
        ],
    )


def _notices_write(states: Sequence[rules.Notice]) -> bulk.Write:
    return bulk.update_rows(
        Notice, [{"id": n.id, "status": n.status, "delivered_at": n.delivered_at} for n in states]
    )


def _endpoints_write(states: Sequence[rules.Endpoint]) -> bulk.Write:
    return bulk.update_rows(
        Endpoint,
        [
            {"id": e.id, "failing_since": e.failing_since, "last_success_at": e.last_success_at}
            for e in states
        ],
    )


def lock_endpoint_states(session: Session, ids: Iterable[str]) -> dict[str, rules.Endpoint]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_LOCK_ENDPOINTS, {"ids": wanted})
    return {str(r[0]): rules.Endpoint(*r) for r in rows}


def write_recorded(
    session: Session,
    deliveries: Sequence[rules.Delivery],
    endpoints: Sequence[rules.Endpoint],
    notices: Sequence[rules.Notice],
    attempts: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
) -> None:
    """Everything a recording pass writes: the deliveries (leases released), endpoints and notices
    updated, the attempts and the events (outbox) inserted. One statement on PostgreSQL (none of
    these writes reads another's rows); on SQLite one executemany per table, in that order."""
    session.flush()  # pending ORM changes (an endpoint being disabled) first, as publish_many does
    bulk.execute(
        session,
        [
            _deliveries_write(deliveries),
            _endpoints_write(endpoints),
            _notices_write(notices),
            bulk.insert_rows(DeliveryAttempt, attempts),
            outbox_write(Outbox, events),
        ],
    )


def deliveries_of(session: Session, notice_id: str) -> list[Delivery]:
    return list(
        session.scalars(select(Delivery).where(Delivery.notice_id == notice_id).order_by(Delivery.id))
    )


def add_deliveries(
    session: Session, notice: Notice, endpoints: Sequence[Endpoint], now: dt.datetime, kind: str = "notice"
) -> int:
    """Deliveries of this kind of webhook about the notice to the endpoints that have none yet."""
    existing = {d.endpoint_id for d in deliveries_of(session, notice.id) if d.kind == kind}
    rows = [
        {
            "notice_id": notice.id,
            "endpoint_id": e.id,
            "licensee_id": notice.licensee_id,
            "kind": kind,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for e in endpoints
        if e.id not in existing
    ]
    if rows:
        session.flush()  # a new endpoint (or notice) before the rows that reference it
        bulk.execute(session, [bulk.insert_rows(Delivery, rows)])
    return len(rows)


def add_deliveries_for_new_endpoint(session: Session, endpoint: Endpoint) -> int:
    """A licensee's new endpoint receives every notice not yet delivered anywhere nor acknowledged."""
    now = utcnow()
    notices = session.scalars(
        select(Notice).where(
            Notice.licensee_id == endpoint.licensee_id,
            Notice.delivered_at.is_(None),
            Notice.status.in_(["pending", "failed", "overdue"]),
        )
    )
    return sum(add_deliveries(session, n, [endpoint], now) for n in notices)


def cancel_deliveries_to(session: Session, endpoint_id: str) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.endpoint_id == endpoint_id, Delivery.status == "pending")
        .values(status="cancelled")
    )


def delivery_statuses(session: Session, notice_id: str) -> list[str]:
    """The notice's own deliveries' statuses (not its reminders' or overdue notices')."""
    return [
        str(x)
        for x in session.scalars(
            select(Delivery.status).where(Delivery.notice_id == notice_id, Delivery.kind == "notice")
        )
    ]


def lock_deliveries_of_notice(session: Session, notice_id: str) -> None:
    """Row-lock a notice's deliveries in id order. A request that changes a notice and then its
    deliveries takes these first, so it locks in the recorder's order (deliveries, then notices)
    and cannot deadlock with it."""
    session.execute(
        select(Delivery.id).where(Delivery.notice_id == notice_id).order_by(Delivery.id).with_for_update()
    ).all()


def cancel_pending_for_notice(session: Session, notice_id: str) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.notice_id == notice_id, Delivery.status == "pending")
        .values(status="cancelled")
    )


# claim_due's statements, built once (Core, bound per call): building and compiling-cache-keying
# ORM statements on every claim cost more than running them.
# Each endpoint's due deliveries ranked (oldest due first) ...
_BY_ENDPOINT = (
    select(
        _DELIVERIES.c.id,
        _DELIVERIES.c.endpoint_id,
        _DELIVERIES.c.licensee_id,
        _ENDPOINTS.c.url,
        _DELIVERIES.c.next_attempt_at,
        func.row_number()
        .over(
            partition_by=_DELIVERIES.c.endpoint_id,
            order_by=(_DELIVERIES.c.next_attempt_at, _DELIVERIES.c.id),
        )
        .label("rn_endpoint"),
    )
    .select_from(_DELIVERIES.join(_ENDPOINTS, _ENDPOINTS.c.id == _DELIVERIES.c.endpoint_id))
    .where(
        _DELIVERIES.c.status == "pending",
        _DELIVERIES.c.next_attempt_at <= bindparam("now", type_=UTCDateTime()),
        or_(
            _DELIVERIES.c.lease_until.is_(None),
            _DELIVERIES.c.lease_until < bindparam("now", type_=UTCDateTime()),
        ),
        _ENDPOINTS.c.status == "active",
    )
    .subquery()
)
# ... then each licensee's, round-robin over its endpoints (the first of each, then the second) ...
_BY_LICENSEE = (
    select(
        _BY_ENDPOINT.c.id,
        _BY_ENDPOINT.c.endpoint_id,
        _BY_ENDPOINT.c.licensee_id,
        _BY_ENDPOINT.c.url,
        func.row_number()
        .over(
            partition_by=_BY_ENDPOINT.c.licensee_id,
            order_by=(_BY_ENDPOINT.c.rn_endpoint, _BY_ENDPOINT.c.next_attempt_at, _BY_ENDPOINT.c.id),
        )
        .label("rn_licensee"),
    )
    .where(_BY_ENDPOINT.c.rn_endpoint <= bindparam("endpoint_cap"))
    .subquery()
)
# ... and round-robin over licensees: every licensee's first due delivery comes before any
# licensee's second, so a licensee with a backlog of thousands never pushes another's first one
# out of a claim.
_DUE = (
    select(_BY_LICENSEE.c.id, _BY_LICENSEE.c.endpoint_id, _BY_LICENSEE.c.licensee_id, _BY_LICENSEE.c.url)
    .where(_BY_LICENSEE.c.rn_licensee <= bindparam("licensee_cap"))
    .order_by(_BY_LICENSEE.c.rn_licensee, _BY_LICENSEE.c.id)
    .limit(bindparam("limit"))
)


_LEASE = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id.in_(bindparam("ids", expanding=True)),
        _DELIVERIES.c.status == "pending",
        or_(
            _DELIVERIES.c.lease_until.is_(None),
            _DELIVERIES.c.lease_until < bindparam("now", type_=UTCDateTime()),
        ),
    )
    .values(lease_until=bindparam("until", type_=UTCDateTime()), lease_owner=bindparam("owner"))
    .returning(
        _DELIVERIES.c.id,
        _DELIVERIES.c.endpoint_id,
        _DELIVERIES.c.notice_id,
        _DELIVERIES.c.kind,
        _DELIVERIES.c.created_at,
    )
)


@dataclass(frozen=True)
class Claimed:
    """A leased delivery: what the delivery loop needs to build and send it, and to count it."""

    id: int
    endpoint_id: str
    notice_id: str
    licensee_id: str
    host: str
    # notice | reminder | overdue, and when it was queued (a follow-up's webhook timestamp)
    kind: str = "notice"
    created_at: dt.datetime | None = None


def claim_due(
    session: Session,
    *,
    now: dt.datetime,
    owner: str,
    lease: dt.timedelta,
    inflight: rules.InFlight,
    caps: rules.Caps,
) -> list[Claimed]:
    """Lease due deliveries, fairly (`rules.choose` over the round-robin order of `_DUE`): never
    more in flight than the caps allow in all, per endpoint, per licensee and per destination host,
    so that no endpoint's, licensee's or host's backlog crowds out another licensee. Safe with
    several workers: a lease is taken with a conditional UPDATE, and only the rows that UPDATE
    changed (RETURNING) are ours."""
    room = caps.total - inflight.total
    if room <= 0:
        return []
    conn = session.connection()
    rows = conn.execute(
        _DUE,
        {"now": now, "endpoint_cap": caps.endpoint, "licensee_cap": caps.licensee, "limit": room * 2},
    ).all()
    due = [rules.Due(int(i), str(e), str(lic), rules.host_key(str(url))) for i, e, lic, url in rows]
    chosen = {d.id: d for d in rules.choose(due, inflight, caps)}
    if not chosen:
        return []
    leased = conn.execute(
        _LEASE, {"ids": sorted(chosen), "now": now, "until": now + lease, "owner": owner}
    ).all()
    return sorted(
        (
            Claimed(int(i), str(e), str(n), chosen[int(i)].licensee_id, chosen[int(i)].host, str(k), c)
            for i, e, n, k, c in leased
        ),
        key=lambda c: c.id,
    )


def attempts_of(session: Session, delivery_id: int) -> list[DeliveryAttempt]:
    return list(
        session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery_id)
            .order_by(DeliveryAttempt.id)
        )
    )
