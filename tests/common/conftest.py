"""Fixtures of the cross-service suites (authorization matrix, fuzzing, limits): the three services
on databases of their own, per backend, with two tenants' records of every kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.security import (
    STACK_SETTINGS,
    ConsentWorld,
    RegistryWorld,
    SecurityStack,
    WorkerWorld,
    World,
    build_stack,
)


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def sec_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def sec_stack(
    sec_backend: str,
    pg_database: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    state_dir: Path,
) -> Iterator[SecurityStack]:
    """The three services on this backend, rate limiting off, on databases no other suite uses."""
    tmp = tmp_path_factory.mktemp(f"security-{sec_backend}")
    with build_stack(sec_backend, pg_database, tmp, state_dir, **STACK_SETTINGS) as stack:
        yield stack


@pytest.fixture(scope="session")
def sec_worlds(sec_stack: SecurityStack) -> dict[str, World]:
    """Tenants "a" and "b" with records of every kind in each service (built once per backend)."""
    return {
        "consent": ConsentWorld(sec_stack),
        "registry": RegistryWorld(sec_stack),
        "worker": WorkerWorld(sec_stack),
    }
