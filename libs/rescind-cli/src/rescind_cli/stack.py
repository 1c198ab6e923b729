"""`rescind run`: the whole local stack in the foreground, stopped cleanly by Ctrl-C.

A thin driver of rescind_cli.processes (the launcher the tests and benchmarks use too): it checks the
ports, starts the broker, migrates, starts every process, waits until they are ready, prints the
banner, and stops everything on a signal or when a process dies.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

from rescind_cli.errors import CliError
from rescind_cli.processes import (
    HOST,
    POLL_INTERVAL,
    SERVICES,
    Exited,
    Launcher,
    NotReady,
    describe_exit,
    script,
    stack_env,
    stack_names,
)
from rescind_cli.tokens import load_settings
from rescind_common.auth import ensure_dev_key

BROKER_PORT = 9092
STOP_TIMEOUT = 15.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def env_port(var: str, default: int) -> int:
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise CliError(f"{var}={raw!r} is not a TCP port", code=2)
    return port


def ports() -> dict[str, int]:
    """Each API's port: RESCIND_<SERVICE>_PORT, or its default."""
    return {key: env_port(s.port_env, s.default_port) for key, s in SERVICES.items()}


def port_taken(port: int) -> bool:
    # SO_REUSEADDR so that a port with only TIME_WAIT leftovers counts as free, as it does for the servers.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def say(message: str) -> None:
    print(f"rescind: {message}", file=sys.stderr, flush=True)


class Stack(Launcher):
    def __init__(self, ports: dict[str, int], state_dir: Path) -> None:
        # What the user set wins; the rest lets the processes find each other on this machine.
        env = dict(os.environ)
        for key, value in stack_env(ports).items():
            env.setdefault(key, value)
        super().__init__(env, ports, own_group=True)
        self.state_dir = state_dir
        self.stop_signal: int | None = None
        self.stopping = False
        self.force = False

    # Signals only set flags; every wait below polls them, so nothing is interrupted half-way.
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping or self.stop_signal is not None:
            self.force = True
        else:
            self.stop_signal = signum

    def interrupted(self) -> bool:
        return self.stop_signal is not None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            return self._run()
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        for key, port in self.ports.items():
            if port_taken(port):
                raise CliError(
                    f"port {port} for {SERVICES[key].name} is already in use (another `rescind run`?); "
                    f"stop what holds it or choose another port with {SERVICES[key].port_env}=..."
                )
        bootstrap = self.start_kafka()
        for key in self.ports:
            label = f"{SERVICES[key].name} migrate"
            say(f"running {label}")
            code = self.run_to_end(label, SERVICES[key].migrate_argv(), stopping=self.interrupted)
            if code != 0:
                if code is not None:
                    say(f"{label} {describe_exit(code)}")
                return self.exit_code()
        for name in stack_names():
            say(f"starting {name}")
            self.start(name)
        try:
            if not self.wait_ready(self.ports, stopping=self.interrupted):
                return self.exit_code()
        except Exited as exc:
            self.report_exit(exc.name, exc.code)
            return self.exit_code()
        except NotReady as exc:
            say(str(exc))
            return self.exit_code()
        self.banner(bootstrap)
        while self.stop_signal is None:
            gone = self.exited()
            if gone is not None:
                self.report_exit(*gone)
                return self.exit_code()
            time.sleep(POLL_INTERVAL)
        return 0

    def exit_code(self) -> int:
        return 0 if self.stop_signal is not None else 1

    def report_exit(self, name: str, code: int) -> None:
        # Ctrl-C also reaches the broker (our process group): not unexpected if we were told to stop.
        if self.stop_signal is None:
            say(f"{name} {describe_exit(code)} unexpectedly; stopping everything")

    def start_kafka(self) -> str:
        if "RESCIND_KAFKA_BOOTSTRAP" in os.environ:
            bootstrap = os.environ["RESCIND_KAFKA_BOOTSTRAP"]
            say(f"using the Kafka broker at {bootstrap} (RESCIND_KAFKA_BOOTSTRAP)")
            return bootstrap
        if port_taken(BROKER_PORT):
            raise CliError(
                f"port {BROKER_PORT} is already in use, so the embedded Kafka broker cannot start there. "
                "Stop whatever holds the port, or use another Kafka broker by setting "
                "RESCIND_KAFKA_BOOTSTRAP=host:port (e.g. `RESCIND_KAFKA_BOOTSTRAP=127.0.0.1:9092 make run` "
                f"if what listens on {BROKER_PORT} is a Kafka broker)"
            )
        log_file = self.state_dir / "tansu.log"
        say(f"starting the embedded Kafka broker (Tansu, memory-only) on {HOST}:{BROKER_PORT}")
        try:
            broker = self.start_broker(BROKER_PORT, log_file)
        except (OSError, TimeoutError) as exc:
            raise CliError(
                f"the embedded Kafka broker did not start: {exc} (see {relative(log_file)})"
            ) from exc
        return broker.bootstrap

    def banner(self, bootstrap: str) -> None:
        rescind = relative(Path(script("rescind")))
        names = {key: SERVICES[key].name for key in self.ports}
        width = max(len("kafka"), *(len(n) for n in names.values()))
        lines = ["", "Rescind is running. Ctrl-C stops everything.", ""]
        lines += [f"  {name:<{width}}  {self.url(key)}/docs" for key, name in names.items()]
        where = " (embedded Tansu, memory-only)" if self.broker is not None else ""
        lines += [f"  {'kafka':<{width}}  {bootstrap}{where}", f"  {'state':<{width}}  {self.state_dir}/", ""]
        lines += [
            "Tokens (role subject, licensee or operator):",
            f"  TOKEN=$({rescind} token --role subject --sub alice)",
            f'  curl -H "Authorization: Bearer $TOKEN" {self.url("consent")}/v1/consents',
            "",
            "Webhook endpoints on 127.0.0.1 over plain http are allowed for local demos"
            f" (RESCIND_WORKER_ALLOW_NETWORKS={self.env.get('RESCIND_WORKER_ALLOW_NETWORKS')});"
            " production refuses them.",
            f"The whole story end to end: {relative(Path(script('rescind')))} demo",
            "",
        ]
        print("\n".join(lines), flush=True)

    def shutdown(self) -> None:
        self.stopping = True
        alive = [name for name in self.procs if self.running(name)]
        if alive or (self.broker is not None and self.broker.proc is not None):
            say("stopping (Ctrl-C again to kill)")
        # Workers and APIs go before the broker they use.
        self.stop_all(
            STOP_TIMEOUT,
            force=lambda: self.force,
            on_timeout=lambda name: say(f"{name} did not stop; killing it"),
        )
        self.procs.clear()
        if self.broker is not None:
            self.broker.stop(kill=self.force)
            self.broker = None


def run() -> int:
    settings = load_settings()
    state_dir = settings.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    if settings.profile == "development":
        # Create the signing key once, here: services starting together would each create a different one.
        ensure_dev_key(settings.dev_auth_key_file)
    return Stack(ports(), state_dir).run()
