"""Every service's command line: `<service> migrate | serve | <its loops>`.

A service names its settings class, its app factory and its loops; this module owns the parsing,
the logging set-up and the two commands every service has (`migrate`, `serve`). Loops import lazily,
so `serve` never loads the Kafka client and `--help` needs no environment.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rescind_common.logs import configure_logging
from rescind_common.process import serve_api
from rescind_common.settings import RescindSettings

S = TypeVar("S", bound=RescindSettings)


@dataclass(frozen=True)
class Command(Generic[S]):
    """A command beyond `migrate` and `serve`: its help, its own arguments, what it runs."""

    help: str
    run: Callable[[S, argparse.Namespace], None]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


@dataclass(frozen=True)
class Service(Generic[S]):
    """One service's command line. `prefix` names its settings (`<prefix>_database_url`,
    `<prefix>_host`, `<prefix>_port`); `package` is where `migrate.upgrade` and the app factory live."""

    prog: str
    package: str
    settings: Callable[[], S]
    prefix: str
    serve_help: str = "run the HTTP API"
    workers_default: Callable[[S], int] | None = None
    commands: dict[str, Command[S]] | None = None

    def main(self, argv: Sequence[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=self.prog)
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("migrate", help="apply database migrations")
        serve = sub.add_parser("serve", help=self.serve_help)
        default = f"RESCIND_{self.prefix.upper()}_WORKERS" if self.workers_default else "1"
        serve.add_argument("--workers", type=int, default=None, help=f"default: {default}")
        for name, command in (self.commands or {}).items():
            p = sub.add_parser(name, help=command.help)
            if command.arguments:
                command.arguments(p)
        args = parser.parse_args(argv)

        settings = self.settings()
        configure_logging(settings.log_level)
        # Production refuses a process without a secret it reads (each pod gets only its own).
        role = getattr(args, "role", None)
        try:
            settings.require_secrets(args.command if role is None else f"{args.command} --role {role}")
        except ValueError as exc:
            parser.exit(2, f"{self.prog}: {exc}\n")
        if args.command == "migrate":
            upgrade: Callable[[str], Any] = importlib.import_module(f"{self.package}.migrate").upgrade
            upgrade(getattr(settings, f"{self.prefix}_database_url"))
            logging.getLogger(self.package).info("migrations applied")
        elif args.command == "serve":
            serve_api(
                f"{self.package}.main:create_app",
                host=getattr(settings, f"{self.prefix}_host"),
                port=getattr(settings, f"{self.prefix}_port"),
                workers=args.workers or (self.workers_default(settings) if self.workers_default else 1),
            )
        else:
            (self.commands or {})[args.command].run(settings, args)
        return 0
