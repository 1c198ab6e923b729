"""The staleness rule of the health probes, on values (an injected clock, no waiting out the window),
and the worker settings it forbids."""

from __future__ import annotations

import time

import pytest

from rescind_common.health import Heartbeat, stale_loops
from revocation_worker.config import WorkerSettings


def test_a_loop_is_stale_only_once_it_has_not_ticked_for_the_whole_window() -> None:
    relay, consumer = Heartbeat("relay"), Heartbeat("consumer")
    relay.last, consumer.last = 1000.0, 1030.0
    assert stale_loops([relay, consumer], 1060.0, 60) == []  # exactly the window: still alive
    assert stale_loops([relay, consumer], 1060.5, 60) == [("relay", 60.5)]
    assert stale_loops([relay, consumer], 1100.0, 60) == [("relay", 100.0), ("consumer", 70.0)]
    consumer.tick()  # a tick takes the real clock, which is far past these values
    assert stale_loops([consumer], time.monotonic(), 60) == []


def test_the_worker_refuses_idle_waits_that_would_read_as_wedged() -> None:
    with pytest.raises(ValueError, match="RESCIND_HEALTH_STALE_SECONDS"):
        WorkerSettings(metrics_port=9090, health_stale_seconds=60, worker_idle_wake_seconds=40)
    assert WorkerSettings(metrics_port=9090, health_stale_seconds=100, worker_idle_wake_seconds=40)
    # No probes served (no metrics port, as `make run`): nothing to read as wedged.
    assert WorkerSettings(health_stale_seconds=60, worker_idle_wake_seconds=40)
