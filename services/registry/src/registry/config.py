"""registry settings: `RESCIND_*` shared ones plus `RESCIND_REGISTRY_*`."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from rescind_common.settings import RescindSettings


class RegistrySettings(RescindSettings):
    """The registry's own settings (`RESCIND_REGISTRY_*`), beside the shared ones."""

    PROCESS_SECRETS: ClassVar[dict[str, frozenset[str]]] = {
        **{process: frozenset({"registry_database_url"}) for process in ("migrate", "relay", "consumer")},
        "serve": frozenset({"registry_database_url", "registry_audit_signing_key_file"}),
    }
    PRODUCTION_SECRETS: ClassVar[frozenset[str]] = frozenset({"registry_audit_signing_key_file"})

    # SQLAlchemy URL; `postgresql://user@host/db` in production.
    registry_database_url: str = "sqlite:///.rescind/registry.db"
    # Where `registry serve` listens.
    registry_host: str = "127.0.0.1"
    # Its port.
    registry_port: int = Field(default=8002, ge=1, le=65535)
    # Ed25519 PEM private key that signs audit checkpoints (published at /.well-known/jwks.json).
    # Development: generated under state_dir; production refuses to serve without it.
    registry_audit_signing_key_file: Path | None = None
    # Connection pool size.
    registry_db_pool_size: int = Field(default=10, ge=1)
    # Consumer group of `registry consumer` (the consent topic → the registry's projection).
    registry_consumer_group: str = "registry"
    # Attempts at a record before it is dead-lettered to `<topic>.registry.dlq`.
    registry_consumer_max_retries: int = Field(default=5, ge=0)
    # Off the path to buyers: a long fetch wait, so polls are bigger and cost less per record.
    registry_consumer_fetch_max_wait_ms: int = Field(default=500, ge=1, le=30_000)
    # A license asked for right after a grant: how long to wait for the grant to reach the projection.
    registry_projection_wait_seconds: float = Field(default=3.0, ge=0, le=60)
    # How often it looks meanwhile.
    registry_projection_poll_seconds: float = Field(default=0.05, gt=0, le=5)
    # Samples per license call (413 above).
    registry_max_license_samples: int = Field(default=100_000, ge=1)
    # Samples per holders lookup (413 above).
    registry_max_holder_samples: int = Field(default=10_000, ge=1)
    # Licenses named by one model (413 above).
    registry_max_model_licenses: int = Field(default=10_000, ge=1)
