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
