"""Settings shared by every Rescind service, read from `RESCIND_*` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["development", "production"]

DEV_STATE_DIR = Path(".rescind")


class RescindSettings(BaseSettings):
    """Base class: each service subclasses it and adds its own `RESCIND_<SERVICE>_*` fields."""

    model_config = SettingsConfigDict(env_prefix="RESCIND_", extra="ignore")

    profile: Profile = "development"
    # Where `make run` keeps development keys and SQLite files.
    state_dir: Path = DEV_STATE_DIR

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_consent_topic: str = "rescind.consent.v1"
    kafka_notice_topic: str = "rescind.notice.v1"
    # The registry's license events (samples withdrawn from a license), read by revocation-worker.
    kafka_license_topic: str = "rescind.license.v1"
    kafka_topic_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)

    # Caller tokens (JWT). Algorithms are pinned; `none` is never accepted.
    auth_issuer: str = "rescind-dev"
    auth_audience: str = "rescind"
    auth_algorithms: list[str] = ["ES256"]
    # Production: keys from a JWKS URL. Development: a local PEM key pair.
    auth_jwks_url: str | None = None
    auth_public_key_file: Path | None = None
    auth_private_key_file: Path | None = None
    auth_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Verified tokens kept (until their exp, at most 5 min) so a repeat skips the signature check; 0: off.
    auth_token_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)

    # Request bodies above this are refused with 413 (batch endpoints have their own limit).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    # Per-caller rate limit (token `sub` + role, or client address without a valid token; operators
    # and /healthz, /readyz, /metrics are not limited): tokens a second and the burst saved up.
    # 0 in either turns limiting off.
    rate_limit_per_second: float = Field(default=100.0, ge=0)
    rate_limit_burst: int = Field(default=1000, ge=0)

    log_level: str = "INFO"
    # Processes without an HTTP API (relay, consumers, the worker) serve Prometheus metrics here when
    # a port is set; `serve` exposes them on its own port at /metrics.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Those processes also answer /healthz and /readyz there (rescind_common.health): /healthz turns
    # 503 when one of their loops has not gone round for this long (wedged), and Kubernetes restarts
    # the pod. Longer than any single call a loop may wait on (Kafka and registry request timeouts),
    # and well above the relays' and consumers' idle waits (a few seconds at most).
    health_stale_seconds: float = Field(default=60.0, ge=5)
    # Published outbox rows are kept this long so that a lost broker log can be replayed.
    outbox_retention_hours: float = Field(default=72.0, gt=0)
    # On PostgreSQL the relay is woken by NOTIFY when a row commits; it also looks this often, in case
    # a notification went missing. (SQLite, and PostgreSQL while the LISTEN connection is down: 50 ms.)
    outbox_fallback_poll_seconds: float = Field(default=2.0, gt=0, le=3600)
    # Each consumer's processed-event ids are kept this long, then pruned. It must outlast every way
    # an event can come again (an outbox replay, the topic's own retention: 7 days on Kubernetes),
    # or a replayed event whose id was pruned would be applied twice.
    processed_events_retention_hours: float = Field(default=720.0, gt=0)

    @model_validator(mode="after")
    def _refuse_dev_keys_in_production(self) -> RescindSettings:
        if self.profile == "production":
            if "none" in {a.lower() for a in self.auth_algorithms}:
                raise ValueError("RESCIND_AUTH_ALGORITHMS must not contain 'none'")
            if self.auth_jwks_url is None and self.auth_public_key_file is None:
                raise ValueError("production needs RESCIND_AUTH_JWKS_URL or RESCIND_AUTH_PUBLIC_KEY_FILE")
            if self.auth_issuer == "rescind-dev":
                raise ValueError("production refuses the development issuer 'rescind-dev'")
        return self

    @model_validator(mode="after")
    def _processed_events_outlast_replays(self) -> RescindSettings:
        if self.processed_events_retention_hours <= self.outbox_retention_hours:
            raise ValueError(
                "RESCIND_PROCESSED_EVENTS_RETENTION_HOURS "
                f"({self.processed_events_retention_hours:g}) must be longer than "
                f"RESCIND_OUTBOX_RETENTION_HOURS ({self.outbox_retention_hours:g}): an event replayed "
                "from the outbox after its processed id was pruned would be applied twice"
            )
        return self

    @property
    def dev_auth_key_file(self) -> Path:
        return self.state_dir / "keys" / "auth-es256.pem"
