"""`consent-api migrate | serve | relay | consumer`."""

from __future__ import annotations

import argparse
import sys

from consent_api.config import ConsentSettings
from rescind_common.cli import Command, Service
from rescind_common.process import run_probed


def relay(settings: ConsentSettings, args: argparse.Namespace) -> None:
    from consent_api.relay import build_relay

    loop = build_relay(settings)
    run_probed(settings, loop, database=loop.engine)


def consumer(settings: ConsentSettings, args: argparse.Namespace) -> None:
    from consent_api.consumer import build_consumer

    loop = build_consumer(settings)
    run_probed(settings, loop, database=loop.database_reachable)


CLI = Service(
    prog="consent-api",
    package="consent_api",
    settings=ConsentSettings,
    prefix="consent",
    serve_help="run the HTTP API (and the expiry scheduler)",
    workers_default=lambda s: s.consent_workers,
    commands={
        "relay": Command("publish the outbox to Kafka", relay),
        "consumer": Command("consume notice events (per-licensee status of each revocation)", consumer),
    },
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
