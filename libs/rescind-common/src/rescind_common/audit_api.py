"""The audit endpoints every service publishes (operator): entries, heads, signed checkpoints, a
verify report, and the JWKS of the key that signs checkpoints. A service gives its `ChainSource`
(how its entries and heads are stored) and its checkpoint tables."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Query, Request
from sqlalchemy import Connection, select

from rescind_common import audit_chain
from rescind_common.audit_chain import CheckpointTables, Link, Signer
from rescind_common.auth import RequireOperator
from rescind_common.db import DbSession
from rescind_common.pagination import MAX_LIMIT
from rescind_common.problems import Problem, field_error

Lim = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cur = Annotated[str | None, Query(max_length=400, description="Opaque cursor from `next_cursor`")]


class ChainSource(Protocol):
    def links(self, conn: Connection) -> Iterator[Link]:
        """Every entry, ordered by chain then seq, with its recomputed hash."""
        ...

    def heads(self, conn: Connection) -> dict[str, tuple[int, str]]: ...

    def entries_page(
        self, conn: Connection, chain_id: str | None, after: tuple[str, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Entries past `after` as published: chain_id, seq, prev_hash, hash, body (what the hash
        covers) and whatever else the service shows."""
        ...

    def heads_page(self, conn: Connection, after: str | None, limit: int) -> list[tuple[str, int, str]]: ...


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Problem(
            400, "The cursor is not valid.", errors=[field_error("query.cursor", "invalid")]
        ) from exc


def entry_cursor(cursor: str | None) -> tuple[str, int] | None:
    value = decode_cursor(cursor)
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and _id_like(value[0])
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and 0 <= value[1] < 2**31
    ):
        raise Problem(400, "The cursor is not valid.", errors=[field_error("query.cursor", "invalid")])
    return value[0], value[1]


def _id_like(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable()


def _typed_cursor(cursor: str | None, kind: type) -> Any:
    value = decode_cursor(cursor)
    if value is not None and (
        not isinstance(value, kind)
        or isinstance(value, bool)
        or (kind is str and not _id_like(value))
        or (isinstance(value, int) and not 0 <= value < 2**31)
    ):
        raise Problem(400, "The cursor is not valid.", errors=[field_error("query.cursor", "invalid")])
    return value


def checkpoint_out(row: Any) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": audit_chain.iso(row.at),
        "root": row.root,
        "previous_root": row.previous_root,
        "chain_count": row.chain_count,
        "jws": row.jws,
    }


def verify(
    conn: Connection,
    source: ChainSource,
    tables: CheckpointTables,
    signer: Signer,
    checkpoint: int | None = None,
) -> dict[str, Any]:
    """Recompute every chain; with `checkpoint`, also check its signature, its root over the heads
    it recorded, and that no chain fell behind or diverged from it."""
    cp_heads: dict[str, tuple[int, str]] | None = None
    problems: list[dict[str, Any]] = []
    cp_out: dict[str, Any] | None = None
    if checkpoint is not None:
        t = tables.checkpoints
        row = conn.execute(select(t).where(t.c.seq == checkpoint)).first()
        if row is None:
            raise Problem(
                404, f"No checkpoint {checkpoint}.", errors=[field_error("query.checkpoint", "not found")]
            )
        cp_out = checkpoint_out(row)
        cp_heads = audit_chain.heads_at(conn, tables, checkpoint)
        try:
            claims = audit_chain.verify_jws(row.jws, signer.jwks())
        except ValueError as exc:
            problems.append({"chain_id": None, "seq": checkpoint, "problem": f"checkpoint signature: {exc}"})
            claims = {}
        root = audit_chain.merkle_root((c, s, h) for c, (s, h) in cp_heads.items())
        if claims and (claims.get("root") != row.root or root != row.root):
            problems.append(
                {
                    "chain_id": None,
                    "seq": checkpoint,
                    "problem": "checkpoint heads do not match its signed root",
                }
            )
    heads = source.heads(conn)
    checked, chain_problems = audit_chain.verify_links(source.links(conn), heads, cp_heads)
    problems.extend(chain_problems)
    return {
        "ok": not problems,
        "chains_checked": len(heads),
        "entries_checked": checked,
        "checkpoint": cp_out,
        "problems": problems,
    }


@dataclass
class AuditApi:
    source: ChainSource
    tables: CheckpointTables
    signer_of: Callable[[Request], Signer]


def router(api: AuditApi, *, jwks: bool, entries: bool = True, verify_route: bool = True) -> APIRouter:
    """The audit routes (consent-api keeps its own entries and verify routes: `entries=False`,
    `verify_route=False`; it publishes its receipt JWKS elsewhere: `jwks=False`)."""
    r = APIRouter(tags=["audit"])

    if entries:

        @r.get("/v1/audit/entries", summary="Audit chain entries, by chain then seq (operator)")
        def list_entries(
            _: RequireOperator,
            session: DbSession,
            chain_id: Annotated[str | None, Query(max_length=64)] = None,
            cursor: Cur = None,
            limit: Lim = 100,
        ) -> dict[str, Any]:
            after = entry_cursor(cursor)
            rows = api.source.entries_page(session.connection(), chain_id, after, limit + 1)
            more = len(rows) > limit
            rows = rows[:limit]
            nxt = encode_cursor([rows[-1]["chain_id"], rows[-1]["seq"]]) if more else None
            return {"items": rows, "next_cursor": nxt}

    @r.get("/v1/audit/heads", summary="Every audit chain's head, now or as a checkpoint signed it (operator)")
    def list_heads(
        _: RequireOperator,
        session: DbSession,
        checkpoint: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
        cursor: Cur = None,
        limit: Lim = 100,
    ) -> dict[str, Any]:
        after = _typed_cursor(cursor, str)
        if checkpoint is None:
            rows = api.source.heads_page(session.connection(), after, limit + 1)
        else:
            t = api.tables.checkpoints
            if session.execute(select(t.c.seq).where(t.c.seq == checkpoint)).first() is None:
                raise Problem(
                    404, f"No checkpoint {checkpoint}.", errors=[field_error("query.checkpoint", "not found")]
                )
            at = sorted(audit_chain.heads_at(session.connection(), api.tables, checkpoint).items())
            rows = [(c, s, h) for c, (s, h) in at if after is None or c > after][: limit + 1]
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "items": [{"chain_id": c, "seq": s, "head": h} for c, s, h in rows],
            "next_cursor": encode_cursor(rows[-1][0]) if more else None,
        }

    @r.get("/v1/audit/checkpoints", summary="Signed audit checkpoints, newest first (operator)")
    def list_checkpoints(
        _: RequireOperator, session: DbSession, cursor: Cur = None, limit: Lim = 50
    ) -> dict[str, Any]:
        before = _typed_cursor(cursor, int)
        t = api.tables.checkpoints
        stmt = select(t).order_by(t.c.seq.desc()).limit(limit + 1)
        if before is not None:
            stmt = stmt.where(t.c.seq < before)
        rows = list(session.execute(stmt))
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "items": [checkpoint_out(x) for x in rows],
            "next_cursor": encode_cursor(rows[-1].seq) if more else None,
        }

    if verify_route:

        @r.get(
            "/v1/audit/verify", summary="Verify every audit chain, optionally against a checkpoint (operator)"
        )
        def verify_chains(
            _: RequireOperator,
            session: DbSession,
            request: Request,
            checkpoint: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
        ) -> dict[str, Any]:
            return verify(session.connection(), api.source, api.tables, api.signer_of(request), checkpoint)

    if jwks:

        @r.get("/.well-known/jwks.json", summary="Public keys that verify audit checkpoints")
        def audit_jwks(request: Request) -> dict[str, Any]:
            return api.signer_of(request).jwks()

    return r


class GenericSource:
    """The ChainSource of services whose entries and heads are `rescind_common.audit_chain`'s
    mixin tables."""

    def __init__(self, entries: Any, heads: Any) -> None:
        self.e = entries
        self.h = heads

    def links(self, conn: Connection) -> Iterator[Link]:
        last: tuple[str, int] = ("", 0)
        e = self.e
        while True:
            stmt = (
                select(e)
                .where((e.c.chain_id > last[0]) | ((e.c.chain_id == last[0]) & (e.c.seq > last[1])))
                .order_by(e.c.chain_id, e.c.seq)
                .limit(2000)
            )
            rows = list(conn.execute(stmt))
            if not rows:
                return
            for x in rows:
                body = audit_chain.entry_body(x.chain_id, x.seq, x.at, x.kind, x.entity_id, x.data)
                yield Link(x.chain_id, x.seq, x.prev_hash, x.hash, audit_chain.chain_hash(x.prev_hash, body))
            last = (rows[-1].chain_id, rows[-1].seq)

    def heads(self, conn: Connection) -> dict[str, tuple[int, str]]:
        h = self.h
        return {c: (s, hd) for c, s, hd in conn.execute(select(h.c.chain_id, h.c.seq, h.c.head))}

    def entries_page(
        self, conn: Connection, chain_id: str | None, after: tuple[str, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        e = self.e
        stmt = select(e).order_by(e.c.chain_id, e.c.seq).limit(limit)
        if chain_id is not None:
            stmt = stmt.where(e.c.chain_id == chain_id)
        if after is not None:
            stmt = stmt.where((e.c.chain_id > after[0]) | ((e.c.chain_id == after[0]) & (e.c.seq > after[1])))
        out = []
        for x in conn.execute(stmt):
            body = audit_chain.entry_body(x.chain_id, x.seq, x.at, x.kind, x.entity_id, x.data)
            out.append(
                {
                    "chain_id": x.chain_id,
                    "seq": x.seq,
                    "at": body["at"],
                    "kind": x.kind,
                    "entity_id": x.entity_id,
                    "data": x.data,
                    "prev_hash": x.prev_hash,
                    "hash": x.hash,
                    "body": body,
                }
            )
        return out

    def heads_page(self, conn: Connection, after: str | None, limit: int) -> list[tuple[str, int, str]]:
        h = self.h
        stmt = select(h.c.chain_id, h.c.seq, h.c.head).order_by(h.c.chain_id).limit(limit)
        if after is not None:
            stmt = stmt.where(h.c.chain_id > after)
        return [(c, s, hd) for c, s, hd in conn.execute(stmt)]
