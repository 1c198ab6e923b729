"""`consent-api migrate | serve | relay | consumer`."""

from __future__ import annotations

import argparse
import logging
import sys

from consent_api.config import ConsentSettings
from rescind_common.logs import configure_logging
from rescind_common.process import run_probed, serve_api

log = logging.getLogger("consent_api")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consent-api")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    serve = sub.add_parser("serve", help="run the HTTP API (and the expiry scheduler)")
    serve.add_argument("--workers", type=int, default=None, help="default: RESCIND_CONSENT_WORKERS")
    sub.add_parser("relay", help="publish the outbox to Kafka")
    sub.add_parser("consumer", help="consume notice events (per-licensee status of each revocation)")
    args = parser.parse_args(argv)

    settings = ConsentSettings()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        from consent_api.migrate import upgrade

        upgrade(settings.consent_database_url)
        log.info("migrations applied")
    elif args.command == "serve":
        serve_api(
            "consent_api.main:create_app",
            host=settings.consent_host,
            port=settings.consent_port,
            workers=args.workers or settings.consent_workers,
        )
    elif args.command == "relay":
        from consent_api.relay import build_relay

        relay = build_relay(settings)
        run_probed(settings, relay, database=relay.engine)
    else:
        from consent_api.consumer import build_consumer

        consumer = build_consumer(settings)
        run_probed(settings, consumer, database=consumer.database_reachable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
