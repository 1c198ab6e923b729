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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rescind_cli.processes import (
    COMMANDS,
    SERVICES,
    WORKER_ROLES,
    Launcher,
    Proc,
    free_ports,
    sqlite_urls,
    stack_env,
    stack_names,
)
from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.embedded_broker import EmbeddedBroker
from rescind_common.settings import RescindSettings

__all__ = [
    "COMMANDS",
    "SERVICES",
    "WORKER_ROLES",
    "Proc",
    "Stack",
    "running",
    "running_on_postgres",
    "sqlite_urls",
]


@dataclass
class Stack:
    """The launcher of `make run` (rescind_cli.processes) on the test's databases and broker, with
    what only tests need: quick worker timings, pause/resume, a broker replaced under the stack,
    tokens."""

    tmp: Path
    db_urls: dict[str, str]
    broker: EmbeddedBroker
    ports: dict[str, int] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    worker: str = "all"  # a key of WORKER_ROLES

    def __post_init__(self) -> None:
        self.ports = free_ports(SERVICES, taken={self.broker.port})
        self.state = self.tmp / "state"
        self.state.mkdir(exist_ok=True)
        self.brokers_started = 1  # the broker given, then one per fresh_broker restart
        self.launcher = Launcher(self.env, self.ports, log_dir=self.tmp)

    @property
    def procs(self) -> dict[str, Proc]:
        return self.launcher.procs

    @property
    def names(self) -> list[str]:
        """The processes of a whole stack, in start order (that of `make run`)."""
        return stack_names(self.worker)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **stack_env(self.ports, bootstrap=self.broker.bootstrap, state=self.state, db_urls=self.db_urls),
            "RESCIND_LOG_LEVEL": "INFO",
            "RESCIND_WORKER_POLL_INTERVAL_SECONDS": "0.05",
            "RESCIND_WORKER_RETRY_SCHEDULE_SECONDS": "[0, 0.5, 1, 2]",
            **self.extra_env,
        }

    def url(self, service: str) -> str:
        return self.launcher.url(service)

    def migrate(self) -> None:
        self.launcher.env = self.env
        self.launcher.migrate()

    def start(self, name: str) -> None:
        self.launcher.env = self.env  # the broker or extra_env may have changed since
        self.launcher.start(name)

    def start_all(self, *, migrate: bool = True) -> None:
        if migrate:
            self.migrate()
        for name in self.names:
            self.start(name)
        self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        self.launcher.wait_ready(timeout=timeout, watch=self.names)

    def start_dead(self) -> None:
        """Start again whatever process of the stack is not running (same broker, same databases)."""
        for name in self.dead():
            self.start(name)
        self.wait_ready()

    def dead(self) -> list[str]:
        """The processes of the stack that are not running (killed, crashed, never started)."""
        return [name for name in self.names if not self.launcher.running(name)]

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
        self.launcher.stop(name, timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.launcher.kill(name, sig)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process holds its connections and does nothing (a consumer lagging behind)."""
        assert self.launcher.running(name)
        self.procs[name].popen.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].popen.send_signal(signal.SIGCONT)

    def stop_all(self) -> None:
        self.launcher.stop_all()

    def logs(self, lines: int = 40) -> str:
        return self.launcher.logs(lines)

    def token(self, role: str, sub: str) -> dict[str, str]:
        settings = RescindSettings(state_dir=self.state)
        key = ensure_dev_key(settings.dev_auth_key_file)
        tok = mint_token(
            key, sub=sub, role=role, issuer=settings.auth_issuer, audience=settings.token_audiences
        )
        return {"Authorization": f"Bearer {tok}"}


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


@contextlib.contextmanager
def running_on_postgres(label: str, pg_database: Callable[[str], str], tmp: Path) -> Iterator[Stack]:
    """`running` on new PostgreSQL databases of its own, `<label>_<service>`."""
    with running(tmp, {key: pg_database(f"{label}_{key}") for key in SERVICES}) as s:
        yield s
