"""Tamper-evident audit chains and signed checkpoints: the mechanics every service shares.

A chain is a sequence of entries, each `hash = sha256(prev_hash || canonical JSON of its body)`;
a head (chain id, seq, hash) names its last entry. A checkpoint is a Merkle root over every
chain's head, signed by the service, so that a head rewound after a checkpoint (its seq lower,
or its entry at the checkpointed seq different) is detected by whoever kept the checkpoint
(docs/adr/0007-signed-audit-checkpoints.md).

What is recorded is the service's to say (an `AuditSpec` per audited table: which columns, no
personal data); how it is recorded is here: inserts and updates seen by the ORM (`after_flush`),
by `rescind_common.bulk.execute`, and by prebuilt Core UPDATEs whose parameters the spec maps,
are queued on the connection and appended at commit, in the same transaction, heads locked in
chain order last of all (so appends never deadlock with the business locks taken before).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Connection,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Update,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column
from sqlalchemy.orm.attributes import get_history

from rescind_common.db import JSONType, UTCDateTime, utcnow
from rescind_common.ids import new_id

log = logging.getLogger(__name__)

GENESIS = "0" * 64
EVENT_TYPE = "audit_checkpoint"
_PENDING = "rescind_audit_pending"


# -- hashing ------------------------------------------------------------------------------------


def iso(at: dt.datetime) -> str:
    """The one text form of an entry's time inside its hash (microseconds, UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def chain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(body)).hexdigest()


def entry_body(
    chain_id: str, seq: int, at: dt.datetime, kind: str, entity_id: str, data: Any
) -> dict[str, Any]:
    """What a generic entry's hash covers (consent-api keeps its own, older body)."""
    return {
        "chain_id": chain_id,
        "seq": seq,
        "at": iso(at),
        "kind": kind,
        "entity_id": entity_id,
        "data": data,
    }


def digest(value: Any) -> str:
    """A value that must be pinned but not shown (a URL, a free text): its sha256."""
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, dict | list):
        raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    else:
        raw = str(value).encode()
    return hashlib.sha256(raw).hexdigest()


# -- Merkle tree over heads --------------------------------------------------------------------


def leaf(chain_id: str, seq: int, head: str) -> bytes:
    return hashlib.sha256(b"\x00" + canonical({"chain_id": chain_id, "seq": seq, "head": head})).digest()


def merkle_root(heads: Iterable[tuple[str, int, str]]) -> str:
    """Hex root over (chain id, seq, head) leaves sorted by chain id (RFC 6962-style domain
    separation; an odd node is carried up). No chains: sha256 of nothing."""
    level = [leaf(c, s, h) for c, s, h in sorted(heads)]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


# -- verification (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One stored entry as the verifier sees it; `recomputed` is the hash of its stored body."""

    chain_id: str
    seq: int
    prev_hash: str
    hash: str
    recomputed: str


def verify_links(
    links: Iterable[Link],
    heads: Mapping[str, tuple[int, str]],
    checkpoint: Mapping[str, tuple[int, str]] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Check entries (ordered by chain, then seq) against their heads and, when given, against a
    checkpoint's heads: (entries checked, problems), each problem naming its chain."""
    problems: list[dict[str, Any]] = []
    checked = 0
    current: str | None = None
    prev, expected = GENESIS, 1
    seen: dict[str, tuple[int, str]] = {}
    at_seq: dict[tuple[str, int], str] = {}
    wanted = {(c, s) for c, (s, _) in (checkpoint or {}).items()}
    for e in links:
        if e.chain_id != current:
            current, prev, expected = e.chain_id, GENESIS, 1
        checked += 1
        if e.seq != expected:
            problems.append({"chain_id": e.chain_id, "seq": e.seq, "problem": f"expected seq {expected}"})
        if e.prev_hash != prev:
            problems.append(
                {"chain_id": e.chain_id, "seq": e.seq, "problem": "broken link to previous entry"}
            )
        if e.recomputed != e.hash:
            problems.append({"chain_id": e.chain_id, "seq": e.seq, "problem": "entry was altered"})
        prev, expected = e.hash, e.seq + 1
        seen[e.chain_id] = (e.seq, e.hash)
        if (e.chain_id, e.seq) in wanted:
            at_seq[(e.chain_id, e.seq)] = e.hash
    for chain_id, (seq, head) in heads.items():
        if seen.get(chain_id, (0, GENESIS)) != (seq, head):
            problems.append(
                {"chain_id": chain_id, "seq": seq, "problem": "chain head does not match (entries removed?)"}
            )
    for chain_id in sorted(set(seen) - set(heads)):
        problems.append({"chain_id": chain_id, "seq": seen[chain_id][0], "problem": "entries without a head"})
    for chain_id, (seq, head) in sorted((checkpoint or {}).items()):
        now = heads.get(chain_id, (0, GENESIS))
        if now[0] < seq:
            problems.append(
                {
                    "chain_id": chain_id,
                    "seq": now[0],
                    "problem": f"chain rewound: head at seq {now[0]}, checkpointed at seq {seq}",
                }
            )
        elif at_seq.get((chain_id, seq)) != head:
            problems.append(
                {
                    "chain_id": chain_id,
                    "seq": seq,
                    "problem": "chain rewritten: its entry at the checkpointed seq is not the signed one",
                }
            )
    return checked, problems


# -- tables ------------------------------------------------------------------------------------


class ChainEntryMixin:
    """One entry of a chain: ids, statuses and digests only (entries outlive erasure)."""

    __tablename__ = "audit_entries"

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (UniqueConstraint("chain_id", "seq"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    chain_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainHeadMixin:
    __tablename__ = "audit_heads"

    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    head: Mapped[str] = mapped_column(String(64))


class CheckpointMixin:
    """A signed Merkle root over every chain head at one moment."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    root: Mapped[str] = mapped_column(String(64))
    previous_root: Mapped[str] = mapped_column(String(64))
    chain_count: Mapped[int] = mapped_column(Integer)
    jws: Mapped[str] = mapped_column(Text)


class CheckpointHeadMixin:
    """The heads that changed at a checkpoint; a chain's head at checkpoint N is its row with the
    highest checkpoint_seq <= N."""

    __tablename__ = "audit_checkpoint_heads"

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index("ix_audit_checkpoint_heads_chain_id_checkpoint_seq", "chain_id", "checkpoint_seq"),)

    checkpoint_seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    head: Mapped[str] = mapped_column(String(64))


# -- recording ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditSpec:
    """What to record of one table. `chain` names the column holding the chain id (a licensee),
    `fields` the columns an entry carries (an update is recorded when one of them is set),
    `digested` columns carried as their sha256, `core_params` bind names of prebuilt Core UPDATEs
    -> columns (the key column included), `when(op, old, new)` filters (e.g. only re-drives; `old`
    is known to ORM updates only)."""

    table: Table
    kind: str
    chain: str
    fields: tuple[str, ...]
    digested: tuple[str, ...] = ()
    core_params: Mapping[str, str] = field(default_factory=dict)
    when: Callable[[str, Mapping[str, Any], Mapping[str, Any]], bool] | None = None
    key: str = "id"
    # False: bulk updates of this table are not recorded (only the ORM's, which know the old values)
    bulk_updates: bool = True


@dataclass
class _Pending:
    """Entries queued on one connection until its commit."""

    # spec, chain, kind, entity, data
    entries: list[tuple[AuditSpec, str, str, str, dict[str, Any]]] = field(default_factory=list)
    lookups: list[tuple[AuditSpec, str, dict[str, Any]]] = field(default_factory=list)  # chain unknown yet


class AuditRecorder:
    """One per service: its specs and its entry and head tables."""

    def __init__(self, entries: Table, heads: Table, specs: Sequence[AuditSpec]) -> None:
        self.entries = entries
        self.heads = heads
        self.specs = {s.table: s for s in specs}


_recorders: dict[Table, AuditRecorder] = {}  # audited table -> its service's recorder
_installed = False
_install_lock = threading.Lock()


def register(recorder: AuditRecorder) -> None:
    """Audit the recorder's tables from now on, in every session and connection of this process."""
    for table in recorder.specs:
        _recorders[table] = recorder
    _install()


def _value(spec: AuditSpec, name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in spec.digested:
        return digest(value)
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, bytes):
        return digest(value)
    return value


def _data(spec: AuditSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    return {n: _value(spec, n, values[n]) for n in (*spec.fields, *spec.digested) if n in values}


def _queue(
    conn: Connection,
    spec: AuditSpec,
    op: str,
    values: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
) -> None:
    if spec.when is not None and not spec.when(op, old or {}, values):
        return
    pending: _Pending = conn.info.setdefault(_PENDING, _Pending())
    entity = str(values.get(spec.key, ""))
    data = _data(spec, values)
    chain = values.get(spec.chain)
    if chain is None:
        pending.lookups.append((spec, f"{spec.kind}.{op}", {spec.key: values.get(spec.key), **data}))
    else:
        pending.entries.append((spec, str(chain), f"{spec.kind}.{op}", entity, data))


def record_bulk(conn: Connection, table: Table | None, kind: str, rows: Sequence[dict[str, Any]]) -> None:
    """Called by `rescind_common.bulk.execute` for each insert/update write, before it runs. It
    issues no statement (bulk writes keep their round trips): an update row that sets an audited
    column is recorded as written; its chain, when the row does not carry it, is looked up at
    commit."""
    recorder = _recorders.get(table) if table is not None else None
    if recorder is None or table is None:
        return
    spec = recorder.specs[table]
    if kind == "insert":
        for row in rows:
            _queue(conn, spec, "created", row)
        return
    if not spec.bulk_updates:
        return
    names = (*spec.fields, *spec.digested)
    for row in rows:
        if any(n in row for n in names):
            _queue(conn, spec, "updated", row)


def _after_flush(session: Session, _ctx: Any) -> None:
    touched = (
        [(o, "created") for o in session.new]
        + [(o, "updated") for o in session.dirty]
        + [(o, "deleted") for o in session.deleted]
    )
    if not touched or not _recorders:
        return
    conn: Connection | None = None
    for obj, op in touched:
        table = getattr(type(obj), "__table__", None)
        recorder = _recorders.get(table) if table is not None else None
        if recorder is None:
            continue
        spec = recorder.specs[table]  # type: ignore[index]
        names = (*spec.fields, *spec.digested)
        old: dict[str, Any] = {}
        if op == "updated":
            changed = False
            for n in names:
                history = get_history(obj, n)
                if history.has_changes():
                    changed = True
                    old[n] = history.deleted[0] if history.deleted else None
            if not changed:
                continue
        values = {n: getattr(obj, n) for n in {*names, spec.key, spec.chain}}
        if conn is None:
            conn = session.connection()
        _queue(conn, spec, op, values, old)


def _after_execute(
    conn: Connection, clause: Any, multiparams: Any, params: Any, _opts: Any, _result: Any
) -> None:
    if not isinstance(clause, Update) or not _recorders or conn.info.get("rescind_bulk_observed"):
        return
    table = clause.table
    recorder = _recorders.get(table) if isinstance(table, Table) else None
    if recorder is None:
        return
    spec = recorder.specs[table]  # type: ignore[index]
    if not spec.core_params:
        return
    batches = multiparams if isinstance(multiparams, list | tuple) and multiparams else [params]
    for batch in batches:
        for p in batch if isinstance(batch, list | tuple) else [batch]:
            if not isinstance(p, Mapping) or not all(k in p for k in spec.core_params):
                continue
            _queue(conn, spec, "updated", {col: p[name] for name, col in spec.core_params.items()})


def _flush_pending(conn: Connection) -> None:
    pending: _Pending | None = conn.info.pop(_PENDING, None)
    if pending is None or not (pending.entries or pending.lookups):
        return
    by_recorder: dict[int, tuple[AuditRecorder, list[tuple[str, str, str, dict[str, Any]]]]] = {}
    for spec, chain, kind, entity, data in pending.entries:
        recorder = _recorders[spec.table]
        by_recorder.setdefault(id(recorder), (recorder, []))[1].append((chain, kind, entity, data))
    wanted: dict[Table, set[Any]] = {}
    for spec, _kind, values in pending.lookups:
        wanted.setdefault(spec.table, set()).add(values[spec.key])
    chains: dict[tuple[Table, Any], str] = {}
    for table, keys in wanted.items():
        spec = _recorders[table].specs[table]
        ordered = sorted(keys, key=str)
        for i in range(0, len(ordered), 900):
            stmt = select(table.c[spec.key], table.c[spec.chain]).where(
                table.c[spec.key].in_(ordered[i : i + 900])
            )
            chains.update(((table, k), str(c)) for k, c in conn.execute(stmt))
    for spec, kind, values in pending.lookups:
        key = values.pop(spec.key)
        found = chains.get((spec.table, key))
        if found is None:
            continue
        recorder = _recorders[spec.table]
        by_recorder.setdefault(id(recorder), (recorder, []))[1].append((found, kind, str(key), values))
    for recorder, entries in by_recorder.values():
        _append(conn, recorder, entries)


def _append(
    conn: Connection, recorder: AuditRecorder, entries: list[tuple[str, str, str, dict[str, Any]]]
) -> None:
    heads_t, entries_t = recorder.heads, recorder.entries
    chains = sorted({c for c, *_ in entries})
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(
            pg_insert(heads_t).on_conflict_do_nothing(index_elements=["chain_id"]),
            [{"chain_id": c, "seq": 0, "head": GENESIS} for c in chains],
        )
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(
            sqlite_insert(heads_t).on_conflict_do_nothing(index_elements=["chain_id"]),
            [{"chain_id": c, "seq": 0, "head": GENESIS} for c in chains],
        )
    stmt = select(heads_t.c.chain_id, heads_t.c.seq, heads_t.c.head).where(heads_t.c.chain_id.in_(chains))
    stmt = stmt.order_by(heads_t.c.chain_id)
    if postgres:
        stmt = stmt.with_for_update()
    heads = {c: (s, h) for c, s, h in conn.execute(stmt)}
    at = utcnow()
    rows: list[dict[str, Any]] = []
    for chain, kind, entity, data in entries:
        seq, prev = heads[chain]
        seq += 1
        body = entry_body(chain, seq, at, kind, entity, data)
        h = chain_hash(prev, body)
        rows.append(
            {
                "chain_id": chain,
                "seq": seq,
                "at": at,
                "kind": kind,
                "entity_id": entity,
                "data": data,
                "prev_hash": prev,
                "hash": h,
            }
        )
        heads[chain] = (seq, h)
    conn.execute(entries_t.insert(), rows)
    conn.execute(
        heads_t.update()
        .where(heads_t.c.chain_id == _bind("b_chain"))
        .values(seq=_bind("b_seq"), head=_bind("b_head")),
        [{"b_chain": c, "b_seq": heads[c][0], "b_head": heads[c][1]} for c in chains],
    )


def _bind(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name)


def _on_commit(conn: Connection) -> None:
    if _PENDING in conn.info:
        _flush_pending(conn)


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info.pop(_PENDING, None)


def _install() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        from sqlalchemy.pool import Pool

        from rescind_common import bulk

        bulk.observers.append(record_bulk)
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Engine, "after_execute", _after_execute)
        event.listen(Engine, "commit", _on_commit)
        event.listen(Engine, "rollback", _on_rollback)
        event.listen(Pool, "checkin", _on_checkin)
        _installed = True


# -- checkpoints -------------------------------------------------------------------------------


class Signer(Protocol):
    def sign(self, claims: dict[str, Any]) -> str: ...

    def jwks(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CheckpointTables:
    checkpoints: Table
    checkpoint_heads: Table


def lock_key(service: str) -> int:
    """The advisory lock id of a service's checkpoint writer (one replica writes)."""
    return int.from_bytes(
        hashlib.sha256(f"rescind-audit:{service}".encode()).digest()[:8], "big", signed=True
    )


def try_lock(conn: Connection, service: str) -> bool:
    if conn.dialect.name != "postgresql":
        return True  # SQLite: one writer at a time anyway
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(service)}).scalar())


def heads_at(conn: Connection, tables: CheckpointTables, checkpoint_seq: int) -> dict[str, tuple[int, str]]:
    """Every chain's head as checkpoint `checkpoint_seq` saw it."""
    ch = tables.checkpoint_heads
    latest = (
        select(ch.c.chain_id, func.max(ch.c.checkpoint_seq).label("cp"))
        .where(ch.c.checkpoint_seq <= checkpoint_seq)
        .group_by(ch.c.chain_id)
        .subquery()
    )
    stmt = (
        select(ch.c.chain_id, ch.c.seq, ch.c.head)
        .join(latest, (latest.c.chain_id == ch.c.chain_id) & (latest.c.cp == ch.c.checkpoint_seq))
        .order_by(ch.c.chain_id)
    )
    return {c: (s, h) for c, s, h in conn.execute(stmt)}


def write_checkpoint(
    conn: Connection,
    *,
    service: str,
    tables: CheckpointTables,
    current_heads: Callable[[Connection], dict[str, tuple[int, str]]],
    signer: Signer,
    publish: Callable[[Connection, dict[str, Any]], None],
    force: bool = False,
) -> dict[str, Any] | None:
    """Write the next checkpoint in the caller's transaction (when no other replica holds the
    lock and some head moved since the last one, or `force`); its claims, or None."""
    if not try_lock(conn, service):
        return None
    cp = tables.checkpoints
    last = conn.execute(select(cp.c.seq, cp.c.root).order_by(cp.c.seq.desc()).limit(1)).first()
    heads = current_heads(conn)
    before = heads_at(conn, tables, last[0]) if last else {}
    changed = {c: v for c, v in heads.items() if before.get(c) != v}
    if last is not None and not changed and not force and set(before) == set(heads):
        return None
    seq = (last[0] if last else 0) + 1
    at = utcnow()
    root = merkle_root((c, s, h) for c, (s, h) in heads.items())
    claims: dict[str, Any] = {
        "typ": "audit-checkpoint",
        "service": service,
        "seq": seq,
        "root": root,
        "previous_root": last[1] if last else "",
        "chain_count": len(heads),
        "at": iso(at),
        "iat": int(at.timestamp()),
    }
    jws = signer.sign(claims)
    conn.execute(
        cp.insert(),
        [
            {
                "seq": seq,
                "at": at,
                "root": root,
                "previous_root": claims["previous_root"],
                "chain_count": len(heads),
                "jws": jws,
            }
        ],
    )
    if changed:
        conn.execute(
            tables.checkpoint_heads.insert(),
            [
                {"checkpoint_seq": seq, "chain_id": c, "seq": s, "head": h}
                for c, (s, h) in sorted(changed.items())
            ],
        )
    claims["jws"] = jws
    publish(conn, claims)
    return claims


def outbox_publisher(
    *, service: str, outbox: Any, topic: str, envelope: Callable[..., Any]
) -> Callable[[Connection, dict[str, Any]], None]:
    """`publish` for write_checkpoint: the checkpoint as the `audit_checkpoint` payload of the
    service's event message (`envelope(event_id=, producer=, audit_checkpoint=)`), appended to its
    topic's outbox keyed `audit:<service>`, in the checkpoint's transaction."""
    # Imported here: the outbox brings the Kafka client, which the CLI's verifier must not load.
    from rescind_common.outbox import insert_outbox, outbox_row

    def publish(conn: Connection, claims: dict[str, Any]) -> None:
        cp = checkpoint_message(claims)
        event_id = new_id("evt")
        message = envelope(event_id=event_id, producer=service, audit_checkpoint=cp)
        message.occurred_at.CopyFrom(cp.at)
        row = outbox_row(
            topic=topic, key=f"audit:{service}", event_id=event_id, event_type=EVENT_TYPE, message=message
        )
        insert_outbox(conn, outbox, [row])

    return publish


def checkpoint_message(claims: Mapping[str, Any]) -> Any:
    """The AuditCheckpoint payload of a checkpoint's claims."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from rescind_common.proto.rescind.v1 import audit_events_pb2

    ts = Timestamp()
    ts.FromDatetime(dt.datetime.strptime(claims["at"], "%Y-%m-%dT%H:%M:%S.%fZ"))
    return audit_events_pb2.AuditCheckpoint(
        service=claims["service"],
        sequence=claims["seq"],
        root=claims["root"],
        chain_count=claims["chain_count"],
        at=ts,
        jws=claims["jws"],
        previous_root=claims["previous_root"],
    )


class CheckpointLoop:
    """The serve process's background writer: one checkpoint attempt per interval."""

    def __init__(
        self, engine: Engine, interval: float, write: Callable[[Connection], Any], service: str
    ) -> None:
        self.engine = engine
        self.interval = interval
        self.write = write
        self.service = service
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"{service}-audit-checkpoints", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                with self.engine.begin() as conn:
                    self.write(conn)
            except Exception:
                log.exception("%s: audit checkpoint failed; next try in %.0f s", self.service, self.interval)


# -- signing (registry and worker: a key of their own) -----------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Ed25519Signer:
    """Compact JWS (EdDSA) over JSON claims with one Ed25519 key, published as a JWKS."""

    def __init__(self, pem: bytes) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
        thumb = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
        self.kid = _b64(thumb)
        self.jwk = {**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}
        header = {"alg": "EdDSA", "kid": self.kid, "typ": "JWT"}
        self._header = _b64(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())

    @staticmethod
    def new_pem() -> bytes:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, claims: dict[str, Any]) -> str:
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}"
        return f"{signing_input}.{_b64(self._key.sign(signing_input.encode()))}"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}


def load_signer(key_file: Any, dev_file: Any) -> Ed25519Signer:
    """The configured key (it must exist), or in development a key generated once at `dev_file`."""
    from pathlib import Path

    from rescind_common.keyfiles import create_once

    if key_file is not None:
        return Ed25519Signer(Path(key_file).read_bytes())
    return Ed25519Signer(create_once(Path(dev_file), Ed25519Signer.new_pem))


def verify_jws(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The claims of a checkpoint JWS signed by a key of `jwks`; ValueError otherwise."""
    import jwt

    from rescind_common.jwks import parse_key_set

    keys = parse_key_set(json.dumps(dict(jwks)).encode())
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as exc:
        raise ValueError(f"not a JWS: {exc}") from exc
    if kid not in keys:
        raise ValueError(f"signed by an unknown key {kid!r}")
    try:
        return dict(jwt.decode(token, keys[kid], algorithms=["EdDSA"], options={"verify_aud": False}))
    except jwt.PyJWTError as exc:
        raise ValueError(f"bad signature: {exc}") from exc
