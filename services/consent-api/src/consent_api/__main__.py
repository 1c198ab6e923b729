"""`consent-api migrate | serve | relay`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from consent_api.config import ConsentSettings
from rescind_common.logs import configure_logging
from rescind_common.metrics import serve_metrics

log = logging.getLogger("consent_api")


def _serve(settings: ConsentSettings, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "consent_api.main:create_app",
        factory=True,
        host=settings.consent_host,
        port=settings.consent_port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _relay(settings: ConsentSettings) -> None:
    from consent_api.relay import build_relay

    relay = build_relay(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        relay.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    relay.run()


def _consumer(settings: ConsentSettings) -> None:
    from consent_api.consumer import build_consumer

    consumer = build_consumer(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        consumer.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consent-api")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    serve = sub.add_parser("serve", help="run the HTTP API (and the expiry scheduler)")
    serve.add_argument("--workers", type=int, default=1)
    sub.add_parser("relay", help="publish the outbox to Kafka")
    sub.add_parser("consumer", help="consume notice events (per-licensee status of each revocation)")
    args = parser.parse_args(argv)

    settings = ConsentSettings()
    configure_logging(settings.log_level)
    if args.command in ("relay", "consumer"):
        # No HTTP API in these processes: Prometheus scrapes RESCIND_METRICS_PORT (when set).
        serve_metrics(settings.metrics_host, settings.metrics_port)
    if args.command == "migrate":
        from consent_api.migrate import upgrade

        upgrade(settings.consent_database_url)
        log.info("migrations applied")
    elif args.command == "serve":
        _serve(settings, args.workers)
    elif args.command == "relay":
        _relay(settings)
    else:
        _consumer(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
