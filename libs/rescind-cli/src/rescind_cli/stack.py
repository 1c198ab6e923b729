"""`rescind run`: the whole local stack in the foreground, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from rescind_cli.errors import CliError
from rescind_cli.tokens import load_settings
from rescind_common.auth import ensure_dev_key
from rescind_common.embedded_broker import EmbeddedBroker

BROKER_PORT = 9092
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.2
HOST = "127.0.0.1"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class Service:
    """One API: its migration command, its long-running processes, and the port its HTTP API uses."""

    name: str
    migrate: list[str]
    processes: list[tuple[str, list[str]]]  # (label, argv)
    port: int
    port_env: str

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def script(name: str) -> str:
    """A console script installed in the same virtualenv as this interpreter."""
    return str(Path(sys.executable).parent / name)


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


def services() -> list[Service]:
    consent = script("consent-api")
    registry = script("registry")
    worker = script("revocation-worker")
    return [
        Service(
            name="consent-api",
            migrate=[consent, "migrate"],
            processes=[
                ("consent-api", [consent, "serve"]),
                ("consent-relay", [consent, "relay"]),
                ("consent-consumer", [consent, "consumer"]),
            ],
            port=env_port("RESCIND_CONSENT_PORT", 8001),
            port_env="RESCIND_CONSENT_PORT",
        ),
        Service(
            name="registry",
            migrate=[registry, "migrate"],
            processes=[
                ("registry", [registry, "serve"]),
                ("registry-relay", [registry, "relay"]),
                ("registry-consumer", [registry, "consumer"]),
            ],
            port=env_port("RESCIND_REGISTRY_PORT", 8002),
            port_env="RESCIND_REGISTRY_PORT",
        ),
        Service(
            name="revocation-worker",
            migrate=[worker, "migrate"],
            processes=[("revocation-worker", [worker, "serve"]), ("worker", [worker, "worker"])],
            port=env_port("RESCIND_WORKER_PORT", 8003),
            port_env="RESCIND_WORKER_PORT",
        ),
    ]


def port_taken(port: int) -> bool:
    # SO_REUSEADDR so that a port with only TIME_WAIT leftovers counts as free, as it does for the servers.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def say(message: str) -> None:
    print(f"rescind: {message}", file=sys.stderr, flush=True)


class Stack:
    def __init__(self, specs: Sequence[Service], state_dir: Path) -> None:
        self.specs = list(specs)
        self.state_dir = state_dir
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        # Local demos: webhook receivers on this machine (loopback only, plain http) are allowed.
        # Production keeps the default: https only, private/loopback/link-local refused.
        self.env.setdefault("RESCIND_WORKER_ALLOW_NETWORKS", '["127.0.0.0/8", "::1/128"]')
        self.env.setdefault("RESCIND_WORKER_ALLOW_HTTP", "true")
        registry_url = f"http://{HOST}:{env_port('RESCIND_REGISTRY_PORT', 8002)}"
        self.env.setdefault("RESCIND_WORKER_REGISTRY_URL", registry_url)
        self.env.setdefault("RESCIND_CONSENT_REGISTRY_URL", registry_url)
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self.stop_signal: int | None = None
        self.stopping = False
        self.force = False

    # Signals only set flags; every wait below polls them, so nothing is interrupted half-way.
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping or self.stop_signal is not None:
            self.force = True
        else:
            self.stop_signal = signum

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            return self._run()
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        for spec in self.specs:
            if port_taken(spec.port):
                raise CliError(
                    f"port {spec.port} for {spec.name} is already in use (another `rescind run`?); "
                    f"stop what holds it or choose another port with {spec.port_env}=..."
                )
        bootstrap = self.start_broker()
        for spec in self.specs:
            if not self.run_to_end(f"{spec.name} migrate", spec.migrate):
                return self.exit_code()
        for spec in self.specs:
            for label, argv in spec.processes:
                self.spawn(label, argv)
        for spec in self.specs:
            if not self.wait_ready(spec):
                return self.exit_code()
        self.banner(bootstrap)
        while self.stop_signal is None:
            if self.dead_child() is not None:
                return self.exit_code()
            time.sleep(POLL_INTERVAL)
        return 0

    def exit_code(self) -> int:
        return 0 if self.stop_signal is not None else 1

    def start_broker(self) -> str:
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
        self.broker = EmbeddedBroker(port=BROKER_PORT, log_file=log_file)
        say(f"starting the embedded Kafka broker (Tansu, memory-only) on {self.broker.bootstrap}")
        try:
            self.broker.start()
        except (OSError, TimeoutError) as exc:
            raise CliError(
                f"the embedded Kafka broker did not start: {exc} (see {relative(log_file)})"
            ) from exc
        self.env["RESCIND_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
        return self.broker.bootstrap

    def popen(self, label: str, argv: list[str]) -> subprocess.Popen[bytes]:
        try:
            # Own process group: Ctrl-C reaches only us, and we stop the children in order.
            # argv is one of our own console scripts, never user input.
            return subprocess.Popen(  # noqa: S603
                argv, env=self.env, stdin=subprocess.DEVNULL, process_group=0
            )
        except OSError as exc:
            raise CliError(f"cannot start {label} ({argv[0]}): {exc}; did `make install` run?") from exc

    def spawn(self, label: str, argv: list[str]) -> None:
        say(f"starting {label}")
        self.children.append(Child(label, self.popen(label, argv)))

    def run_to_end(self, label: str, argv: list[str]) -> bool:
        say(f"running {label}")
        child = Child(label, self.popen(label, argv))
        self.children.append(child)
        while (code := child.proc.poll()) is None:
            if self.stop_signal is not None:
                return False
            time.sleep(POLL_INTERVAL)
        self.children.remove(child)
        if code != 0:
            say(f"{label} {describe_exit(code)}")
            return False
        return True

    def dead_child(self) -> Child | None:
        """The first child (or the broker) that has exited, reported; None while all run."""
        watched = list(self.children)
        if self.broker is not None and self.broker.proc is not None:
            watched.append(Child("kafka broker", self.broker.proc))
        for child in watched:
            code = child.proc.poll()
            if code is not None:
                # Ctrl-C also reaches the broker (our process group): not unexpected if we were told to stop.
                if self.stop_signal is None:
                    say(f"{child.name} {describe_exit(code)} unexpectedly; stopping everything")
                return child
        return None

    def wait_ready(self, spec: Service) -> bool:
        url = f"{spec.url}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.stop_signal is not None or self.dead_child() is not None:
                    return False
                try:
                    response = client.get(url)
                    if response.status_code == 200:
                        return True
                    last = f"{response.status_code} {response.text[:300]}"
                except httpx.HTTPError as exc:
                    last = str(exc) or type(exc).__name__
                time.sleep(0.5)
        say(f"{spec.name} not ready after {READY_TIMEOUT:.0f}s: GET {url} -> {last}")
        return False

    def banner(self, bootstrap: str) -> None:
        rescind = relative(Path(script("rescind")))
        width = max(len("kafka"), *(len(s.name) for s in self.specs))
        lines = ["", "Rescind is running. Ctrl-C stops everything.", ""]
        lines += [f"  {s.name:<{width}}  {s.url}/docs" for s in self.specs]
        where = " (embedded Tansu, memory-only)" if self.broker is not None else ""
        lines += [f"  {'kafka':<{width}}  {bootstrap}{where}", f"  {'state':<{width}}  {self.state_dir}/", ""]
        lines += [
            "Tokens (role subject, licensee or operator):",
            f"  TOKEN=$({rescind} token --role subject --sub alice)",
            f'  curl -H "Authorization: Bearer $TOKEN" {self.specs[0].url}/v1/consents',
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
        alive = [c for c in self.children if c.proc.poll() is None]
        if alive or (self.broker is not None and self.broker.proc is not None):
            say("stopping (Ctrl-C again to kill)")
        # Reverse start order: workers and APIs go before the broker they use.
        for child in reversed(alive):
            child.proc.terminate()
        self._wait(alive, STOP_TIMEOUT, on_timeout=lambda c: say(f"{c.name} did not stop; killing it"))
        for child in alive:
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait()
        self.children.clear()
        if self.broker is not None:
            self.broker.stop(kill=self.force)
            self.broker = None

    def _wait(self, children: list[Child], timeout: float, on_timeout: Callable[[Child], None]) -> None:
        deadline = time.monotonic() + timeout
        while any(c.proc.poll() is None for c in children):
            if self.force or time.monotonic() > deadline:
                for child in children:
                    if child.proc.poll() is None:
                        on_timeout(child)
                return
            time.sleep(0.05)


def run() -> int:
    settings = load_settings()
    state_dir = settings.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    if settings.profile == "development":
        # Create the signing key once, here: services starting together would each create a different one.
        ensure_dev_key(settings.dev_auth_key_file)
    return Stack(services(), state_dir).run()
