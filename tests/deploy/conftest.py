"""deploy/ fixtures: the overlays, rendered once for the run."""

from __future__ import annotations

from typing import Any

import pytest

from support.k8s import DEPLOY, OVERLAYS, kustomize


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {env: kustomize(DEPLOY / "overlays" / env) for env in OVERLAYS}
