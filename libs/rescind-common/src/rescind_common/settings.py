"""Settings shared by every Rescind service, read from `RESCIND_*` variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["development", "production"]

DEV_STATE_DIR = Path(".rescind")


class RescindSettings(BaseSettings):
    """Base class: each service subclasses it and adds its own `RESCIND_<SERVICE>_*` fields."""

    model_config = SettingsConfigDict(env_prefix="RESCIND_", extra="ignore")

    # The secret settings each process of the service reads, by its command line (`serve`, `relay`,
    # `worker --role intake`...). deploy/k8s gives each pod these and no others
    # (tests/deploy/test_secrets.py); a process never needs another's.
    PROCESS_SECRETS: ClassVar[dict[str, frozenset[str]]] = {}
    # Of those, what production refuses to start a process without (`require_secrets`).
    PRODUCTION_SECRETS: ClassVar[frozenset[str]] = frozenset()
    # Secrets of which production needs one, whichever (a single key, or a keyring of them).
    PRODUCTION_ANY_OF: ClassVar[tuple[frozenset[str], ...]] = ()

    # `production` refuses development keys, the development issuer and missing key settings.
    profile: Profile = "development"
    # Where `make run` keeps development keys and SQLite files.
    state_dir: Path = DEV_STATE_DIR

    # How often the serve process folds every audit chain head into a signed checkpoint (one replica
    # writes: a PostgreSQL advisory lock); none is written when no head moved.
    audit_checkpoint_interval_seconds: float = Field(default=300.0, gt=0)

    # Comma-separated Kafka bootstrap servers.
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Consent events (consent-api's outbox), read by the registry and revocation-worker.
    kafka_consent_topic: str = "rescind.consent.v1"
    # Notice events (revocation-worker's outbox), read by consent-api.
    kafka_notice_topic: str = "rescind.notice.v1"
    # The registry's license events (samples withdrawn from a license), read by revocation-worker.
    kafka_license_topic: str = "rescind.license.v1"
    # Partitions when a relay creates a topic.
    kafka_topic_partitions: int = Field(default=6, ge=1)
    # Replication when a relay creates a topic (3 in production).
    kafka_replication_factor: int = Field(default=1, ge=1)

    # Required `iss` of caller tokens (JWT).
    auth_issuer: str = "rescind-dev"
    # The `aud` each service requires: a token for one service is refused (401) by the others.
    # Development tokens (`rescind token`) carry all three; a service token carries its callee's alone.
    auth_consent_audience: str = "rescind-consent-api"
    # The registry's.
    auth_registry_audience: str = "rescind-registry"
    # revocation-worker's.
    auth_worker_audience: str = "rescind-revocation-worker"
    # Deprecated: one `aud` every service also accepts, for existing tokens of subjects, licensees and
    # operators (never for a `service` token, which must name its callee). Unset: none.
    auth_audience: str | None = None
    # Pinned JWT algorithms (a JSON list); `none` is never accepted.
    auth_algorithms: list[str] = ["ES256"]
    # Production: verify caller tokens with keys from this JWKS.
    auth_jwks_url: str | None = None
    # Or with this PEM public key.
    auth_public_key_file: Path | None = None
    # Unused by the services; development tokens are signed with `<state_dir>/keys/auth-es256.pem`.
    auth_private_key_file: Path | None = None
    # Clock skew allowed on `exp` and `nbf`.
    auth_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Verified tokens kept per process (the exact token string, until `exp` + leeway, at most 5 min,
    # least recently used out first) so a repeat skips the signature check; failures are never kept.
    # 0 turns it off.
    auth_token_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    # With a JWKS: the key set is fetched again once it is this old, so a key removed from the
    # identity provider stops verifying tokens within this many seconds (tokens it verified
    # included: the token cache keeps none longer than the key set that verified it).
    auth_jwks_cache_seconds: float = Field(default=300.0, ge=1, le=86_400)
    # A token naming a key the set lacks (a new key, or a forged `kid`) fetches the set again at
    # most this often; tokens with unknown keys in between are refused.
    auth_jwks_refetch_seconds: float = Field(default=30.0, ge=0, le=3600)

    # Request bodies above this are refused with 413 (batch endpoints have their own limit).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The body limit of the batch endpoints (samples batch, consents, revocations, licenses,
    # models, holders).
    max_batch_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    # Requests a second per caller: a token's `sub` + role, or the client address without a valid
    # token; over it 429 problem JSON with Retry-After. Operators too; only the revocation pipeline's
    # own lookups (a `service` token calling POST /v1/holders with its scope), /healthz, /readyz and
    # /metrics are not limited; each replica counts on its own. 0: off.
    rate_limit_per_second: float = Field(default=100.0, ge=0)
    # Requests a caller may make at once before the per-second rate applies (0: off).
    rate_limit_burst: int = Field(default=1000, ge=0)
    # Proxies (CIDRs, a JSON list) whose X-Forwarded-For is believed: a caller without a valid token
    # reaching the service through one is keyed by the rightmost X-Forwarded-For address that is
    # not itself such a proxy. Empty: the socket peer, and the header is ignored (anyone can send it).
    trusted_proxies: list[str] = []
    # A POST/PUT/PATCH/DELETE with a body and no token at all (no route takes one) is answered 401
    # after this pause, its body unread: no client with a token waits, and a caller that floods
    # tokenless writes gets a few answers a second per connection instead of thousands. 0: at once.
    unauthenticated_write_delay_seconds: float = Field(default=0.25, ge=0, le=5)

    # JSON logs on stderr; never tokens, secrets or personal data.
    log_level: str = "INFO"
    # Where `relay`, `consumer` and `worker` serve /metrics (Prometheus), /healthz and /readyz.
    metrics_host: str = "127.0.0.1"
    # Their port; nothing is served when unset (`serve` has them on its own port). /healthz is 503
    # when one of the process's loops is wedged; /readyz when its database does not answer or
    # (except `worker --role delivery`) no Kafka broker accepts a connection.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # A loop (relay, consumer, the worker's resolver and delivery loop) that has not gone round for
    # this long fails /healthz (rescind_common.health) and Kubernetes restarts the pod. Keep it above
    # the longest single call a loop may wait on (Kafka and registry request timeouts) and well above
    # the relays' and consumers' idle waits; the worker refuses less than twice its idle wait.
    health_stale_seconds: float = Field(default=60.0, ge=5)
    # Published outbox rows are kept this long so that a lost broker log can be replayed.
    outbox_retention_hours: float = Field(default=72.0, gt=0)
    # On PostgreSQL the relays are woken by NOTIFY (a trigger on `outbox`) when a row commits; they
    # also look this often, in case a notification went missing (SQLite, and PostgreSQL while the
    # LISTEN connection is down: every 50 ms). A database that turns the trigger's NOTIFY off
    # (`ALTER DATABASE <db> SET rescind.outbox_notify = off`) sets this to 0.05.
    outbox_fallback_poll_seconds: float = Field(default=2.0, gt=0, le=3600)
    # Each consumer's processed-event ids are kept this long, then pruned. It must outlast every way
    # an event can come again (an outbox replay, refused at start otherwise; the topic's own
    # retention: 7 days on Kubernetes), or a replayed event whose id was pruned would be applied twice.
    processed_events_retention_hours: float = Field(default=720.0, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr.strip(), strict=False)  # ValueError names the bad entry
        return value

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
    def _audiences_are_distinct(self) -> RescindSettings:
        audiences = [*self.token_audiences, *([self.auth_audience] if self.auth_audience else [])]
        if len(set(audiences)) != len(audiences):
            raise ValueError(
                "RESCIND_AUTH_CONSENT_AUDIENCE, RESCIND_AUTH_REGISTRY_AUDIENCE, RESCIND_AUTH_WORKER_AUDIENCE "
                "(and RESCIND_AUTH_AUDIENCE) must all differ: a token for one service must not open another"
            )
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

    def require_secrets(self, process: str) -> None:
        """Production: refuse to start `process` without a secret it reads (ValueError)."""
        if self.profile != "production":
            return
        reads = self.PROCESS_SECRETS.get(process, frozenset())
        needed = reads & self.PRODUCTION_SECRETS
        missing = sorted(f"RESCIND_{name.upper()}" for name in needed if not getattr(self, name))
        for group in self.PRODUCTION_ANY_OF:
            if group & reads and not any(getattr(self, name) for name in group):
                missing.append(" or ".join(sorted(f"RESCIND_{name.upper()}" for name in group)))
        if missing:
            raise ValueError(f"production needs {', '.join(missing)} for `{process}`")

    def audience_of(self, service: str) -> str:
        """The `aud` that `service` (consent-api, registry, revocation-worker) requires."""
        return {
            "consent-api": self.auth_consent_audience,
            "registry": self.auth_registry_audience,
            "revocation-worker": self.auth_worker_audience,
        }[service]

    @property
    def token_audiences(self) -> list[str]:
        """What a development token for a person carries: every service's audience."""
        return [self.auth_consent_audience, self.auth_registry_audience, self.auth_worker_audience]

    @property
    def dev_auth_key_file(self) -> Path:
        return self.state_dir / "keys" / "auth-es256.pem"
