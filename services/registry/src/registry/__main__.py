"""`registry migrate | serve | consumer | relay`."""

from __future__ import annotations

import argparse
import sys

from registry.config import RegistrySettings
from rescind_common.cli import Command, Service
from rescind_common.process import run_probed


def consumer(settings: RegistrySettings, args: argparse.Namespace) -> None:
    from registry.consumer import build_consumer

    loop = build_consumer(settings)
    run_probed(settings, loop, database=loop.database_reachable)


def relay(settings: RegistrySettings, args: argparse.Namespace) -> None:
    from registry.relay import build_relay

    loop = build_relay(settings)
    run_probed(settings, loop, database=loop.engine)


CLI = Service(
    prog="registry",
    package="registry",
    settings=RegistrySettings,
    prefix="registry",
    commands={
        "consumer": Command("keep the consent projection up to date from the consent topic", consumer),
        "relay": Command("publish the outbox (license events) to Kafka", relay),
    },
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
