"""Run registry's Alembic migrations (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from rescind_common import migrations

SCRIPTS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    return migrations.alembic_config(SCRIPTS, database_url)


def upgrade(database_url: str, revision: str = "head") -> None:
    migrations.upgrade(SCRIPTS, database_url, revision)
