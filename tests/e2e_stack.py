"""The three services as real processes (as a user runs them) on PostgreSQL and a real broker.

Used by the end-to-end and fault tests. Every process gets its own log file under the test's
tmp dir; on failure the tail of each log is worth reading.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.embedded_broker import EmbeddedBroker, free_port
from rescind_common.settings import RescindSettings

BIN = Path(sys.executable).parent


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

    def __post_init__(self) -> None:
        self.ports = {"consent": free_port(), "registry": free_port(), "worker": free_port()}
        self.state = self.tmp / "state"
        self.state.mkdir(exist_ok=True)

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
        argv = {
            "consent-api": ["consent-api", "serve"],
            "consent-relay": ["consent-api", "relay"],
            "consent-consumer": ["consent-api", "consumer"],
            "registry": ["registry", "serve"],
            "registry-relay": ["registry", "relay"],
            "registry-consumer": ["registry", "consumer"],
            "worker-api": ["revocation-worker", "serve"],
            "worker": ["revocation-worker", "worker"],
        }[name]
        log = self.tmp / f"{name}.log"
        proc = Proc(name, [str(BIN / argv[0]), *argv[1:]], log)
        with open(log, "ab") as out:
            proc.popen = subprocess.Popen(proc.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc

    def start_all(self) -> None:
        self.migrate()
        for name in (
            "consent-api",
            "consent-relay",
            "consent-consumer",
            "registry",
            "registry-relay",
            "registry-consumer",
            "worker-api",
            "worker",
        ):
            self.start(name)
        for service in ("consent", "registry", "worker"):
            wait_until(f"{service} ready", lambda s=service: _ready(self.url(s)), timeout=60)

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

    def logs(self) -> str:
        out = []
        for proc in self.procs.values():
            text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
            out.append(f"===== {proc.name} =====\n" + "\n".join(text.splitlines()[-40:]))
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
