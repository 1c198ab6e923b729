"""The unit tier: pure logic on values, runs in well under a second (`make test-unit`).

A test here that asks for a database, a broker or a running service belongs to its service's suite:
collection stops and names it, so the tier stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
# The root conftest's fixtures that start something (every other one is built on these).
RUNNING = {"pg_database", "broker", "db_url", "client"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and (needs := RUNNING & set(getattr(item, "fixturenames", ()))):
            raise pytest.UsageError(f"{item.nodeid} is in tests/unit but uses {sorted(needs)}")
