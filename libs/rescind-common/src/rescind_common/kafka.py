"""Kafka clients configured the way Rescind needs them (kafka-python)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


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
        "reconnect_backoff_ms": 200,
        "reconnect_backoff_max_ms": 2_000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_admin(bootstrap: str, client_id: str) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id=client_id,
        request_timeout_ms=10_000,
        reconnect_backoff_ms=200,
        reconnect_backoff_max_ms=2_000,
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
