"""Registry fixtures: its database (on the backend of the consent-api `db_url` it follows), the API
over HTTP (no broker: tests feed the projection through its handler) and that projection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from registry.config import RegistrySettings
from registry.main import create_app
from rescind_common.db import make_engine, make_session_factory

from support.registry import Projection, make_registry_settings, new_registry_db


@pytest.fixture(scope="session")
def registry_db_url(db_url: str, pg_database: Callable[[str], str], tmp_path_factory: Any) -> str:
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    return new_registry_db(backend, pg_database, tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def registry_settings(registry_db_url: str, state_dir: Path) -> RegistrySettings:
    return make_registry_settings(registry_db_url, state_dir)


@pytest.fixture(scope="session")
def registry(registry_settings: RegistrySettings) -> Iterator[TestClient]:
    with TestClient(create_app(registry_settings)) as c:
        yield c


@pytest.fixture(scope="session")
def registry_sessions(registry_settings: RegistrySettings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(registry_settings.registry_database_url, pool_size=2)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def projection(registry_sessions: sessionmaker[Session]) -> Projection:
    return Projection(registry_sessions)
