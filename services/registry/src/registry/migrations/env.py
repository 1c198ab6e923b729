"""Alembic environment for registry (SQLite and PostgreSQL)."""

from registry.models import Base
from rescind_common.migrations import run_env

run_env(Base.metadata)
