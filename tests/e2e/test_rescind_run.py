"""`rescind run` (what `make run` runs): the whole stack in the foreground until Ctrl-C, and
everything stopped when one of its processes dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rescind_common.embedded_broker import EmbeddedBroker, free_port, port_in_use

RESCIND = str(Path(sys.executable).parent / "rescind")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    # Its own broker (RESCIND_KAFKA_BOOTSTRAP): port 9092 may be held by someone's `make run`.
    with EmbeddedBroker(log_file=tmp_path / "tansu.log") as b:
        yield b


def start(tmp_path: Path, broker: EmbeddedBroker) -> tuple[subprocess.Popen[str], dict[str, int]]:
    ports = {"consent": free_port(), "registry": free_port(), "worker": free_port()}
    env = {
        **os.environ,
        "RESCIND_KAFKA_BOOTSTRAP": broker.bootstrap,
        **{f"RESCIND_{key.upper()}_PORT": str(port) for key, port in ports.items()},
    }
    for name in list(env):
        if name.endswith("_DATABASE_URL") or name == "RESCIND_STATE_DIR":
            del env[name]  # the defaults, under .rescind/ in the working directory
    proc = subprocess.Popen(
        [RESCIND, "run"],
        cwd=tmp_path,
        env=env,
        stdout=open(tmp_path / "out.txt", "w"),  # noqa: SIM115 (the child holds its own copy)
        stderr=open(tmp_path / "err.txt", "w"),  # noqa: SIM115
        text=True,
    )
    deadline = time.monotonic() + 120
    while "Rescind is running" not in (tmp_path / "out.txt").read_text():
        assert proc.poll() is None, (tmp_path / "err.txt").read_text()
        assert time.monotonic() < deadline, (tmp_path / "err.txt").read_text()
        time.sleep(0.2)
    return proc, ports


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of each direct child."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_text().replace("\0", " ")
        except FileNotFoundError:
            continue
        out.append((int(child), cmdline))
    return out


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_ctrl_c_stops_the_running_stack_and_frees_its_ports(tmp_path: Path, broker: EmbeddedBroker) -> None:
    proc, ports = start(tmp_path, broker)
    try:
        banner = (tmp_path / "out.txt").read_text()
        for port in ports.values():
            assert f"http://127.0.0.1:{port}/docs" in banner
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        assert broker.bootstrap in banner
        pids = [pid for pid, _ in children(proc.pid)]
        assert len(pids) == 8  # serve, relay and consumer of two services; the worker's serve and worker
        proc.send_signal(signal.SIGINT)
        assert finish(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "rescind: stopping (Ctrl-C again to kill)" in (tmp_path / "err.txt").read_text()
    assert not any(port_in_use(port) for port in ports.values())
    assert not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids)


def test_a_process_that_dies_stops_everything_with_an_error(tmp_path: Path, broker: EmbeddedBroker) -> None:
    proc, ports = start(tmp_path, broker)
    try:
        [consumer] = [pid for pid, cmd in children(proc.pid) if cmd.rstrip().endswith("registry consumer")]
        os.kill(consumer, signal.SIGKILL)
        assert finish(proc) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "err.txt").read_text()
    assert "rescind: registry-consumer was killed by SIGKILL unexpectedly; stopping everything" in err
    assert not any(port_in_use(port) for port in ports.values())


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to read its status."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
