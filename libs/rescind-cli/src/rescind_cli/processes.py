"""The local stack as processes: which commands make it up, the environment that lets them find each
other, and starting, stopping and watching them.

One launcher for everyone who runs the stack as a user does: `rescind run` (`make run`) drives it in
the foreground; the end-to-end, fault and chaos tests (tests/e2e_stack.py) and the benchmarks
(bench/) drive it from Python and add only what is theirs (tokens, pauses, profiling).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from rescind_cli.errors import CliError
from rescind_common.embedded_broker import EmbeddedBroker, free_port

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
POLL_INTERVAL = 0.2
# Webhook receivers on this machine (loopback only, plain http) are allowed: local demos, tests and
# benchmarks. Production keeps the default: https only, private/loopback/link-local refused.
LOOPBACK_NETWORKS = '["127.0.0.0/8", "::1/128"]'


@dataclass(frozen=True)
class Service:
    """One API: `key` is its settings' prefix (RESCIND_<KEY>_...), `name` its console script."""

    key: str
    name: str
    default_port: int

    @property
    def port_env(self) -> str:
        return f"RESCIND_{self.key.upper()}_PORT"

    @property
    def database_env(self) -> str:
        return f"RESCIND_{self.key.upper()}_DATABASE_URL"

    def migrate_argv(self) -> list[str]:
        return [script(self.name), "migrate"]


SERVICES: dict[str, Service] = {
    s.key: s
    for s in (
        Service("consent", "consent-api", 8001),
        Service("registry", "registry", 8002),
        Service("worker", "revocation-worker", 8003),
    )
}


@dataclass(frozen=True)
class Command:
    """One long-running process: the service it belongs to and its console script's arguments."""

    service: str  # a key of SERVICES
    args: tuple[str, ...]

    def argv(self) -> list[str]:
        return [script(SERVICES[self.service].name), *self.args]


# Every process the stack can run, by name. `serve` answers the service's /readyz on its port.
COMMANDS: dict[str, Command] = {
    "consent-api": Command("consent", ("serve",)),
    "consent-relay": Command("consent", ("relay",)),
    "consent-consumer": Command("consent", ("consumer",)),
    "registry": Command("registry", ("serve",)),
    "registry-relay": Command("registry", ("relay",)),
    "registry-consumer": Command("registry", ("consumer",)),
    "revocation-worker": Command("worker", ("serve",)),
    "worker": Command("worker", ("worker",)),
    "worker-intake": Command("worker", ("worker", "--role", "intake")),
    "worker-delivery": Command("worker", ("worker", "--role", "delivery")),
}
# `revocation-worker worker` as one process (`make run`), or split into its two roles.
WORKER_ROLES: dict[str, tuple[str, ...]] = {
    "all": ("worker",),
    "split": ("worker-intake", "worker-delivery"),
}


def stack_names(worker: str = "all") -> list[str]:
    """The processes of a whole stack, in the order `make run` starts them."""
    return [
        "consent-api",
        "consent-relay",
        "consent-consumer",
        "registry",
        "registry-relay",
        "registry-consumer",
        "revocation-worker",
        *WORKER_ROLES[worker],
    ]


def script(name: str) -> str:
    """A console script installed in the same virtualenv as this interpreter."""
    return str(Path(sys.executable).parent / name)


def url(port: int) -> str:
    return f"http://{HOST}:{port}"


def free_ports(keys: Iterable[str], taken: Iterable[int] = ()) -> dict[str, int]:
    """A distinct free port per key: each free_port() is free when asked, so two asks may get the
    same one."""
    used = set(taken)
    ports: dict[str, int] = {}
    for key in keys:
        port = free_port()
        while port in used:
            port = free_port()
        used.add(port)
        ports[key] = port
    return ports


def stack_env(
    ports: Mapping[str, int],
    *,
    bootstrap: str | None = None,
    state: Path | None = None,
    db_urls: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The settings that make the stack's processes find each other: each API's port and the URLs
    the others reach it at, the broker, the state dir (the development signing key), the databases
    (by service key), and loopback webhooks allowed. Only what is given is set."""
    env = {
        "PYTHONUNBUFFERED": "1",
        "RESCIND_WORKER_ALLOW_NETWORKS": LOOPBACK_NETWORKS,
        "RESCIND_WORKER_ALLOW_HTTP": "true",
    }
    for key, port in ports.items():
        env[SERVICES[key].port_env] = str(port)
    if "consent" in ports:
        env["RESCIND_CONSENT_PUBLIC_URL"] = url(ports["consent"])
    if "worker" in ports:
        env["RESCIND_WORKER_PUBLIC_URL"] = url(ports["worker"])
    if "registry" in ports:
        env["RESCIND_WORKER_REGISTRY_URL"] = env["RESCIND_CONSENT_REGISTRY_URL"] = url(ports["registry"])
    if bootstrap is not None:
        env["RESCIND_KAFKA_BOOTSTRAP"] = bootstrap
    if state is not None:
        env["RESCIND_STATE_DIR"] = str(state)
    for key, db_url in (db_urls or {}).items():
        env[SERVICES[key].database_env] = db_url
    return env


def sqlite_urls(folder: Path) -> dict[str, str]:
    """One SQLite file per service in `folder`, as `make run` keeps them under `.rescind/`."""
    folder.mkdir(parents=True, exist_ok=True)
    return {key: f"sqlite:///{folder / f'{key}.db'}" for key in SERVICES}


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path | None
    popen: subprocess.Popen[bytes]

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.name, self.log, lines)


def log_tail(name: str, log: Path | None, lines: int = 40) -> str:
    text = log.read_text(errors="replace") if log is not None and log.exists() else ""
    return f"===== {name} =====\n" + "\n".join(text.splitlines()[-lines:])


class Exited(Exception):
    """A process of the stack (or its broker) stopped while it should run."""

    def __init__(self, name: str, code: int, tail: str = "") -> None:
        super().__init__(f"{name} {describe_exit(code)}" + (f"\n{tail}" if tail else ""))
        self.name = name
        self.code = code


class NotReady(Exception):
    def __init__(self, what: str, timeout: float, probe: str, last: str) -> None:
        super().__init__(f"{what} not ready after {timeout:.0f}s: GET {probe} -> {last}")


class Launcher:
    """Starts, watches and stops the stack's processes, each with `env` (plus its own additions).

    With `log_dir`, each process writes to `<log_dir>/<name>.log` (a restarted process appends,
    after a marker line); without, it shares this process's terminal. `own_group` puts each child
    in its own process group, so that Ctrl-C reaches only the driver, which stops them in order.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        ports: Mapping[str, int],
        *,
        log_dir: Path | None = None,
        own_group: bool = False,
    ) -> None:
        self.env = dict(env)
        self.ports = dict(ports)
        self.log_dir = log_dir
        self.own_group = own_group
        self.procs: dict[str, Proc] = {}
        self.broker: EmbeddedBroker | None = None

    def url(self, service: str) -> str:
        return url(self.ports[service])

    # -- the broker

    def start_broker(self, port: int | None = None, log_file: Path | None = None) -> EmbeddedBroker:
        """A new, empty embedded broker; the processes started from now on are pointed at it."""
        self.broker = EmbeddedBroker(port=port, log_file=log_file)
        self.broker.start()
        self.env["RESCIND_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
        return self.broker

    # -- one process

    def popen(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Proc:
        full_env = {**self.env, **(env or {})}
        log = None if self.log_dir is None else self.log_dir / f"{name}.log"
        try:
            if log is None:
                # argv is one of our own console scripts (or a benchmark's helper), never user input.
                popen = subprocess.Popen(  # noqa: S603
                    argv,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    process_group=0 if self.own_group else None,
                )
            else:
                with open(log, "ab") as out:
                    out.write(f"===== {time.strftime('%H:%M:%S')} start {' '.join(argv)} =====\n".encode())
                    out.flush()
                    popen = subprocess.Popen(  # noqa: S603
                        argv,
                        env=full_env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        process_group=0 if self.own_group else None,
                    )
        except OSError as exc:
            raise CliError(f"cannot start {name} ({argv[0]}): {exc}; did `make install` run?") from exc
        return Proc(name, argv, log, popen)

    def start(self, name: str, argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> Proc:
        """Start `name` (a key of COMMANDS, unless `argv` is given), replacing an earlier run of it."""
        proc = self.popen(name, COMMANDS[name].argv() if argv is None else argv, env)
        self.procs[name] = proc
        return proc

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.popen.poll() is None

    def stop(self, name: str, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL if it outlives `timeout`."""
        proc = self.procs.get(name)
        if proc is None or proc.popen.poll() is not None:
            return
        proc.popen.terminate()
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (a crash, by default) and wait for the process to be gone."""
        popen = self.procs[name].popen
        popen.send_signal(sig)
        popen.wait(timeout=30)

    def restart(self, name: str) -> Proc:
        proc = self.procs[name]
        self.stop(name)
        return self.start(name, proc.argv)

    def run_to_end(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        *,
        stopping: Callable[[], bool] = lambda: False,
    ) -> int | None:
        """Run a one-off command (a migration) to its end: its exit code, or None once `stopping()`
        (it is then left running among `procs`, for stop_all)."""
        proc = self.procs[name] = self.popen(name, argv, env)
        while (code := proc.popen.poll()) is None:
            if stopping():
                return None
            time.sleep(POLL_INTERVAL)
        del self.procs[name]
        return code

    def migrate(self, services: Iterable[str] = SERVICES) -> None:
        """Each service's `migrate`, in turn; raises Exited (with its output, if logged) on failure."""
        for key in services:
            name = f"{SERVICES[key].name}-migrate"
            code = self.run_to_end(name, SERVICES[key].migrate_argv())
            if code != 0:
                assert code is not None
                log = None if self.log_dir is None else self.log_dir / f"{name}.log"
                raise Exited(name, code, log_tail(name, log, 60) if log is not None else "")

    # -- the whole stack

    def exited(self, names: Iterable[str] | None = None) -> tuple[str, int] | None:
        """(name, exit code) of the first watched process (or the broker) that has stopped."""
        watched = [self.procs[n] for n in (self.procs if names is None else names) if n in self.procs]
        for proc in watched:
            code = proc.popen.poll()
            if code is not None:
                return proc.name, code
        if self.broker is not None and self.broker.proc is not None:
            code = self.broker.proc.poll()
            if code is not None:
                return "kafka broker", code
        return None

    def check_running(self, names: Iterable[str] | None = None) -> None:
        """Raise Exited if a watched process (or the broker) has stopped."""
        gone = self.exited(names)
        if gone is not None:
            name, code = gone
            proc = self.procs.get(name)
            raise Exited(name, code, proc.tail(30) if proc is not None and proc.log is not None else "")

    def wait_ready(
        self,
        services: Iterable[str] = SERVICES,
        timeout: float = READY_TIMEOUT,
        *,
        watch: Iterable[str] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Wait until each service answers 200 on /readyz, in turn (see wait_http)."""
        watched = None if watch is None else list(watch)
        for key in services:
            probe = f"{self.url(key)}/readyz"
            if not self.wait_http(SERVICES[key].name, probe, timeout, watch=watched, stopping=stopping):
                return False
        return True

    def wait_http(
        self,
        what: str,
        probe: str,
        timeout: float = READY_TIMEOUT,
        *,
        watch: Iterable[str] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Wait until GET `probe` answers 200. False as soon as `stopping()`; raises Exited if a
        watched process (default: every process) or the broker stops first, NotReady at `timeout`."""
        watched = None if watch is None else list(watch)
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(timeout=2.0) as client:
            while True:
                if stopping():
                    return False
                self.check_running(watched)
                try:
                    response = client.get(probe)
                    if response.status_code == 200:
                        return True
                    last = f"{response.status_code} {response.text[:300]}"
                except httpx.HTTPError as exc:
                    last = str(exc) or type(exc).__name__
                if time.monotonic() > deadline:
                    raise NotReady(what, timeout, probe, last)
                time.sleep(POLL_INTERVAL)

    def stop_all(
        self,
        timeout: float = STOP_TIMEOUT,
        *,
        force: Callable[[], bool] = lambda: False,
        on_timeout: Callable[[str], None] = lambda name: None,
    ) -> None:
        """SIGTERM to every running process, latest first (workers and APIs before what they use),
        all shutting down side by side; SIGKILL to what outlives `timeout` or once `force()`.
        The broker is left to its owner."""
        alive = [p for p in reversed(self.procs.values()) if p.popen.poll() is None]
        for proc in alive:
            proc.popen.terminate()
        deadline = time.monotonic() + timeout
        while any(p.popen.poll() is None for p in alive):
            if force() or time.monotonic() > deadline:
                for proc in alive:
                    if proc.popen.poll() is None:
                        on_timeout(proc.name)
                break
            time.sleep(0.05)
        for proc in alive:
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.popen.wait()

    def logs(self, lines: int = 40) -> str:
        """The last lines of each process's log."""
        return "\n".join(p.tail(lines) for p in self.procs.values())
