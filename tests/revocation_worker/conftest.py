"""revocation-worker fixtures: a migrated database per backend, `worker(**overrides)` harnesses and
`receiver(respond)` webhook receivers, all stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from revocation_worker.migrate import upgrade

from support.helpers import migrated_db
from support.worker import Receiver, Responder, WorkerHarness


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def worker_db_url(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """revocation-worker's database, migrated with Alembic, on PostgreSQL and on SQLite: one per test
    module, so what one module leaves due (ready revocations, pending deliveries) never changes
    another's counts."""
    return migrated_db(
        request.param, pg_database, tmp_path_factory.mktemp("worker-sqlite"), "worker", upgrade
    )


@pytest.fixture
def receiver(worker: Callable[..., WorkerHarness]) -> Iterator[Callable[..., Receiver]]:
    """receiver(respond=None) -> a running local receiver; all are shut down after the test.

    Depends on `worker` so that receivers close (releasing hung requests) before delivery loops stop.
    """
    made: list[Receiver] = []

    def make(respond: Responder | None = None) -> Receiver:
        r = Receiver(respond)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# -- the worker ------------------------------------------------------------------


@pytest.fixture
def worker(worker_db_url: str, state_dir: Path) -> Iterator[Callable[..., WorkerHarness]]:
    """worker(**settings_overrides) -> a WorkerHarness on this run's worker database.

    Defaults: loopback allowed, plain http allowed (local receivers), fast retries without jitter.
    """
    made: list[WorkerHarness] = []

    def make(**overrides: Any) -> WorkerHarness:
        h = WorkerHarness(worker_db_url, state_dir, **overrides)
        made.append(h)
        return h

    yield make
    errors: list[BaseException] = []
    for h in made:
        try:
            h.stop_loops()
        except BaseException as exc:
            errors.append(exc)
    if made:
        made[0].cancel_leftovers()
    for h in made:
        h.close()
    if errors:
        raise errors[0]
