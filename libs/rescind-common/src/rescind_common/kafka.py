"""Kafka clients configured the way Rescind needs them (kafka-python)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

# kafka-python's clients contact a broker in their constructor and, with none answering, keep trying
# for much longer by default. Loops that build clients (the relays, a consumer reconnecting) give up
# after their request timeout and retry on their next turn, so that they keep going round (and
# ticking their heartbeat, rescind_common.health) while the broker is away.
BOOTSTRAP_TIMEOUT_MS = 10_000


class KafkaSecurity(BaseSettings):
    """How every Kafka client authenticates (`RESCIND_KAFKA_*`). Default: plaintext, as the embedded
    broker speaks. On Kubernetes: `SSL` with the Strimzi KafkaUser's certificate (mutual TLS), so the
    broker knows which service is calling and applies its ACLs."""

    model_config = SettingsConfigDict(env_prefix="RESCIND_KAFKA_", extra="ignore")

    # `SSL` (mutual TLS, as on Kubernetes), `SASL_SSL` or `SASL_PLAINTEXT` for every Kafka client.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # PEM file: the brokers' CA.
    ssl_cafile: Path | None = None
    # PEM file: the client certificate.
    ssl_certfile: Path | None = None
    # PEM file: the client certificate's key.
    ssl_keyfile: Path | None = None
    # SASL mechanism (unset: SCRAM-SHA-512).
    sasl_mechanism: str | None = None
    # SASL user name.
    sasl_username: str | None = None
    # SASL password.
    sasl_password: str | None = None


def security_config() -> dict[str, Any]:
    """kafka-python client options for `KafkaSecurity` (empty for plaintext)."""
    sec = KafkaSecurity()
    if sec.security_protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security_protocol": sec.security_protocol}
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(sec, name)
        if value is not None:
            config[name] = str(value)
    if sec.security_protocol.startswith("SASL"):
        config["sasl_mechanism"] = sec.sasl_mechanism or "SCRAM-SHA-512"
        config["sasl_plain_username"] = sec.sasl_username
        config["sasl_plain_password"] = sec.sasl_password
    return config


def make_producer(bootstrap: str, client_id: str, **overrides: Any) -> KafkaProducer:
    """acks=all, idempotent, and no auto-created topics (they come back with the wrong partition count)."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap.split(","),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "allow_auto_create_topics": False,
        "linger_ms": 5,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
        "max_block_ms": 10_000,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "reconnect_backoff_ms": 200,
        "reconnect_backoff_max_ms": 2_000,
        **security_config(),
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_admin(bootstrap: str, client_id: str) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id=client_id,
        request_timeout_ms=10_000,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        reconnect_backoff_ms=200,
        reconnect_backoff_max_ms=2_000,
        **security_config(),
    )


def ensure_topics(
    admin: KafkaAdminClient, topics: Iterable[str], *, partitions: int, replication_factor: int
) -> list[str]:
    """Create the topics that are missing; return the names it created."""
    wanted = list(dict.fromkeys(topics))
    existing = set(admin.list_topics())
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    with contextlib.suppress(TopicAlreadyExistsError):  # another relay won the race
        admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor) for t in missing]
        )
    log.info("created topics %s", missing)
    return missing


def broker_reachable(bootstrap: str, timeout: float = 1.0) -> bool:
    """Readiness probe: can a TCP connection be made to any bootstrap server?"""
    import socket

    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False
