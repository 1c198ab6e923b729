"""Alembic environment for revocation-worker (SQLite and PostgreSQL)."""

from rescind_common.migrations import run_env
from revocation_worker.models import Base

run_env(Base.metadata)
