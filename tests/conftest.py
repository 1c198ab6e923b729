"""Fixtures shared by every suite: real PostgreSQL (a fresh database per run, built by Alembic), SQLite,
a real broker, consent-api over HTTP and tokens. Each suite's own fixtures are in its directory's
conftest.py; helpers are imported from `support`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from consent_api.config import ConsentSettings
from consent_api.main import create_app
from consent_api.migrate import upgrade
from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.embedded_broker import EmbeddedBroker

from support.helpers import TokenFactory, auth, make_settings, migrated_db

PG_ADMIN_URL = os.environ.get("RESCIND_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Callable[[str], str]]:
    """Factory: a new, empty PostgreSQL database per name; all dropped at the end of the run."""
    created: list[str] = []

    def make(label: str) -> str:
        name = f"rescind_test_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _pg_url(name)

    yield make
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Development keys (token signing, receipt signing, master key) for the whole run."""
    return tmp_path_factory.mktemp("rescind-state")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu), memory-only, on a free port."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def db_url(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """consent-api's database, migrated with Alembic: once on PostgreSQL, once on SQLite."""
    return migrated_db(request.param, pg_database, tmp_path_factory.mktemp("sqlite"), "consent", upgrade)


@pytest.fixture(scope="session")
def settings(db_url: str, state_dir: Path) -> ConsentSettings:
    return make_settings(db_url, state_dir)


@pytest.fixture(scope="session")
def client(settings: ConsentSettings) -> Iterator[TestClient]:
    """consent-api over HTTP (httpx against the ASGI app). Tests isolate by using their own subjects."""
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="session")
def token(state_dir: Path) -> TokenFactory:
    """token(role, sub=None, **claims_overrides) -> a signed JWT the services accept."""
    settings = ConsentSettings(state_dir=state_dir)
    key = ensure_dev_key(settings.dev_auth_key_file)

    def make(role: str = "subject", sub: str | None = None, **kwargs: Any) -> str:
        return mint_token(
            key,
            sub=sub or f"seller-{uuid.uuid4().hex[:12]}",
            role=role,
            issuer=kwargs.pop("issuer", settings.auth_issuer),
            audience=kwargs.pop("audience", settings.token_audiences),
            **kwargs,
        )

    return make


@pytest.fixture
def seller(token: TokenFactory) -> dict[str, str]:
    """Authorization headers for a brand-new seller (subject)."""
    return auth(token("subject"))


@pytest.fixture
def operator(token: TokenFactory) -> dict[str, str]:
    return auth(token("operator", sub="ops-test"))
