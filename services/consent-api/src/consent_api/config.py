"""consent-api settings: `RESCIND_*` shared ones plus `RESCIND_CONSENT_*`."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from rescind_common.keyring import LEGACY_KEY_ID, check_ring
from rescind_common.settings import RescindSettings


class ConsentSettings(RescindSettings):
    """consent-api's own settings (`RESCIND_CONSENT_*`), beside the shared ones."""

    # The API alone wraps subjects' keys, signs receipts and asks the registry; the relay, the
    # consumer and migrations touch the database only.
    PROCESS_SECRETS: ClassVar[dict[str, frozenset[str]]] = {
        "migrate": frozenset({"consent_database_url"}),
        "serve": frozenset(
            {
                "consent_database_url",
                "consent_master_key",
                "consent_master_keys",
                "consent_subject_pepper",
                "consent_receipt_key_file",
                "consent_registry_token",
            }
        ),
        "relay": frozenset({"consent_database_url"}),
        "consumer": frozenset({"consent_database_url"}),
    }
    PRODUCTION_SECRETS: ClassVar[frozenset[str]] = frozenset({"consent_receipt_key_file"})
    PRODUCTION_ANY_OF: ClassVar[tuple[frozenset[str], ...]] = (
        frozenset({"consent_master_key", "consent_master_keys"}),
    )

    # SQLAlchemy URL; `postgresql://user@host/db` in production.
    consent_database_url: str = "sqlite:///.rescind/consent.db"
    # Where `consent-api serve` listens.
    consent_host: str = "127.0.0.1"
    # Its port.
    consent_port: int = Field(default=8001, ge=1, le=65535)
    # uvicorn processes of `consent-api serve` (`--workers` overrides); each has its own pool,
    # admission slots and expiry scheduler (safe in parallel). PostgreSQL connections grow with it.
    consent_workers: int = Field(default=1, ge=1, le=64)
    # The URL sellers reach this service at; used in receipts ("how to withdraw").
    consent_public_url: str = "http://127.0.0.1:8001"
    # Base64 of 32 random bytes; wraps every per-subject key (lost: every profile unreadable). The
    # single key of a deployment from before key ids: it is key id `v1` of the keyring below.
    # Development (no key set at all): generated under state_dir, as `v1`.
    consent_master_key: str | None = None
    # The master keyring, a JSON object of key id -> base64 of 32 bytes, e.g. {"2027-01": "..."}. Every
    # key here (and RESCIND_CONSENT_MASTER_KEY, as `v1`) unwraps what it wrapped; new subject keys and
    # `consent-api keys rotate` use RESCIND_CONSENT_MASTER_KEY_ID. docs/operations.md: key rotation.
    consent_master_keys: dict[str, str] = {}
    # The id of the current master key (required when there are several).
    consent_master_key_id: str | None = None
    # Base64 of at least 32 random bytes: the pepper of the keyed hash that stores each subject's `sub`,
    # independent of the master key (it must never change: a new one makes every subject new). Unset
    # in a deployment from before it: the legacy pepper derived from master key `v1` is used (and
    # `consent-api keys legacy-pepper` prints it, to set here before `v1` is retired). Development:
    # generated under state_dir (the legacy one when a development master key already exists).
    consent_subject_pepper: str | None = None
    # Ed25519 PEM private key that signs consent receipts. Development: generated under state_dir.
    consent_receipt_key_file: Path | None = None
    # Retired receipt keys, still published in the JWKS so old receipts keep verifying.
    consent_receipt_previous_key_files: list[Path] = []
    # The controller named in receipts and access exports.
    consent_controller_name: str = "Rescind data marketplace (development)"
    # The controller's privacy contact, in receipts and exports.
    consent_controller_contact: str = "privacy@rescind.invalid"
    # The controller's postal address (Kantara CR v1.1 `address`), in receipts and exports.
    consent_controller_address: str = "Example Street 1, 10115 Berlin, Germany (development)"
    # The controller's e-mail (Kantara CR v1.1 `email`).
    consent_controller_email: str = "privacy@rescind.invalid"
    # The controller's phone (Kantara CR v1.1 `phone`).
    consent_controller_phone: str = "+49 30 0000000"
    # The controller's web site (Kantara CR v1.1 `piiControllerUrl`).
    consent_controller_url: str = "https://rescind.invalid"
    # The privacy policy named in receipts and exports.
    consent_policy_url: str = "https://rescind.invalid/privacy"
    # How often the expiry scheduler looks for consents past `expires_at`.
    consent_expiry_interval_seconds: float = Field(default=5.0, gt=0)
    # Run the expiry scheduler in this process (each expiry is one transaction under the subject's
    # row lock, so replicas never double it).
    consent_run_scheduler: bool = True
    # Consumer group of `consent-api consumer` (the notice topic: each licensee's status).
    consent_consumer_group: str = "consent-api"
    # Off the path to buyers (it shows sellers who was told): a long fetch wait, bigger polls.
    consent_consumer_fetch_max_wait_ms: int = Field(default=500, ge=1, le=30_000)
    # The registry answers "which licensees received which samples" for access exports.
    consent_registry_url: str = "http://127.0.0.1:8002"
    # The token for that call: a `service` token with scope `recipients` and the registry's audience
    # (an operator token works too). Development: minted locally.
    consent_registry_token: str | None = None
    # Samples per batch call (413 above).
    consent_max_batch_samples: int = Field(default=10_000, ge=1)
    # Samples per consent.
    consent_max_sample_ids: int = Field(default=100_000, ge=1)
    # Pooled connections. At most this many requests use the database at once (admission control);
    # the others wait up to RESCIND_CONSENT_DB_POOL_TIMEOUT_SECONDS, then get 503 + Retry-After. The
    # worker-thread pool is sized above it, so a request holding a connection never waits for a thread.
    consent_db_pool_size: int = Field(default=10, ge=1)
    # Connections beyond the pool for work outside requests (expiry scheduler, readiness probes).
    consent_db_max_overflow: int = Field(default=4, ge=0)
    # How long a request may wait for a database slot (and a checkout for a connection).
    consent_db_pool_timeout_seconds: float = Field(default=0.5, gt=0, le=30)
    # Requests in progress at once (per process) beyond which the answer is 503 + Retry-After at
    # once, before the body is read or the token checked. None: 4 x the pool size; 0: no limit.
    consent_max_in_flight: int | None = Field(default=None, ge=0)

    @property
    def max_in_flight(self) -> int:
        if self.consent_max_in_flight is None:
            return 4 * self.consent_db_pool_size
        return self.consent_max_in_flight

    @model_validator(mode="after")
    def _keys_are_well_formed(self) -> ConsentSettings:
        check_ring(
            self.consent_master_keys,
            self.consent_master_key_id,
            self.consent_master_key,
            ("RESCIND_CONSENT_MASTER_KEYS", "RESCIND_CONSENT_MASTER_KEY_ID", "RESCIND_CONSENT_MASTER_KEY"),
        )
        if self.consent_subject_pepper is not None:
            try:
                pepper = base64.b64decode(self.consent_subject_pepper, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("RESCIND_CONSENT_SUBJECT_PEPPER is not base64") from None
            if len(pepper) < 32:
                raise ValueError("RESCIND_CONSENT_SUBJECT_PEPPER must be base64 of at least 32 bytes")
        return self

    def require_secrets(self, process: str) -> None:
        """Besides the secrets `process` reads: an API in production needs a pepper, or key `v1` to
        derive the legacy pepper from."""
        super().require_secrets(process)
        if self.profile != "production" or process != "serve":
            return
        if not self.consent_subject_pepper and not self.legacy_master_key:
            raise ValueError(
                "RESCIND_CONSENT_SUBJECT_PEPPER is not set, and the legacy pepper it replaces is "
                "derived from master key 'v1', which is not configured (every subject's identity "
                "would change). Set it to what `consent-api keys legacy-pepper` printed while 'v1' "
                "was configured, or restore 'v1'"
            )

    @property
    def legacy_master_key(self) -> str | None:
        """Master key `v1` as configured (None in development without keys: the key file)."""
        return self.consent_master_key or self.consent_master_keys.get(LEGACY_KEY_ID)

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"
