"""`registry migrate | serve | consumer | relay`."""

from __future__ import annotations

import argparse
import logging
import sys

from registry.config import RegistrySettings
from rescind_common.logs import configure_logging
from rescind_common.process import run_probed, serve_api

log = logging.getLogger("registry")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registry")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--workers", type=int, default=1)
    sub.add_parser("consumer", help="keep the consent projection up to date from the consent topic")
    sub.add_parser("relay", help="publish the outbox (license events) to Kafka")
    args = parser.parse_args(argv)

    settings = RegistrySettings()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        from registry.migrate import upgrade

        upgrade(settings.registry_database_url)
        log.info("migrations applied")
    elif args.command == "serve":
        serve_api(
            "registry.main:create_app",
            host=settings.registry_host,
            port=settings.registry_port,
            workers=args.workers,
        )
    elif args.command == "relay":
        from registry.relay import build_relay

        relay = build_relay(settings)
        run_probed(settings, relay, database=relay.engine)
    else:
        from registry.consumer import build_consumer

        consumer = build_consumer(settings)
        run_probed(settings, consumer, database=consumer.database_reachable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
