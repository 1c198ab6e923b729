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


def keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["rotate", "status", "legacy-pepper"],
        help="rotate: rewrap every subject key under RESCIND_CONSENT_MASTER_KEY_ID (idempotent, "
        "resumable); status: subject keys per master key id; legacy-pepper: print the pepper derived "
        "from master key v1, to set as RESCIND_CONSENT_SUBJECT_PEPPER",
    )
    parser.add_argument("--batch-size", type=int, default=500, help="keys per transaction (default 500)")


def keys(settings: ConsentSettings, args: argparse.Namespace) -> None:
    from consent_api import rotation
    from rescind_common.keyrotation import print_report

    if args.action == "legacy-pepper":
        sys.exit(rotation.print_legacy_pepper(settings))
    if args.action == "rotate":
        report = rotation.rotate(settings, args.batch_size)
    else:
        report = rotation.status(settings)
    code = print_report(report)
    warning = rotation.pepper_warning(settings)
    if warning:
        print(f"consent-api: {warning}", file=sys.stderr)
    sys.exit(code)


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
        "keys": Command("master-key rotation (docs/operations.md)", keys, keys_arguments),
    },
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
