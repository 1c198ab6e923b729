"""Alembic environment for consent-api (SQLite and PostgreSQL)."""

from consent_api.models import Base
from rescind_common.migrations import run_env

run_env(Base.metadata)
