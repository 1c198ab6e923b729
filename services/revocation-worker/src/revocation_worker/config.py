"""revocation-worker settings: `RESCIND_*` shared ones plus `RESCIND_WORKER_*`."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from rescind_common.keyring import check_ring
from rescind_common.settings import RescindSettings

# Svix-like: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, then every 10 h until the window ends.
DEFAULT_RETRY_SCHEDULE = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0]


class WorkerSettings(RescindSettings):
    """revocation-worker's own settings (`RESCIND_WORKER_*`), beside the shared ones."""

    # The API seals endpoint secrets and delivery opens them to sign; intake alone asks the registry.
    PROCESS_SECRETS: ClassVar[dict[str, frozenset[str]]] = {
        "migrate": frozenset({"worker_database_url"}),
        "serve": frozenset(
            {
                "worker_database_url",
                "worker_secret_key",
                "worker_secret_keys",
                "worker_audit_signing_key_file",
            }
        ),
        "worker --role all": frozenset(
            {"worker_database_url", "worker_secret_key", "worker_secret_keys", "worker_registry_token"}
        ),
        "worker --role intake": frozenset({"worker_database_url", "worker_registry_token"}),
        "worker --role delivery": frozenset(
            {"worker_database_url", "worker_secret_key", "worker_secret_keys"}
        ),
    }
    PRODUCTION_SECRETS: ClassVar[frozenset[str]] = frozenset(
        {"worker_registry_token", "worker_audit_signing_key_file"}
    )
    PRODUCTION_ANY_OF: ClassVar[tuple[frozenset[str], ...]] = (
        frozenset({"worker_secret_key", "worker_secret_keys"}),
    )

    # SQLAlchemy URL; `postgresql://user@host/db` in production.
    worker_database_url: str = "sqlite:///.rescind/worker.db"
    # Where `revocation-worker serve` listens.
    worker_host: str = "127.0.0.1"
    # Its port.
    worker_port: int = Field(default=8003, ge=1, le=65535)
    # Base of `samples_url` and `ack_url` in webhooks.
    worker_public_url: str = "http://127.0.0.1:8003"
    # Consumer group on the consent and license topics.
    worker_consumer_group: str = "revocation-worker"
    # How long a fetch may wait for records. The consent topic -> notices hop is on every
    # revocation's path: a short fetch wait (see
    # rescind_common.consumer.EventConsumer; Apache Kafka answers at once, Tansu holds the fetch).
    worker_consumer_fetch_max_wait_ms: int = Field(default=100, ge=1, le=30_000)
    # Where the holders lookup lives (the registry).
    worker_registry_url: str = "http://127.0.0.1:8002"
    # The token for the registry's holders lookup: a `service` token with scope `holders` and the
    # registry's audience (an operator token works too). Development: minted locally.
    worker_registry_token: str | None = None
    # Base64 of 32 bytes; encrypts endpoint secrets at rest. The single key of a deployment from before
    # key ids: key id `v1` of the keyring below. Development (no key set at all): generated under
    # state_dir, as `v1`.
    worker_secret_key: str | None = None
    # The keyring that seals endpoint secrets, a JSON object of key id -> base64 of 32 bytes. Every key
    # here (and RESCIND_WORKER_SECRET_KEY, as `v1`) opens what it sealed; new secrets and
    # `revocation-worker keys rotate` use RESCIND_WORKER_SECRET_KEY_ID. docs/operations.md: key rotation.
    worker_secret_keys: dict[str, str] = {}
    # The id of the current key (required when there are several).
    worker_secret_key_id: str | None = None
    # A notice's acknowledgement deadline in calendar months from the revocation (GDPR Art. 12(3):
    # one month; Jan 31 + 1 -> the last day of February). A licensee's policy may override it.
    worker_notice_deadline_months: int = Field(default=1, ge=1, le=120)
    # The deadline in days instead (fractions allowed); when set it wins over the months.
    worker_notice_deadline_days: float | None = Field(default=None, gt=0)
    # An unanswered notice gets a `revocation.reminder` webhook this long before its deadline (a
    # notice made closer to its deadline than that: half-way to it).
    worker_reminder_before_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    # Samples carried in the webhook body; the rest are at `samples_url`.
    worker_inline_samples: int = Field(default=1000, ge=1)
    # Delivery backoff steps, in seconds (the last repeats until the window ends).
    worker_retry_schedule_seconds: list[float] = DEFAULT_RETRY_SCHEDULE
    # How long a delivery is retried before it is dead-lettered.
    worker_retry_window_seconds: float = Field(default=72 * 3600.0, gt=0)
    # ± fraction of each backoff step.
    worker_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    # Cap on an endpoint's Retry-After.
    worker_max_retry_after_seconds: float = Field(default=3600.0, gt=0)
    # An endpoint failing with no success for this long is disabled and ops are told.
    worker_disable_after_seconds: float = Field(default=5 * 24 * 3600.0, gt=0)
    # One webhook POST.
    worker_delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    # Deliveries in flight in all, per process.
    worker_delivery_concurrency: int = Field(default=500, ge=1)
    # Deliveries in flight per endpoint, per process: a slow endpoint never delays other licensees.
    worker_endpoint_concurrency: int = Field(default=10, ge=1)
    # Deliveries in flight per licensee (all its endpoints), per process; below the delivery
    # concurrency, so that one licensee's storm always leaves slots for the others' deliveries.
    worker_licensee_concurrency: int = Field(default=100, ge=1)
    # Connections (deliveries in flight) per destination host and port, whoever's endpoints point
    # there, per process: many endpoints at one third party cannot flood it nor take every slot.
    worker_host_concurrency: int = Field(default=100, ge=1)
    # Where nothing signals new work (another process on SQLite, a consumer without the batch
    # hook), loops poll this often; where something does, they still look every idle-wake seconds.
    worker_poll_interval_seconds: float = Field(default=0.1, gt=0)
    # Where loops are woken by a signal (new notices, consumed batches, NOTIFY), they still look
    # this often: expired leases of a crashed worker, deliveries made through the API. Retries due
    # sooner wake the loop at their time.
    worker_idle_wake_seconds: float = Field(default=1.0, gt=0)
    # How often the overdue sweep runs and the notice gauges are refreshed.
    worker_sweep_interval_seconds: float = Field(default=5.0, gt=0)
    # Endpoints one licensee may have (active or disabled; deleted ones do not count): each one is
    # another POST of every notice, so this bounds what one licensee can aim at a third party.
    worker_max_endpoints_per_licensee: int = Field(default=10, ge=1)
    # `POST /v1/notices/{id}/redeliver` requests one licensee may make per minute (per API
    # process); more are answered 429 with Retry-After. Endpoint registrations (a new endpoint is
    # sent every undelivered notice) have a budget of their own at the same rate.
    worker_redeliver_per_minute: float = Field(default=6.0, gt=0)
    # ... and at once, after a quiet spell.
    worker_redeliver_burst: int = Field(default=10, ge=1)
    # A redelivery of a finished delivery is sent at the earliest this long after its last attempt:
    # looping redeliver on one notice sends it at most once per interval per endpoint.
    worker_redeliver_interval_seconds: float = Field(default=60.0, ge=0)
    # Secret rotation: the old secret keeps signing (next to the new one) this long.
    worker_rotation_grace_seconds: float = Field(default=24 * 3600.0, ge=0)
    # SSRF: networks (CIDRs) endpoints may resolve to despite being private/loopback/link-local.
    # Cloud metadata addresses are refused always. `make run` allows loopback (and plain http).
    worker_allow_networks: list[str] = []
    # Accept plain `http://` endpoint URLs (local demos only).
    worker_allow_http: bool = False
    # Ed25519 PEM private key that signs audit checkpoints (published at /.well-known/jwks.json).
    # Development: generated under state_dir; production refuses to serve without it.
    worker_audit_signing_key_file: Path | None = None
    # Connection pool size.
    worker_db_pool_size: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _keys_are_well_formed(self) -> WorkerSettings:
        check_ring(
            self.worker_secret_keys,
            self.worker_secret_key_id,
            self.worker_secret_key,
            ("RESCIND_WORKER_SECRET_KEYS", "RESCIND_WORKER_SECRET_KEY_ID", "RESCIND_WORKER_SECRET_KEY"),
        )
        return self

    @model_validator(mode="after")
    def _retry_schedule_not_empty(self) -> WorkerSettings:
        if not self.worker_retry_schedule_seconds:
            raise ValueError("RESCIND_WORKER_RETRY_SCHEDULE_SECONDS must not be empty")
        if self.worker_licensee_concurrency >= self.worker_delivery_concurrency:
            raise ValueError(
                f"RESCIND_WORKER_LICENSEE_CONCURRENCY ({self.worker_licensee_concurrency}) must be below "
                f"RESCIND_WORKER_DELIVERY_CONCURRENCY ({self.worker_delivery_concurrency}): one licensee "
                "must never hold every delivery slot"
            )
        return self

    @model_validator(mode="after")
    def _idle_loops_tick_in_time(self) -> WorkerSettings:
        # The resolver and the delivery loop tick their heartbeat once per wait: an idle wait near
        # the stale window would read as wedged, and Kubernetes would restart healthy pods for ever.
        longest = max(self.worker_idle_wake_seconds, self.worker_poll_interval_seconds)
        if self.metrics_port and self.health_stale_seconds < 2 * longest:
            raise ValueError(
                f"RESCIND_HEALTH_STALE_SECONDS ({self.health_stale_seconds:g}) must be at least twice "
                f"the worker's longest idle wait ({longest:g} s: RESCIND_WORKER_IDLE_WAKE_SECONDS, "
                "RESCIND_WORKER_POLL_INTERVAL_SECONDS), or idle loops would read as wedged"
            )
        return self
