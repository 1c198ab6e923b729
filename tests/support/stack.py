"""The three services as real processes (as a user runs them) on PostgreSQL or SQLite and a real
broker.

Used by the end-to-end, fault and chaos tests. Every process gets its own log file under the test's
tmp dir (a restarted process appends to it, after a marker line); on failure the tail of each log is
worth reading. `restart_all(fresh_broker=True)` is what a user of `make run` does after a crash:
everything stopped, then started again from the same databases with a new, empty broker (on the same
port, so every process finds it at the same RESCIND_KAFKA_BOOTSTRAP).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.embedded_broker import EmbeddedBroker, free_port
from rescind_common.settings import RescindSettings

BIN = Path(sys.executable).parent
SERVICES = ("consent", "registry", "worker")

# Every process the stack can run: its name, and its command line (a console script and arguments).
COMMANDS: dict[str, list[str]] = {
    "consent-api": ["consent-api", "serve"],
    "consent-relay": ["consent-api", "relay"],
    "consent-consumer": ["consent-api", "consumer"],
    "registry": ["registry", "serve"],
    "registry-relay": ["registry", "relay"],
    "registry-consumer": ["registry", "consumer"],
    "worker-api": ["revocation-worker", "serve"],
    "worker": ["revocation-worker", "worker"],
    "worker-intake": ["revocation-worker", "worker", "--role", "intake"],
    "worker-delivery": ["revocation-worker", "worker", "--role", "delivery"],
}
# `revocation-worker worker` as one process (`make run`), or split into its two roles.
WORKER_ROLES: dict[str, tuple[str, ...]] = {
    "all": ("worker",),
    "split": ("worker-intake", "worker-delivery"),
}


def sqlite_urls(folder: Path) -> dict[str, str]:
    """One SQLite file per service in `folder`, as `make run` keeps them under `.rescind/`."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: f"sqlite:///{folder / f'{name}.db'}" for name in SERVICES}


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None


@dataclass
class Stack:
    tmp: Path
    db_urls: dict[str, str]
    broker: EmbeddedBroker
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    worker: str = "all"  # a key of WORKER_ROLES

    def __post_init__(self) -> None:
        # Distinct ports: each free_port() is free when asked, so two asks may get the same one.
        taken = {self.broker.port}
        for name in SERVICES:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            self.ports[name] = port
        self.state = self.tmp / "state"
        self.state.mkdir(exist_ok=True)
        self.brokers_started = 1  # the broker given, then one per fresh_broker restart

    @property
    def names(self) -> list[str]:
        """The processes of a whole stack, in start order (that of `make run`)."""
        return [
            "consent-api",
            "consent-relay",
            "consent-consumer",
            "registry",
            "registry-relay",
            "registry-consumer",
            "worker-api",
            *WORKER_ROLES[self.worker],
        ]

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "RESCIND_STATE_DIR": str(self.state),
            "RESCIND_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "RESCIND_LOG_LEVEL": "INFO",
            "RESCIND_CONSENT_DATABASE_URL": self.db_urls["consent"],
            "RESCIND_REGISTRY_DATABASE_URL": self.db_urls["registry"],
            "RESCIND_WORKER_DATABASE_URL": self.db_urls["worker"],
            "RESCIND_CONSENT_PORT": str(self.ports["consent"]),
            "RESCIND_REGISTRY_PORT": str(self.ports["registry"]),
            "RESCIND_WORKER_PORT": str(self.ports["worker"]),
            "RESCIND_CONSENT_PUBLIC_URL": self.url("consent"),
            "RESCIND_WORKER_PUBLIC_URL": self.url("worker"),
            "RESCIND_WORKER_REGISTRY_URL": self.url("registry"),
            "RESCIND_CONSENT_REGISTRY_URL": self.url("registry"),
            "RESCIND_WORKER_ALLOW_NETWORKS": '["127.0.0.0/8"]',
            "RESCIND_WORKER_ALLOW_HTTP": "true",
            "RESCIND_WORKER_POLL_INTERVAL_SECONDS": "0.05",
            "RESCIND_WORKER_RETRY_SCHEDULE_SECONDS": "[0, 0.5, 1, 2]",
            **self.extra_env,
        }

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def migrate(self) -> None:
        for exe in ("consent-api", "registry", "revocation-worker"):
            subprocess.run([str(BIN / exe), "migrate"], env=self.env, check=True, capture_output=True)

    def start(self, name: str) -> None:
        argv = COMMANDS[name]
        log = self.tmp / f"{name}.log"
        proc = Proc(name, [str(BIN / argv[0]), *argv[1:]], log)
        with open(log, "ab") as out:
            out.write(f"===== {time.strftime('%H:%M:%S')} start {' '.join(argv)} =====\n".encode())
            out.flush()
            proc.popen = subprocess.Popen(proc.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc

    def start_all(self, *, migrate: bool = True) -> None:
        if migrate:
            self.migrate()
        for name in self.names:
            self.start(name)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        for service in SERVICES:
            wait_until(f"{service} ready", lambda s=service: _ready(self.url(s)), timeout=timeout)

    def start_dead(self) -> None:
        """Start again whatever process of the stack is not running (same broker, same databases)."""
        for name in self.dead():
            self.start(name)
        self.wait_ready()

    def dead(self) -> list[str]:
        """The processes of the stack that are not running (killed, crashed, never started)."""
        return [
            name
            for name in self.names
            if name not in self.procs
            or self.procs[name].popen is None
            or self.procs[name].popen.poll() is not None
        ]

    def replace_broker(self) -> None:
        """A new, empty broker on the same port: everything the old one held is gone."""
        port = self.broker.port
        self.broker.stop()
        self.brokers_started += 1
        self.broker = EmbeddedBroker(port=port, log_file=self.tmp / f"tansu-{self.brokers_started}.log")
        self.broker.start()

    def restart_all(self, *, fresh_broker: bool = True, worker: str | None = None) -> None:
        """Stop every process (SIGTERM, as `make run` does on Ctrl-C or when a child dies), optionally
        replace the broker by an empty one, and start the whole stack again from the same databases
        (already migrated). `worker` switches between one worker process and its split roles."""
        began = time.monotonic()
        self.stop_all()
        stopped = time.monotonic()
        if worker is not None:
            self.worker = worker
        if fresh_broker:
            self.replace_broker()
        self.start_all(migrate=False)
        ready = time.monotonic() - stopped
        print(f"restart: stopped in {stopped - began:.1f}s, started and ready in {ready:.1f}s", flush=True)

    def use_worker(self, worker: str) -> None:
        """Run the worker as one process ("all") or as its two roles ("split"), the rest untouched."""
        if worker == self.worker:
            return
        for name in WORKER_ROLES[self.worker]:
            if name in self.procs:
                self.stop(name)
        self.worker = worker
        for name in WORKER_ROLES[worker]:
            self.start(name)

    def stop(self, name: str, timeout: float = 20) -> None:
        popen = self.procs[name].popen
        if popen is None or popen.poll() is not None:
            return
        popen.terminate()
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        assert proc.popen is not None
        proc.popen.send_signal(sig)
        proc.popen.wait(timeout=30)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process holds its connections and does nothing (a consumer lagging behind)."""
        proc = self.procs[name]
        assert proc.popen is not None and proc.popen.poll() is None
        proc.popen.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        proc = self.procs[name]
        assert proc.popen is not None
        proc.popen.send_signal(signal.SIGCONT)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs.values():
            if proc.popen is not None:
                try:
                    proc.popen.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait()

    def logs(self, lines: int = 40) -> str:
        out = []
        for proc in self.procs.values():
            text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
            out.append(f"===== {proc.name} =====\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)

    def token(self, role: str, sub: str) -> dict[str, str]:
        settings = RescindSettings(state_dir=self.state)
        key = ensure_dev_key(settings.dev_auth_key_file)
        tok = mint_token(
            key, sub=sub, role=role, issuer=settings.auth_issuer, audience=settings.auth_audience
        )
        return {"Authorization": f"Bearer {tok}"}


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def running(tmp: Path, db_urls: dict[str, str]) -> Iterator[Stack]:
    """A whole stack on its own new broker for a test module: started, yielded, its process logs
    printed if anything failed, then stopped with its broker."""
    s = Stack(tmp=tmp, db_urls=db_urls, broker=EmbeddedBroker(log_file=tmp / "tansu.log").start())
    try:
        s.start_all()
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.stop_all()
        s.broker.stop()
