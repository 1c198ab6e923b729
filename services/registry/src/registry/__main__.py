"""`registry migrate | serve | consumer`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from registry.config import RegistrySettings
from rescind_common.logs import configure_logging
from rescind_common.metrics import serve_metrics

log = logging.getLogger("registry")


def _serve(settings: RegistrySettings, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "registry.main:create_app",
        factory=True,
        host=settings.registry_host,
        port=settings.registry_port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _consumer(settings: RegistrySettings) -> None:
    from registry.consumer import build_consumer

    consumer = build_consumer(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        consumer.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registry")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--workers", type=int, default=1)
    sub.add_parser("consumer", help="keep the consent projection up to date from the consent topic")
    args = parser.parse_args(argv)

    settings = RegistrySettings()
    configure_logging(settings.log_level)
    if args.command == "consumer":
        # No HTTP API in this process: Prometheus scrapes RESCIND_METRICS_PORT (when set).
        serve_metrics(settings.metrics_host, settings.metrics_port)
    if args.command == "migrate":
        from registry.migrate import upgrade

        upgrade(settings.registry_database_url)
        log.info("migrations applied")
    elif args.command == "serve":
        _serve(settings, args.workers)
    else:
        _consumer(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
