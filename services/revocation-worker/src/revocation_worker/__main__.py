"""`revocation-worker migrate | serve | worker`."""

from __future__ import annotations

import argparse
import logging
import sys

from rescind_common.logs import configure_logging
from rescind_common.process import serve_api
from revocation_worker.config import WorkerSettings

log = logging.getLogger("revocation_worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="revocation-worker")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--workers", type=int, default=1)
    worker = sub.add_parser(
        "worker", help="consume revocations, deliver webhooks, sweep deadlines, relay events"
    )
    worker.add_argument(
        "--role",
        choices=["all", "intake", "delivery"],
        default="all",
        help="all (default): everything in this process; intake: consumer, resolver, sweeper and "
        "relay; delivery: the webhook delivery loop alone (its own process and GIL)",
    )
    args = parser.parse_args(argv)

    settings = WorkerSettings()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        from revocation_worker.migrate import upgrade

        upgrade(settings.worker_database_url)
        log.info("migrations applied")
    elif args.command == "serve":
        serve_api(
            "revocation_worker.main:create_app",
            host=settings.worker_host,
            port=settings.worker_port,
            workers=args.workers,
        )
    else:
        from revocation_worker.runner import main as run_worker

        # No HTTP API in this process: /metrics, /healthz and /readyz on RESCIND_METRICS_PORT (the
        # runner serves them, for the loops of its role).
        run_worker(settings, role=args.role)
    return 0


if __name__ == "__main__":
    sys.exit(main())
