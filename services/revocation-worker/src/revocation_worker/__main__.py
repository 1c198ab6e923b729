"""`revocation-worker migrate | serve | worker`."""

from __future__ import annotations

import argparse
import sys

from rescind_common.cli import Command, Service
from revocation_worker.config import WorkerSettings


def roles(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--role",
        choices=["all", "intake", "delivery"],
        default="all",
        help="all (default): everything in this process; intake: consumer, resolver, sweeper and "
        "relay; delivery: the webhook delivery loop alone (its own process and GIL)",
    )


def worker(settings: WorkerSettings, args: argparse.Namespace) -> None:
    from revocation_worker.runner import main as run_worker

    # No HTTP API in this process: /metrics, /healthz and /readyz on RESCIND_METRICS_PORT (the
    # runner serves them, for the loops of its role).
    run_worker(settings, role=args.role)


def keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["rotate", "status"],
        help="rotate: reseal every endpoint secret under RESCIND_WORKER_SECRET_KEY_ID (idempotent, "
        "resumable); status: sealed secrets per key id",
    )
    parser.add_argument("--batch-size", type=int, default=500, help="endpoints per transaction (default 500)")


def keys(settings: WorkerSettings, args: argparse.Namespace) -> None:
    from rescind_common.keyrotation import print_report
    from revocation_worker import rotation

    report = (
        rotation.rotate(settings, args.batch_size) if args.action == "rotate" else rotation.status(settings)
    )
    sys.exit(print_report(report))


CLI = Service(
    prog="revocation-worker",
    package="revocation_worker",
    settings=WorkerSettings,
    prefix="worker",
    commands={
        "worker": Command(
            "consume revocations, deliver webhooks, sweep deadlines, relay events", worker, roles
        ),
        "keys": Command("endpoint-secret key rotation (docs/operations.md)", keys, keys_arguments),
    },
)


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
