"""Settings on their own: the registry's defaults and the retention rule every service shares."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from registry.config import RegistrySettings
from rescind_common.settings import RescindSettings


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("RESCIND_REGISTRY_"):
            monkeypatch.delenv(name)
    defaults = RegistrySettings()
    assert (defaults.registry_host, defaults.registry_port) == ("127.0.0.1", 8002)
    assert defaults.registry_database_url == "sqlite:///.rescind/registry.db"
    assert defaults.registry_consumer_group == "registry"
    assert defaults.registry_projection_wait_seconds == 3.0
    assert defaults.registry_max_license_samples == 100_000
    assert defaults.registry_max_holder_samples == 10_000


def test_settings_refuse_a_processed_events_retention_not_longer_than_the_outbox_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="RESCIND_PROCESSED_EVENTS_RETENTION_HOURS"):
        RescindSettings(outbox_retention_hours=72, processed_events_retention_hours=72)
    monkeypatch.setenv("RESCIND_PROCESSED_EVENTS_RETENTION_HOURS", "48")
    with pytest.raises(ValidationError, match="must be longer than RESCIND_OUTBOX_RETENTION_HOURS"):
        RescindSettings()
    monkeypatch.setenv("RESCIND_OUTBOX_RETENTION_HOURS", "24")
    assert RescindSettings().processed_events_retention_hours == 48
    monkeypatch.delenv("RESCIND_PROCESSED_EVENTS_RETENTION_HOURS")
    monkeypatch.delenv("RESCIND_OUTBOX_RETENTION_HOURS")
    assert RescindSettings().processed_events_retention_hours == 720
