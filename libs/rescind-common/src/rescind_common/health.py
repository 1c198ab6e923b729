"""Liveness and readiness for processes without an HTTP API (relays, consumers, the worker's roles).

They serve `GET /metrics`, `GET /healthz` and `GET /readyz` on the metrics port
(`RESCIND_METRICS_HOST`/`RESCIND_METRICS_PORT`), from a daemon thread.

- Liveness is about the loops, not about what they depend on: every loop owns a `Heartbeat` and
  ticks it on each turn, idle waits and outage retries included (those waits are bounded). A loop
  that has not ticked for `RESCIND_HEALTH_STALE_SECONDS` is wedged (a call that never returns, a
  dead thread) and `/healthz` answers 503 naming it, so Kubernetes restarts the pod. An HTTP thread
  that answers while the loops are stuck must not pass for health.
- Readiness is about dependencies: `/readyz` is 200 only when the process's database answers
  `SELECT 1` and, where it uses one, the Kafka broker accepts a connection. Each check runs on a
  thread of its own and is waited for briefly, so the probe answers in time even when the database
  hangs; a check still hung from an earlier probe is waited for again, never started twice.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder, gzip_accepted
from sqlalchemy.engine import Engine

from rescind_common.db import ping
from rescind_common.kafka import broker_reachable
from rescind_common.problems import PROBLEM_MEDIA_TYPE, problem_body
from rescind_common.settings import RescindSettings

log = logging.getLogger(__name__)

Check = Callable[[], bool]

# How long a probe waits for the readiness checks (together: they run at once). Below the probes'
# `timeoutSeconds` in deploy/k8s, so that a hung dependency reads as "not ready", not as a timeout.
CHECK_TIMEOUT = 1.5


class Heartbeat:
    """When a loop last went round. `tick()` is one attribute store (atomic under the GIL), cheap
    enough for the hottest loop; the health server reads `last` from its own thread."""

    __slots__ = ("last", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        # Born ticking: a loop is given the stale window to make its first turn.
        self.last = time.monotonic()

    def tick(self) -> None:
        self.last = time.monotonic()

    def age(self, now: float) -> float:
        return max(0.0, now - self.last)


def stale_loops(heartbeats: Iterable[Heartbeat], now: float, stale_after: float) -> list[tuple[str, float]]:
    """(name, seconds since its last tick) of every loop that has not ticked for over `stale_after`."""
    return [(hb.name, hb.age(now)) for hb in heartbeats if hb.age(now) > stale_after]


@dataclass
class _Run:
    done: threading.Event
    ok: bool = False


class BoundedCheck:
    """A readiness check run on a daemon thread and waited for at most `timeout`. At most one run at
    a time: while one hangs (a database that accepted the connection and went silent), later probes
    wait on it instead of piling up threads."""

    def __init__(self, name: str, check: Check) -> None:
        self.name = name
        self.check = check
        self._lock = threading.Lock()
        self._run: _Run | None = None

    def start(self) -> _Run:
        with self._lock:
            run = self._run
            if run is None or run.done.is_set():
                run = self._run = _Run(threading.Event())
                threading.Thread(
                    target=self._execute, args=(run,), name=f"readyz-{self.name}", daemon=True
                ).start()
            return run

    def _execute(self, run: _Run) -> None:
        try:
            run.ok = bool(self.check())
        except Exception:
            run.ok = False
        finally:
            run.done.set()


def check_all(checks: Iterable[BoundedCheck], timeout: float) -> dict[str, str]:
    """Every check at once, each given until `timeout` from now: name -> "ok", "down" or "timeout"."""
    runs = [(c.name, c.start()) for c in checks]
    deadline = time.monotonic() + timeout
    states = {}
    for name, run in runs:
        if not run.done.wait(max(0.0, deadline - time.monotonic())):
            states[name] = "timeout"
        else:
            states[name] = "ok" if run.ok else "down"
    return states


class HealthServer:
    """/metrics, /healthz and /readyz on `host`:`port` (0: any free port) from a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        heartbeats: Iterable[Heartbeat],
        readiness: Mapping[str, Check],
        *,
        stale_after: float,
        check_timeout: float = CHECK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.heartbeats = list(heartbeats)
        self.checks = [BoundedCheck(name, check) for name, check in readiness.items()]
        self.stale_after = stale_after
        self.check_timeout = check_timeout
        self.clock = clock
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="health", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def liveness(self) -> tuple[int, dict[str, Any]]:
        now = self.clock()
        stale = stale_loops(self.heartbeats, now, self.stale_after)
        if not stale:
            ages = {hb.name: round(hb.age(now), 3) for hb in self.heartbeats}
            return 200, {"status": "ok", "loops": ages}
        names = ", ".join(f"{name} ({age:.0f} s)" for name, age in stale)
        detail = f"Loops that have not gone round for over {self.stale_after:g} s: {names}."
        log.warning("liveness: %s", detail)
        return 503, problem_body(
            503,
            detail,
            instance="/healthz",
            stale=[{"loop": name, "age_seconds": round(age, 3)} for name, age in stale],
            stale_after_seconds=self.stale_after,
        )

    def readiness(self) -> tuple[int, dict[str, Any]]:
        states = check_all(self.checks, self.check_timeout)
        if all(state == "ok" for state in states.values()):
            return 200, {"status": "ok", "checks": states}
        down = ", ".join(name for name, state in states.items() if state != "ok")
        return 503, problem_body(503, f"Not ready: {down}.", instance="/readyz", checks=states)


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._metrics()
            elif path == "/healthz":
                self._json(*server.liveness())
            elif path == "/readyz":
                self._json(*server.readiness())
            else:
                self._json(404, problem_body(404, "Not found.", instance=path))

        def _metrics(self) -> None:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(REGISTRY)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                body = gzip.compress(body)
                self.send_header("Content-Encoding", "gzip")
            self._end(body)

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if status < 400 else PROBLEM_MEDIA_TYPE)
            self._end(json.dumps(body).encode())

        def _end(self, body: bytes) -> None:
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the kubelet probes every few seconds: no access log

    return Handler


def serve_health(
    settings: RescindSettings,
    heartbeats: Iterable[Heartbeat],
    *,
    database: Engine | Check,
    bootstrap: str | None,
) -> HealthServer | None:
    """What a background command calls before running its loops: /metrics, /healthz (these loops)
    and /readyz (`database`: an engine to `SELECT 1` on, or a check; and the broker at `bootstrap`
    unless None: a process without Kafka) on RESCIND_METRICS_PORT. Nothing when no port is set
    (`make run` starts every process on one machine)."""
    if not settings.metrics_port:
        return None
    db_check = functools.partial(ping, database) if isinstance(database, Engine) else database
    readiness: dict[str, Check] = {"database": db_check}
    if bootstrap is not None:
        readiness["kafka"] = lambda: broker_reachable(bootstrap, timeout=CHECK_TIMEOUT / 2)
    server = HealthServer(
        settings.metrics_host,
        settings.metrics_port,
        heartbeats,
        readiness,
        stale_after=settings.health_stale_seconds,
    )
    return server.start()
