"""The `rescind` command: development tokens, the local stack and operator tasks."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rescind_cli import audit, demo, keys, ops, proofs, receipts, stack, tokens
from rescind_cli.errors import CliError


def demo_default(var: str, port: int) -> str:
    return f"http://127.0.0.1:{os.environ.get(var, str(port))}"


def cli_version() -> str:
    try:
        return version("rescind-cli")
    except PackageNotFoundError:
        return "unknown"


def _ttl(text: str) -> dt.timedelta:
    try:
        return tokens.parse_ttl(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rescind", description="Rescind: development tokens, the local stack and operator tasks."
    )
    parser.add_argument("--version", action="version", version=f"rescind {cli_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    token = commands.add_parser(
        "token",
        help="print a development JWT the running stack accepts",
        description="Print a JWT signed with the development key, e.g. TOKEN=$(rescind token --role "
        "subject --sub alice), valid at every service; or a service token for one call "
        "(--role service --scope holders). Refused when RESCIND_PROFILE=production.",
    )
    token.add_argument("--role", required=True, choices=tokens.ROLES)
    token.add_argument("--sub", required=True, help="the subject, licensee, operator or service id")
    token.add_argument(
        "--scope",
        action="append",
        choices=tokens.SCOPES,
        help="--role service only (repeatable): holders (the registry's holders lookup, view licenses), "
        "recipients (view samples); the token is then for the registry alone",
    )
    token.add_argument("--ttl", type=_ttl, default="12h", help="lifetime: 90s, 15m, 12h, 7d (default 12h)")

    commands.add_parser(
        "run",
        help="start the whole local stack in the foreground (Ctrl-C stops it)",
        description="Start a Tansu broker (unless RESCIND_KAFKA_BOOTSTRAP is set), migrate and start every "
        "service, wait until they are ready and print their URLs. Ctrl-C stops everything.",
    )

    audit_parser = commands.add_parser("audit", help="audit log tasks")
    audit_commands = audit_parser.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    verify = audit_commands.add_parser(
        "verify",
        help="check every service's audit chains against their signed checkpoints (exit 0 when intact)",
        description=(
            "Read each service's audit entries, heads and newest signed checkpoint with an operator token; "
            "verify signatures against its JWKS, recompute every chain, and compare with the checkpoint "
            "remembered from the last run (--state). Problems name the service and the chain; exit 1."
        ),
    )
    verify.add_argument(
        "--url",
        "--consent-url",
        dest="url",
        default=audit.default_url("consent-api"),
        help="consent-api base URL (default %(default)s)",
    )
    verify.add_argument(
        "--registry-url",
        default=audit.default_url("registry"),
        help="registry base URL (default %(default)s)",
    )
    verify.add_argument(
        "--worker-url",
        default=audit.default_url("revocation-worker"),
        help="revocation-worker base URL (default %(default)s)",
    )
    verify.add_argument(
        "--service",
        action="append",
        choices=audit.SERVICES,
        help="check only this service (repeatable; default: all three)",
    )
    verify.add_argument(
        "--state",
        type=Path,
        default=None,
        help="where the last verified checkpoints are remembered (default: audit-verify-state.json in the "
        "state dir)",
    )

    receipt_parser = commands.add_parser("receipt", help="consent receipt tasks")
    receipt_commands = receipt_parser.add_subparsers(dest="receipt_command", metavar="COMMAND", required=True)
    rverify = receipt_commands.add_parser(
        "verify",
        help="verify a consent receipt (compact JWS) against consent-api's JWKS",
        description="Fetch /.well-known/jwks.json (or read --jwks FILE, offline), verify the receipt's "
        "signature (EdDSA or ES256, as the key says), print its claims.",
    )
    rverify.add_argument("receipt", help="the compact JWS, or - to read it from standard input")
    rverify.add_argument(
        "--url", default=receipts.default_url(), help="consent-api base URL (default %(default)s)"
    )
    rverify.add_argument(
        "--jwks", type=Path, metavar="FILE", help="a saved JWKS: verify offline, without --url"
    )

    proof_parser = commands.add_parser("proof", help="signed proofs of revocations")
    proof_commands = proof_parser.add_subparsers(dest="proof_command", metavar="COMMAND", required=True)
    pget = proof_commands.add_parser(
        "get",
        help="save a revocation's signed proof (compact JWS) to a file",
        description="GET /v1/revocations/{id}/proof with RESCIND_TOKEN (else a development operator "
        "token) and write the compact JWS to --out.",
    )
    pget.add_argument("revocation_id", metavar="REVOCATION_ID")
    pget.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the proof")
    pget.add_argument(
        "--url", default=receipts.default_url(), help="consent-api base URL (default %(default)s)"
    )
    pverify = proof_commands.add_parser(
        "verify",
        help="verify a saved proof against a saved JWKS, offline; print a summary",
        description="Verify the proof's signature (EdDSA or ES256, as the key says) against the JWKS "
        "file, with no network; print a summary (--json: every claim). Exit 1 when it does not verify.",
    )
    pverify.add_argument("file", type=Path, metavar="FILE", help='the proof (compact JWS, or {"proof": ...})')
    pverify.add_argument("--jwks", type=Path, required=True, metavar="FILE", help="the saved JWKS")
    pverify.add_argument("--json", action="store_true", help="print every verified claim as JSON")
    pverify.add_argument(
        "--samples",
        type=Path,
        metavar="FILE",
        help="the withdrawn samples' SHA-256 values (one per line, or a JSON list): check the proof's "
        "Merkle root commits to exactly these",
    )

    demo_parser = commands.add_parser(
        "demo",
        help="play the whole story against the running stack (make run) with local receivers",
        description="Seller grants, operator licenses two buyers, one declares a model, both register "
        "endpoints, the seller revokes, both get verified webhooks, one acknowledges.",
    )
    demo_parser.add_argument("--consent-url", default=audit.default_consent_url())
    demo_parser.add_argument("--registry-url", default=demo_default("RESCIND_REGISTRY_PORT", 8002))
    demo_parser.add_argument("--worker-url", default=demo_default("RESCIND_WORKER_PORT", 8003))

    registry_url = ops.service_url("RESCIND_REGISTRY_PORT", 8002)
    worker_url = ops.service_url("RESCIND_WORKER_PORT", 8003)
    lic = commands.add_parser("licensee", help="operator: licensees (registry)")
    lic_commands = lic.add_subparsers(dest="licensee_command", metavar="COMMAND", required=True)
    lic_create = lic_commands.add_parser("create", help="create a licensee; prints its id")
    lic_create.add_argument("--name", required=True)
    lic_create.add_argument("--contact-email")
    lic_create.add_argument("--url", default=registry_url, help="registry base URL (default %(default)s)")
    lic_list = lic_commands.add_parser("list", help="list licensees")
    lic_list.add_argument("--url", default=registry_url)

    eps = commands.add_parser("endpoints", help="operator: webhook endpoints (revocation-worker)")
    eps_commands = eps.add_subparsers(dest="endpoints_command", metavar="COMMAND", required=True)
    eps_failing = eps_commands.add_parser("failing", help="endpoints failing now or disabled")
    eps_failing.add_argument(
        "--url", default=worker_url, help="revocation-worker base URL (default %(default)s)"
    )

    dl = commands.add_parser(
        "dead-letters",
        help="operator: undeliverable notices (revocation-worker) and Kafka dead-letter topics",
    )
    dl_commands = dl.add_subparsers(dest="dl_command", metavar="COMMAND", required=True)
    dl_list = dl_commands.add_parser("list", help="the dead-letter backlog")
    dl_list.add_argument("--licensee-id")
    dl_list.add_argument("--url", default=worker_url)
    dl_redrive = dl_commands.add_parser("redrive", help="put dead-lettered deliveries back in line")
    dl_redrive.add_argument("--licensee-id")
    dl_redrive.add_argument("--endpoint-id")
    dl_redrive.add_argument("--url", default=worker_url)
    dl_kafka = dl_commands.add_parser(
        "kafka",
        help="consent and notice events a consumer gave up on (<topic>.<service>.dlq)",
        description="The consumers' Kafka dead-letter topics, on the broker RESCIND_KAFKA_BOOTSTRAP names. "
        "A dead-lettered event is not applied until it is replayed.",
    )
    kafka_commands = dl_kafka.add_subparsers(dest="kafka_command", metavar="COMMAND", required=True)
    k_list = kafka_commands.add_parser(
        "list",
        help="every record of the dead-letter topics: origin, consumer, event type and id, error",
    )
    k_list.add_argument(
        "--topic", action="append", help="a dead-letter topic (repeatable; default: every *.dlq topic)"
    )
    k_replay = kafka_commands.add_parser(
        "replay",
        help="publish dead-lettered records again to their original topic",
        description="Publish records again to their original topic (key, value and the producer's "
        "headers, plus dlq-replayed-from); consumers deduplicate by event id. What was replayed is "
        "remembered (consumer group rescind-dlq-replay), so --all replays each record once.",
    )
    k_replay.add_argument(
        "--topic", action="append", help="a dead-letter topic (repeatable; default: every *.dlq topic)"
    )
    which = k_replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every record not replayed before")
    which.add_argument(
        "--offset",
        type=int,
        action="append",
        help="the record at this offset (repeatable; with one --topic), even if replayed before",
    )
    k_replay.add_argument("--partition", type=int, default=0, help="the partition of --offset (default 0)")

    keys_parser = commands.add_parser(
        "keys",
        help="operator: master-key rotation (consent-api subject keys, worker endpoint secrets)",
        description="Run each service's `keys` command with this environment (docs/operations.md, key "
        "rotation). rotate: rewrap everything under the current key (idempotent; resumable in batches); "
        "status: what each key id still holds. Exit 1 while anything is under another key.",
    )
    keys_parser.add_argument("action", choices=["rotate", "status"])
    keys_parser.add_argument(
        "--service",
        action="append",
        choices=sorted(keys.SERVICES),
        help="only this service (repeatable; default: both)",
    )
    keys_parser.add_argument("--batch-size", type=int, default=500, help="rows per transaction (default 500)")

    commands.add_parser("version", help="print the version")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "token":
        settings = tokens.load_settings()
        print(tokens.dev_token(settings, role=args.role, sub=args.sub, ttl=args.ttl, scopes=args.scope))
        return 0
    if args.command == "run":
        return stack.run()
    if args.command == "audit":
        urls = {"consent-api": args.url, "registry": args.registry_url, "revocation-worker": args.worker_url}
        wanted = args.service or list(audit.SERVICES)
        return audit.verify({s: u for s, u in urls.items() if s in wanted}, args.state)
    if args.command == "receipt":
        return receipts.verify(args.receipt, args.url, args.jwks)
    if args.command == "proof":
        if args.proof_command == "get":
            return proofs.get(args.revocation_id, args.url, args.out)
        return proofs.verify(args.file, args.jwks, args.json, args.samples)
    if args.command == "licensee":
        if args.licensee_command == "create":
            return ops.create_licensee(args.url, args.name, args.contact_email)
        return ops.list_licensees(args.url)
    if args.command == "endpoints":
        return ops.failing_endpoints(args.url)
    if args.command == "dead-letters":
        if args.dl_command == "kafka":
            # Loaded here: the Kafka client is heavy and only these commands need it.
            from rescind_cli import kafka_dead_letters

            if args.kafka_command == "list":
                return kafka_dead_letters.list_dead_letters(args.topic)
            return kafka_dead_letters.replay(args.topic, args.offset, args.partition)
        if args.dl_command == "list":
            return ops.dead_letters(args.url, args.licensee_id)
        return ops.redrive(args.url, args.licensee_id, args.endpoint_id)
    if args.command == "keys":
        return keys.run(args.action, args.service or list(keys.SERVICES), args.batch_size)
    if args.command == "demo":
        return demo.run(args.consent_url, args.registry_url, args.worker_url)
    if args.command == "version":
        print(f"rescind {cli_version()}")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except CliError as exc:
        print(f"rescind: error: {exc.message}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
