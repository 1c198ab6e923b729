"""Each service's Alembic history builds exactly the schema its models declare, on both backends,
and downgrades cleanly (a deploy can roll back)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from rescind_common.db import make_engine

SERVICES = ["consent_api", "registry", "revocation_worker"]


def _service(name: str) -> tuple[Any, Any]:
    migrate = __import__(f"{name}.migrate", fromlist=["migrate"])
    models = __import__(f"{name}.models", fromlist=["models"])
    return migrate, models.Base.metadata


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migrations_match_models_and_downgrade(
    service: str, backend: str, pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = pg_database(f"mig_{service}") if backend == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    migrate, metadata = _service(service)
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        command.downgrade(migrate.alembic_config(url), "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(url)  # and up again
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_worker_notices_from_before_revocation_samples_still_read(
    backend: str, pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    """A notice written by 0001 (its samples in notice_samples) reads the same after 0003; and a
    notice sharing its revocation's sample set gets rows of its own back when 0003 is rolled back."""
    import datetime as dt

    import sqlalchemy as sa

    from revocation_worker import migrate
    from revocation_worker.notices.service import RevocationSamples

    from support.worker import WorkerHarness, add_revocation, create_notices, holder_notice

    url = pg_database("mig_old_notice") if backend == "postgresql" else f"sqlite:///{tmp_path / 'w.db'}"
    migrate.upgrade(url, "0001")
    engine = make_engine(url, pool_size=1)
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    refs = [(f"smp_old{i:04d}", f"{i:064x}", "voice_recording") for i in range(7)]
    try:
        with engine.begin() as conn:
            meta = sa.MetaData()
            notices, notice_samples = (
                sa.Table(t, meta, autoload_with=conn) for t in ("notices", "notice_samples")
            )
            conn.execute(
                notices.insert().values(
                    id="ntc_old",
                    revocation_id="rev_old",
                    subject_id="sub_old",
                    licensee_id="lic_old",
                    status="delivered",
                    deadline=now + dt.timedelta(days=30),
                    revoked_at=now,
                    sample_count=len(refs),
                    created_at=now,
                )
            )
            conn.execute(
                notice_samples.insert(),
                [{"notice_id": "ntc_old", "sample_id": s, "sha256": h, "kind": k} for s, h, k in refs],
            )
    finally:
        engine.dispose()
    migrate.upgrade(url)

    w = WorkerHarness(url, tmp_path, worker_inline_samples=3)
    try:
        h = w.headers("licensee", "lic_old")
        expected = [{"sample_id": s, "sha256": k, "kind": kind} for s, k, kind in refs]
        notice = w.notice(h, "ntc_old")
        assert notice["sample_count"] == 7 and notice["samples"] == expected[:3]
        page = w.client.get("/v1/notices/ntc_old/samples", params={"limit": 5}, headers=h).json()
        rest = w.client.get(
            "/v1/notices/ntc_old/samples", params={"limit": 5, "cursor": page["next_cursor"]}, headers=h
        ).json()
        assert page["items"] + rest["items"] == expected and rest["next_cursor"] is None

        # A notice made now, covering all of its revocation's samples (no rows of its own).
        shared = RevocationSamples(frozenset(s for s, _, _ in refs), {s: (hh, k) for s, hh, k in refs})
        with w.ctx.session_factory() as session, session.begin():
            rev = add_revocation(session, revocation_id="rev_new", subject_id="sub_new", now=now)
            holder = holder_notice("lic_new", shared, license_ids=["lcs_new"])
            (new_id,) = create_notices(session, w.ctx, rev, [holder], now)
        assert w.notice(w.headers("licensee", "lic_new"), new_id)["samples"] == expected[:3]
    finally:
        w.close()

    command.downgrade(migrate.alembic_config(url), "0001")
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.text("SELECT sample_id FROM notice_samples WHERE notice_id = :n ORDER BY sample_id"),
                    {"n": new_id},
                )
                .scalars()
                .all()
            )
        assert rows == [s for s, _, _ in refs]
    finally:
        engine.dispose()
