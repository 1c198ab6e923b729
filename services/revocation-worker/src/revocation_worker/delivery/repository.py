"""The delivery loop's own queries: batch loads for claiming and recording, the next due time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

from revocation_worker.endpoints.models import Endpoint
from revocation_worker.events import publish_many
from revocation_worker.notices.models import Delivery, DeliveryAttempt, Notice
from revocation_worker.notices.repository import CHUNK, NoticeRow

_DELIVERIES = cast(Table, Delivery.__table__)
_NOTICES = cast(Table, Notice.__table__)
_ENDPOINTS = cast(Table, Endpoint.__table__)
_ATTEMPTS = cast(Table, DeliveryAttempt.__table__)
_INSERT_ATTEMPTS = insert(_ATTEMPTS)


@dataclass
class EndpointState:
    """What recording an outcome reads and writes of an endpoint."""

    id: str
    status: str
    failing_since: dt.datetime | None
    last_success_at: dt.datetime | None
    changed: bool = False


@dataclass
class DeliveryState:
    """What recording an outcome reads and writes of a delivery (plain row, no ORM object)."""

    id: int
    notice_id: str
    endpoint_id: str
    status: str
    attempts: int
    first_attempt_at: dt.datetime | None
    next_attempt_at: dt.datetime
    succeeded_at: dt.datetime | None
    last_attempt_at: dt.datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None


@dataclass
class NoticeState:
    """What recording an outcome reads and writes of a notice."""

    id: str
    licensee_id: str
    revocation_id: str
    subject_id: str
    status: str
    delivered_at: dt.datetime | None
    revoked_at: dt.datetime
    changed: bool = False


class EndpointSecrets(NamedTuple):
    """What signing reads of an endpoint (`endpoints.signing_secrets`)."""

    id: str
    secret_sealed: bytes
    previous_secret_sealed: bytes | None
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
    for i in range(0, len(wanted), CHUNK):
        for row in conn.execute(_LEASED, {"ids": wanted[i : i + CHUNK], "now": now}):
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
    if rows:
        session.connection().execute(_INSERT_ATTEMPTS, list(rows))


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
)
_LOCK_NOTICES = _locking(
    _NOTICES, "id", "licensee_id", "revocation_id", "subject_id", "status", "delivered_at", "revoked_at"
)
_LOCK_ENDPOINTS = _locking(_ENDPOINTS, "id", "status", "failing_since", "last_success_at")


def lock_delivery_states(session: Session, ids: Iterable[int]) -> dict[int, DeliveryState]:
    """The deliveries' recording state, row-locked in id order (every recorder locks alike)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_LOCK_DELIVERIES, {"ids": wanted})
    return {int(r[0]): DeliveryState(*r) for r in rows}


def lock_notice_states(session: Session, ids: Iterable[str]) -> dict[str, NoticeState]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_LOCK_NOTICES, {"ids": wanted})
    return {str(r[0]): NoticeState(*r) for r in rows}


def delivery_statuses_of(session: Session, notice_id: str) -> dict[int, str]:
    c = _DELIVERIES.c
    rows = session.execute(select(c.id, c.status).where(c.notice_id == notice_id))
    return {int(i): str(st) for i, st in rows}


_WRITE_DELIVERY = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        first_attempt_at=bindparam("b_first"),
        last_attempt_at=bindparam("b_last"),
        next_attempt_at=bindparam("b_next"),
        succeeded_at=bindparam("b_succeeded"),
        last_status_code=bindparam("b_code"),
        last_error=bindparam("b_error"),
        lease_until=None,
        lease_owner=None,
    )
)

_WRITE_NOTICE = (
    update(_NOTICES)
    .where(_NOTICES.c.id == bindparam("b_id"))
    .values(status=bindparam("b_status"), delivered_at=bindparam("b_delivered"))
)


def write_deliveries(session: Session, states: Sequence[DeliveryState]) -> None:
    """One executemany UPDATE for every recorded delivery (its lease released)."""
    if states:
        session.connection().execute(
            _WRITE_DELIVERY,
            [
                {
                    "b_id": d.id,
                    "b_status": d.status,
                    "b_attempts": d.attempts,
                    "b_first": d.first_attempt_at,
                    "b_last": d.last_attempt_at,
                    "b_next": d.next_attempt_at,
                    "b_succeeded": d.succeeded_at,
                    "b_code": d.last_status_code,
                    "b_error": d.last_error,
                }
                for d in states
            ],
        )


def write_notices(session: Session, states: Sequence[NoticeState]) -> None:
    if states:
        session.connection().execute(
            _WRITE_NOTICE,
            [{"b_id": n.id, "b_status": n.status, "b_delivered": n.delivered_at} for n in states],
        )


def lock_endpoint_states(session: Session, ids: Iterable[str]) -> dict[str, EndpointState]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_LOCK_ENDPOINTS, {"ids": wanted})
    return {str(r[0]): EndpointState(*r) for r in rows}


_WRITE_ENDPOINT = (
    update(_ENDPOINTS)
    .where(_ENDPOINTS.c.id == bindparam("b_id"))
    .values(failing_since=bindparam("b_failing"), last_success_at=bindparam("b_success"))
)


def write_endpoints(session: Session, states: Sequence[EndpointState]) -> None:
    if states:
        session.connection().execute(
            _WRITE_ENDPOINT,
            [{"b_id": e.id, "b_failing": e.failing_since, "b_success": e.last_success_at} for e in states],
        )


# A recording pass's writes in one round trip on PostgreSQL: each table's rows go as arrays
# (unnest), so one statement serves any number of rows; the updates and the attempts' INSERT are
# data-modifying CTEs of the outbox INSERT (or of SELECT 1 when there is no event: the outbox's
# NOTIFY trigger fires per statement, even for no rows). None of them reads another's rows.
_FOLDED_WRITES = """
WITH d AS (
    UPDATE deliveries AS t SET status = v.status, attempts = v.attempts,
        first_attempt_at = v.first_at, last_attempt_at = v.last_at, next_attempt_at = v.next_at,
        succeeded_at = v.succeeded_at, last_status_code = v.code, last_error = v.error,
        lease_until = NULL, lease_owner = NULL
    FROM unnest(CAST(:d_id AS bigint[]), CAST(:d_status AS text[]), CAST(:d_attempts AS integer[]),
        CAST(:d_first AS timestamptz[]), CAST(:d_last AS timestamptz[]), CAST(:d_next AS timestamptz[]),
        CAST(:d_succeeded AS timestamptz[]), CAST(:d_code AS integer[]), CAST(:d_error AS text[]))
        AS v(id, status, attempts, first_at, last_at, next_at, succeeded_at, code, error)
    WHERE t.id = v.id
), e AS (
    UPDATE endpoints AS t SET failing_since = v.failing_since, last_success_at = v.last_success_at
    FROM unnest(CAST(:e_id AS text[]), CAST(:e_failing AS timestamptz[]), CAST(:e_success AS timestamptz[]))
        AS v(id, failing_since, last_success_at)
    WHERE t.id = v.id
), n AS (
    UPDATE notices AS t SET status = v.status, delivered_at = v.delivered_at
    FROM unnest(CAST(:n_id AS text[]), CAST(:n_status AS text[]), CAST(:n_delivered AS timestamptz[]))
        AS v(id, status, delivered_at)
    WHERE t.id = v.id
), a AS (
    INSERT INTO delivery_attempts (delivery_id, "at", status_code, error, duration_ms)
    SELECT delivery_id, at_, status_code, error, duration_ms
    FROM unnest(CAST(:a_delivery AS bigint[]), CAST(:a_at AS timestamptz[]), CAST(:a_code AS integer[]),
        CAST(:a_error AS text[]), CAST(:a_ms AS integer[])) WITH ORDINALITY
        AS v(delivery_id, at_, status_code, error, duration_ms, i)
    ORDER BY i
)
"""
_FOLDED_NO_EVENTS = text(_FOLDED_WRITES + "SELECT 1")
_FOLDED_WITH_EVENTS = text(
    _FOLDED_WRITES
    + """INSERT INTO outbox (event_id, topic, key, event_type, payload, created_at)
SELECT event_id, topic, key, event_type, payload, created_at
FROM unnest(CAST(:o_event AS text[]), CAST(:o_topic AS text[]), CAST(:o_key AS text[]),
    CAST(:o_type AS text[]), CAST(:o_payload AS bytea[]), CAST(:o_created AS timestamptz[])) WITH ORDINALITY
    AS v(event_id, topic, key, event_type, payload, created_at, i)
ORDER BY i"""
)


def write_recorded(
    session: Session,
    deliveries: Sequence[DeliveryState],
    endpoints: Sequence[EndpointState],
    notices: Sequence[NoticeState],
    attempts: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
) -> None:
    """Everything a recording pass writes: the deliveries (leases released), endpoints and notices
    updated, the attempts and the events (outbox) inserted. One statement on PostgreSQL; on SQLite
    one executemany per table, in that order."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        write_deliveries(session, deliveries)
        write_endpoints(session, endpoints)
        write_notices(session, notices)
        add_attempts(session, attempts)
        publish_many(session, events)
        return
    session.flush()  # pending ORM changes (an endpoint being disabled) first, as publish_many does
    params: dict[str, Any] = {
        "d_id": [d.id for d in deliveries],
        "d_status": [d.status for d in deliveries],
        "d_attempts": [d.attempts for d in deliveries],
        "d_first": [d.first_attempt_at for d in deliveries],
        "d_last": [d.last_attempt_at for d in deliveries],
        "d_next": [d.next_attempt_at for d in deliveries],
        "d_succeeded": [d.succeeded_at for d in deliveries],
        "d_code": [d.last_status_code for d in deliveries],
        "d_error": [d.last_error for d in deliveries],
        "e_id": [e.id for e in endpoints],
        "e_failing": [e.failing_since for e in endpoints],
        "e_success": [e.last_success_at for e in endpoints],
        "n_id": [n.id for n in notices],
        "n_status": [n.status for n in notices],
        "n_delivered": [n.delivered_at for n in notices],
        "a_delivery": [a["delivery_id"] for a in attempts],
        "a_at": [a["at"] for a in attempts],
        "a_code": [a["status_code"] for a in attempts],
        "a_error": [a["error"] for a in attempts],
        "a_ms": [a["duration_ms"] for a in attempts],
    }
    if not events:
        conn.execute(_FOLDED_NO_EVENTS, params)
        return
    params.update(
        o_event=[o["event_id"] for o in events],
        o_topic=[o["topic"] for o in events],
        o_key=[o["key"] for o in events],
        o_type=[o["event_type"] for o in events],
        o_payload=[o["payload"] for o in events],
        o_created=[o["created_at"] for o in events],
    )
    conn.execute(_FOLDED_WITH_EVENTS, params)
