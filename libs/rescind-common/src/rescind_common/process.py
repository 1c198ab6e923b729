"""How every service's command line runs its processes: the HTTP API, and stoppable loops."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from rescind_common.health import Check, Heartbeat
    from rescind_common.settings import RescindSettings


class Stoppable(Protocol):
    stop_event: threading.Event

    def run(self) -> None: ...


class Probed(Stoppable, Protocol):
    heartbeat: Heartbeat


# The listening socket's receive buffer, inherited by every accepted connection. An answer sent
# before a large body was read (401, 413, 429) closes the connection; the kernel has then taken in
# (and must throw away) up to this much of the body. Autotuning would grant a fast sender
# megabytes per connection; this is plenty for a nearby proxy and for `make run`.
RECEIVE_BUFFER_BYTES = 256 * 1024


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with RECEIVE_BUFFER_BYTES (as uvicorn binds, plus that)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve_api(factory: str, *, host: str, port: int, workers: int) -> None:
    """Run `factory` (a `module:function` returning the FastAPI app) under uvicorn, on
    `listening_socket` (what uvicorn.run does, with our socket)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        # As uvicorn says it: a port in use is a message and an exit code, not a traceback.
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    try:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if workers <= 1 and not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE: the app could not start


def run_until_signalled(loop: Stoppable) -> None:
    """Run a relay or consumer loop; SIGTERM/SIGINT set its stop flag so it ends cleanly
    (a consumer commits its offsets on the way out)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        loop.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop.run()


def run_probed(settings: RescindSettings, loop: Probed, *, database: Engine | Check) -> None:
    """A relay or consumer as its command runs it: /metrics, /healthz (its loop) and /readyz
    (`database`, the broker) on RESCIND_METRICS_PORT, then the loop until signalled."""
    from rescind_common.health import serve_health

    serve_health(settings, [loop.heartbeat], database=database, bootstrap=settings.kafka_bootstrap)
    run_until_signalled(loop)
