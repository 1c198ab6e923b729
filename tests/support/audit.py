"""What an attacker with write access to a service's database does to its audit chains, and the
verifier `rescind audit verify` runs (rescind_cli.audit.verify_all, against the apps in-process)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, Table, delete, insert, select, update

from rescind_cli.audit import verify_all


def verify(apps: Mapping[str, FastAPI], operator: dict[str, str], state: Path) -> dict[str, Any]:
    clients = {service: TestClient(app, headers=operator) for service, app in apps.items()}
    return verify_all(clients, state)


def chains_named(report: dict[str, Any]) -> set[str]:
    return {p["chain_id"] for p in report["problems"] if p.get("chain_id")}


@contextmanager
def tampered(engine: Engine, entries: Table, chain_col: str, chain_id: str, seq: int = 1) -> Iterator[None]:
    """One entry's data changed in place (its hash left as it was); put back afterwards."""
    c = entries.c
    where = (c[chain_col] == chain_id) & (c.seq == seq)
    with engine.begin() as conn:
        before = conn.execute(select(c.data).where(where)).scalar_one()
        conn.execute(update(entries).where(where).values(data={**before, "tampered": True}))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(update(entries).where(where).values(data=before))


@contextmanager
def rewound(
    engine: Engine,
    entries: Table,
    chain_col: str,
    chain_id: str,
    set_head: Any,
    keep: int,
) -> Iterator[None]:
    """The chain cut back to its first `keep` entries, its head reset to match (`set_head(conn,
    seq, hash)`): a consistent rewind. Put back afterwards."""
    c = entries.c
    with engine.begin() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(select(entries).where(c[chain_col] == chain_id).order_by(c.seq))
        ]
        assert len(rows) > keep, f"chain {chain_id} has {len(rows)} entries"
        conn.execute(delete(entries).where((c[chain_col] == chain_id) & (c.seq > keep)))
        last = rows[keep - 1] if keep else None
        set_head(conn, keep, last["hash"] if last else "0" * 64)
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(insert(entries), rows[keep:])
            set_head(conn, rows[-1]["seq"], rows[-1]["hash"])
