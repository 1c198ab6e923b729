"""rescind_common.bulk: multi-row writes derived from the table, on SQLite and real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    select,
)

from rescind_common import bulk
from rescind_common.db import JSONType, UTCDateTime, make_engine

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)


def _tables(extra: bool = False) -> tuple[MetaData, Table, Table]:
    md = MetaData()
    cols: list[Column[Any]] = [
        Column("id", String(40), primary_key=True),
        Column("name", String(200)),
        Column("at", UTCDateTime()),
        Column("data", JSONType, nullable=True),
        Column("blob", LargeBinary),
        Column("ok", Boolean, default=False),
        Column("n", Integer, nullable=True),
        Column("key", String(20), default=lambda: "from-default"),
    ]
    if extra:
        cols.append(Column("added", String(20), nullable=True))
    parents = Table("bulk_parents", md, *cols)
    children = Table(
        "bulk_children",
        md,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("parent_id", String(40), ForeignKey("bulk_parents.id")),
        Column("seq", Integer),
    )
    return md, parents, children


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(
    request: pytest.FixtureRequest, pg_database: Callable[[str], str], tmp_path: Path
) -> Iterator[Engine]:
    url = pg_database("bulk") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'bulk.db'}"
    eng = make_engine(url)
    yield eng
    eng.dispose()


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    return seen


def _row(i: int, **over: Any) -> dict[str, Any]:
    row = {
        "id": f"p{i:03d}",
        "name": f"name {i}",
        "at": T0 + dt.timedelta(seconds=i),
        "data": {"i": i, "list": ["a", i], "nested": {"ok": True}},
        "blob": bytes([i % 256, 0, 255]),
        "ok": i % 2 == 0,
        "n": i,
        "key": f"k{i}",
    }
    row.update(over)
    return row


def test_insert_round_trips_every_column_in_order(engine: Engine) -> None:
    md, parents, _ = _tables()
    md.create_all(engine)
    rows = [_row(i) for i in range(50, 0, -1)]  # not in key order
    with engine.begin() as conn:
        bulk.execute(conn, [bulk.insert_rows(parents, rows)])
    with engine.connect() as conn:
        got = [dict(r._mapping) for r in conn.execute(select(parents).order_by(parents.c.id))]
    assert got == sorted(rows, key=lambda r: r["id"])


def test_insert_preserves_order_of_autoincrement_ids(engine: Engine) -> None:
    md, parents, children = _tables()
    md.create_all(engine)
    with engine.begin() as conn:
        bulk.execute(
            conn,
            [
                bulk.insert_rows(parents, [_row(1)]),
                bulk.insert_rows(children, [{"parent_id": "p001", "seq": s} for s in (5, 3, 9, 1, 7)]),
            ],
        )
    with engine.connect() as conn:
        seqs = list(conn.execute(select(children.c.seq).order_by(children.c.id)).scalars())
    assert seqs == [5, 3, 9, 1, 7]


def test_missing_column_gets_python_default_or_fails(engine: Engine) -> None:
    md, parents, _ = _tables()
    md.create_all(engine)
    partial = {k: v for k, v in _row(1).items() if k not in ("ok", "key", "n")}
    with engine.begin() as conn:
        bulk.execute(conn, [bulk.insert_rows(parents, [partial])])
        got = conn.execute(select(parents.c.ok, parents.c.key, parents.c.n)).one()
    assert tuple(got) == (False, "from-default", None)
    # A row lacking a column that another row gives, with no default to fall back on: loud.
    with pytest.raises(ValueError, match="'n'"):
        bulk.insert_rows(parents, [_row(2), {k: v for k, v in _row(3).items() if k != "n"}])
    with pytest.raises(ValueError, match="no such column"):
        bulk.insert_rows(parents, [{**_row(4), "nmae": "typo"}])


def test_new_column_is_written_without_touching_the_builder(engine: Engine) -> None:
    md, parents, _ = _tables(extra=True)
    md.create_all(engine)
    with engine.begin() as conn:
        bulk.execute(conn, [bulk.insert_rows(parents, [_row(1, added="inserted"), _row(2, added="x")])])
        bulk.execute(conn, [bulk.update_rows(parents, [{"id": "p002", "added": "updated"}])])
    with engine.connect() as conn:
        got = dict(conn.execute(select(parents.c.id, parents.c.added)).all())
    assert got == {"p001": "inserted", "p002": "updated"}


def test_update_by_primary_key_round_trips(engine: Engine) -> None:
    md, parents, _ = _tables()
    md.create_all(engine)
    with engine.begin() as conn:
        bulk.execute(conn, [bulk.insert_rows(parents, [_row(i) for i in range(1, 6)])])
    changes: list[dict[str, Any]] = [
        {"id": f"p{i:03d}", "name": f"new {i}", "at": T0, "data": [i], "blob": b"", "ok": True, "n": None}
        for i in (4, 2)
    ]
    with engine.begin() as conn:
        bulk.execute(conn, [bulk.update_rows(parents, changes)])
    with engine.connect() as conn:
        got = {r.id: dict(r._mapping) for r in conn.execute(select(parents))}
    for change in changes:
        assert got[change["id"]] == {**change, "key": _row(int(change["id"][1:]))["key"]}
    assert got["p001"] == _row(1) and got["p003"] == _row(3) and got["p005"] == _row(5)


def test_fold_is_one_statement_on_postgresql_and_in_order_elsewhere(engine: Engine) -> None:
    md, parents, children = _tables()
    md.create_all(engine)
    with engine.begin() as conn:
        bulk.execute(conn, [bulk.insert_rows(parents, [_row(1)])])
    seen = _statements(engine)
    for round_ in range(2):  # the second call reuses the statement built for this shape
        seen.clear()
        with engine.begin() as conn:
            bulk.execute(
                conn,
                [
                    bulk.update_rows(parents, [{"id": "p001", "n": 100 + round_}]),
                    bulk.insert_rows(children, [{"parent_id": "p001", "seq": round_}]),
                    bulk.insert_rows(children, []),  # no rows: left out
                ],
            )
        writes = [s for s in seen if not s.lstrip().upper().startswith(("BEGIN", "COMMIT"))]
        assert len(writes) == (1 if engine.dialect.name == "postgresql" else 2)
    with engine.connect() as conn:
        assert conn.execute(select(parents.c.n).where(parents.c.id == "p001")).scalar() == 101
        assert conn.execute(select(children.c.seq).order_by(children.c.id)).scalars().all() == [0, 1]


def test_two_writes_to_one_table_keep_their_order(engine: Engine) -> None:
    md, parents, children = _tables()
    md.create_all(engine)
    with engine.begin() as conn:
        bulk.execute(conn, [bulk.insert_rows(parents, [_row(1)])])
    seen = _statements(engine)
    with engine.begin() as conn:
        # Adjacent inserts into one table become one write (one executemany on SQLite).
        bulk.execute(
            conn,
            [bulk.insert_rows(children, [{"parent_id": "p001", "seq": s}]) for s in (4, 2, 8, 6)],
        )
        writes = [x for x in seen if x.startswith("INSERT")]
        assert len(writes) == 1
        # Apart, they run one by one: the order of a statement's CTEs is unspecified.
        bulk.execute(
            conn,
            [
                bulk.insert_rows(children, [{"parent_id": "p001", "seq": 3}]),
                bulk.update_rows(parents, [{"id": "p001", "n": 7}]),
                bulk.insert_rows(children, [{"parent_id": "p001", "seq": 1}]),
            ],
        )
        seqs = list(conn.execute(select(children.c.seq).order_by(children.c.id)).scalars())
    assert seqs == [4, 2, 8, 6, 3, 1]


def test_chunks() -> None:
    assert [list(c) for c in bulk.chunks([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(bulk.chunks([], 3)) == []


def test_worker_writes_stay_one_round_trip_on_postgresql(pg_database: Callable[[str], str]) -> None:
    """A resolution's notices, models, deliveries and events are one statement; so is everything
    a recording pass writes (the worker's hot paths, built by bulk from the models)."""
    from google.protobuf.empty_pb2 import Empty
    from sqlalchemy.orm import Session

    from rescind_common.outbox import outbox_row
    from revocation_worker.db import Outbox
    from revocation_worker.delivery import repository as delivery_repo
    from revocation_worker.endpoints.models import Endpoint
    from revocation_worker.migrate import upgrade
    from revocation_worker.notices import repository as notices_repo
    from revocation_worker.notices.models import Delivery, DeliveryAttempt, Notice, NoticeModel

    url = pg_database("bulk_worker")
    upgrade(url)
    engine = make_engine(url)
    seen = _statements(engine)

    def event(i: int) -> dict[str, Any]:
        return outbox_row(topic="t", key="k", event_id=f"evt{i}", event_type="x", message=Empty())

    notices = [
        {
            "id": f"ntc{i}",
            "revocation_id": "rev1",
            "subject_id": "sub1",
            "licensee_id": f"lic{i}",
            "status": "pending",
            "deadline": T0,
            "revoked_at": T0,
            "sample_count": 2,
            "covers_revocation_samples": True,
            "created_at": T0,
        }
        for i in range(3)
    ]
    models = [
        {"notice_id": f"ntc{i}", "model_id": "mdl1", "name": "m", "version": "1", "shard_ids": ["s1", "s2"]}
        for i in range(3)
    ]
    deliveries = [
        {
            "notice_id": f"ntc{i}",
            "endpoint_id": "end1",
            "licensee_id": f"lic{i}",
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": T0,
            "created_at": T0,
        }
        for i in range(3)
    ]
    with Session(engine) as session, session.begin():
        session.add(Endpoint(id="end1", licensee_id="lic0", url="https://x.invalid", secret_sealed=b"s"))
        session.flush()
        seen.clear()
        notices_repo.insert_created(session, notices, models, deliveries, [event(i) for i in range(3)])
        assert len(seen) == 1
    with Session(engine) as session:
        assert session.scalars(select(NoticeModel.shard_ids)).all() == [["s1", "s2"]] * 3
        ids = sorted(session.scalars(select(Delivery.id)))
        assert len(ids) == 3
        assert len(session.scalars(select(Outbox.event_id)).all()) == 3

    states = delivery_repo.lock_delivery_states
    with Session(engine) as session, session.begin():
        got = [
            replace(d, status="succeeded", attempts=1, last_status_code=200, last_error=None)
            for d in states(session, ids).values()
        ]
        ends = [
            replace(e, last_success_at=T0)
            for e in delivery_repo.lock_endpoint_states(session, ["end1"]).values()
        ]
        marked = [
            replace(n, status="delivered", delivered_at=T0)
            for n in delivery_repo.lock_notice_states(session, ["ntc0"]).values()
        ]
        seen.clear()
        delivery_repo.write_recorded(
            session,
            got,
            ends,
            marked,
            [{"delivery_id": i, "at": T0, "status_code": 200, "error": None, "duration_ms": 5} for i in ids],
            [event(10)],
        )
        assert len(seen) == 1
    with Session(engine) as session:
        assert set(session.scalars(select(Delivery.status))) == {"succeeded"}
        assert session.scalar(select(Endpoint.last_success_at)) == T0
        assert session.scalar(select(Notice.status).where(Notice.id == "ntc0")) == "delivered"
        assert len(session.scalars(select(DeliveryAttempt.id)).all()) == 3
        assert len(session.scalars(select(Outbox.event_id)).all()) == 4
    engine.dispose()


def test_a_grant_writes_consent_link_event_and_audit_in_one_statement_on_postgresql(
    client: Any, seller: dict[str, str], settings: Any
) -> None:
    """consent-api's grant: the consent, its one sample link, its event, its audit entry and the
    subject's new chain head, built by bulk, in one statement on PostgreSQL (in order elsewhere)."""
    from sqlalchemy.engine import Engine as AnyEngine

    from support.helpers import grant, register

    sample = register(client, seller, 1)
    seen: list[str] = []

    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(AnyEngine, "before_cursor_execute", _count)
    try:
        grant(client, seller, sample)
    finally:
        event.remove(AnyEngine, "before_cursor_execute", _count)
    writes = {
        "INSERT INTO consents",
        "INSERT INTO consent_samples",
        "INSERT INTO outbox",
        "INSERT INTO audit_log",
        "UPDATE subjects",
    }
    holding = [s for s in seen if any(w in s for w in writes)]
    if settings.consent_database_url.startswith("postgresql"):
        assert len(holding) == 1 and all(w in holding[0] for w in writes), holding
    else:
        assert len(holding) == len(writes), holding
