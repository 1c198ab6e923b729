"""How every service's command line runs its processes: the HTTP API, and stoppable loops."""

from __future__ import annotations

import signal
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


def serve_api(factory: str, *, host: str, port: int, workers: int) -> None:
    """Run `factory` (a `module:function` returning the FastAPI app) under uvicorn."""
    import uvicorn

    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


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
