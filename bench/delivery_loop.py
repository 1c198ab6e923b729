"""The revocation-worker's delivery loop on its own, this tree's code beside a base revision's.

K notices (default 3,000) for 12 licensees, one endpoint each at a local aiohttp receiver
(bench/receiver.py, which verifies every signature), are delivered by `Deliverer.run` in a child
process until every delivery succeeded. Per variant and round: deliveries/s (from the child's
first claim to the last delivery recorded) and the child's CPU ms per delivery (user + system,
imports excluded). Then the idle CPU of `revocation-worker worker` over 10 s (an empty database,
an embedded broker), per variant (and per role where the variant has roles).

The base variant is `git archive <rev>` of services/revocation-worker/src put first on PYTHONPATH
(default rev: 0908bca, before batched recording); both run in the same run, rounds alternating.

  .venv/bin/python bench/delivery_loop.py [--notices 3000] [--rounds 2] [--base REV] [--idle 10]
      [--pyspy /path/to/py-spy]  (collapsed stacks in bench/results/profiles/delivery_loop_<variant>.txt)

Needs PostgreSQL on 127.0.0.1:5432 (RESCIND_TEST_PG_URL); creates and drops its own database.
Writes bench/results/delivery_loop.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
from _common import (
    REPO,
    RESULTS,
    compare_variants,
    create_database,
    drop_database,
    export_tree,
    proc_cpu,
    self_cpu,
    with_pythonpath,
    write_result,
)

if TYPE_CHECKING:
    from rescind_cli.processes import Launcher

WORKER_SRC = "services/revocation-worker/src"
DEFAULT_BASE = "0908bca"
LICENSEES = 12


# This bench reads the tests' variable, not RESCIND_BENCH_PG_URL.
PG_ADMIN = os.environ.get("RESCIND_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def worker_env(db_url: str, key: str, state_dir: str, pythonpath: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "RESCIND_WORKER_DATABASE_URL": db_url,
        "RESCIND_WORKER_SECRET_KEY": key,
        "RESCIND_STATE_DIR": state_dir,
        "RESCIND_WORKER_ALLOW_NETWORKS": '["127.0.0.0/8"]',
        "RESCIND_WORKER_ALLOW_HTTP": "true",
        "RESCIND_LOG_LEVEL": "WARNING",
    }
    return with_pythonpath(env, pythonpath) if pythonpath else env


# -- the child: one Deliverer until SIGTERM ---------------------------------------------------------


def child() -> None:
    from revocation_worker.config import WorkerSettings
    from revocation_worker.delivery.loop import Deliverer
    from revocation_worker.runner import build_context

    ctx = build_context(WorkerSettings())
    kwargs: dict[str, Any] = {}
    if "signalled" in inspect.signature(Deliverer).parameters:
        kwargs["signalled"] = True  # as in `revocation-worker worker`: the recorder wakes the claimer
    deliverer = Deliverer(ctx, **kwargs)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(json.dumps({"ready": True}), flush=True)
        await deliverer.run(stop)

    cpu = self_cpu()
    asyncio.run(main())
    print(json.dumps({"cpu_s": self_cpu() - cpu}), flush=True)


# -- the driver --------------------------------------------------------------------------------------


def seed(db_url: str, key: str, state_dir: str, receiver: str, n: int) -> None:
    """12 licensees with one endpoint each (secrets told to the receiver) and n notices."""
    os.environ.update(worker_env(db_url, key, state_dir, None))
    from rescind_common.db import utcnow
    from revocation_worker.config import WorkerSettings
    from revocation_worker.endpoints.models import Endpoint
    from revocation_worker.intake.models import Revocation
    from revocation_worker.notices.service import HolderNotice, RevocationSamples, create_many
    from revocation_worker.runner import build_context
    from revocation_worker.secrets import new_secret

    ctx = build_context(WorkerSettings())
    secrets: dict[str, str] = {}
    licensees = [f"lic_bench{i:02d}" for i in range(LICENSEES)]
    with ctx.session_factory() as session, session.begin():
        for lic in licensees:
            if session.get(Endpoint, f"ep_{lic}") is None:
                secret = new_secret()
                secrets[lic] = secret
                key_id, sealed = ctx.secrets.seal(secret, f"ep_{lic}")
                session.add(
                    Endpoint(
                        id=f"ep_{lic}",
                        licensee_id=lic,
                        url=f"{receiver}/hook/{lic}",
                        status="active",
                        secret_sealed=sealed,
                        secret_key_id=key_id,
                        created_at=utcnow(),
                    )
                )
    if secrets:
        httpx.post(f"{receiver}/_secrets", json=secrets, timeout=10).raise_for_status()
    now = utcnow()
    for start in range(0, n, 500):
        batch: list[tuple[Revocation, list[HolderNotice]]] = []
        with ctx.session_factory() as session, session.begin():
            for i in range(start, min(n, start + 500)):
                rev = Revocation(
                    id=f"rev_{uuid.uuid4().hex[:20]}",
                    subject_id=f"sub_{uuid.uuid4().hex[:20]}",
                    trigger="subject",
                    consent_count=1,
                    state="resolved",
                    occurred_at=now,
                    created_at=now,
                )
                session.add(rev)
                # The licensee holds one of the revocation's two samples, so that the notice keeps
                # its sample in notice_samples: the base variant (before 0003) reads only those.
                refs = {f"smp_{uuid.uuid4().hex[:16]}": ("0" * 64, "face_image") for _ in range(2)}
                shared = RevocationSamples(set(refs), refs)
                holder: HolderNotice = {
                    "licensee_id": licensees[i % LICENSEES],
                    "sample_ids": {min(refs)},
                    "revocation_samples": shared,
                    "license_ids": [],
                    "models": [{"model_id": f"mdl_{i % 40:04d}", "name": "faces", "version": "3"}],
                }
                batch.append((rev, [holder]))
            session.flush()
            create_many(session, ctx, batch, now)
    ctx.engine.dispose()


def counts(db_url: str) -> tuple[int, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'pending') "
            "FROM deliveries"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def deliver(
    variant: str, src: Path, env: dict[str, str], db_url: str, n: int, pyspy: str | None = None
) -> dict[str, Any]:
    done_before, pending = counts(db_url)
    assert pending == n, (pending, n)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child"],
        env=with_pythonpath(env, src),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # ready: imports done, the loop starts now
    spy = None
    if pyspy:  # collapsed stacks of the child while it delivers (py-spy is not a project dependency)
        out_file = RESULTS / "profiles" / f"delivery_loop_{variant}.txt"
        out_file.parent.mkdir(parents=True, exist_ok=True)
        spy_args = ["record", "--pid", str(proc.pid), "--format", "raw", "--rate", "200", "-o", str(out_file)]
        spy = subprocess.Popen(
            [pyspy, *spy_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    start = time.perf_counter()
    while True:
        done, pending = counts(db_url)
        if done - done_before >= n:
            break
        if time.perf_counter() - start > 300:
            raise RuntimeError(f"{variant}: only {done - done_before} of {n} delivered in 300 s")
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    cpu = json.loads(out.strip().splitlines()[-1])["cpu_s"]
    return {
        "variant": variant,
        "deliveries": n,
        "wall_s": round(wall, 3),
        "deliveries_per_s": round(n / wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_delivery": round(cpu * 1000 / n, 3),
    }


def idle_cpu(
    stack: Launcher, variant: str, src: Path, env: dict[str, str], role: str | None, seconds: float
) -> dict[str, Any]:
    name = f"worker-{variant}-{role or 'all'}"
    args = [sys.executable, "-m", "revocation_worker", "worker"] + (["--role", role] if role else [])
    proc = stack.start(name, args, with_pythonpath(env, src)).popen
    try:
        # Start-up (imports take seconds of CPU on a busy machine, topic checks, the consumer group
        # join) is over once two consecutive seconds cost under 20% of a core; at most 60 s.
        time.sleep(5)
        quiet, last, give_up = 0, proc_cpu(proc.pid), time.monotonic() + 60
        while quiet < 2 and time.monotonic() < give_up:
            stack.check_running([name])
            time.sleep(1)
            now = proc_cpu(proc.pid)
            quiet = quiet + 1 if now - last < 0.2 else 0
            last = now
        before = proc_cpu(proc.pid)
        time.sleep(seconds)
        used = proc_cpu(proc.pid) - before
    finally:
        stack.stop(name, timeout=30)
    return {
        "variant": variant,
        "role": role or "all",
        "seconds": seconds,
        "cpu_s": round(used, 3),
        "core_percent": round(100 * used / seconds, 2),
    }


def driver(args: argparse.Namespace) -> None:
    from rescind_cli.processes import Launcher
    from rescind_common.embedded_broker import EmbeddedBroker, free_port
    from revocation_worker.migrate import upgrade

    db_url = create_database("delivery", PG_ADMIN)
    key = base64.b64encode(os.urandom(32)).decode()
    port = free_port()
    receiver_url = f"http://127.0.0.1:{port}"
    # The receiver and the idle workers; each one's output in its own log file there.
    stack = Launcher(os.environ, {}, log_dir=Path(tempfile.mkdtemp(prefix="rescind-bench-delivery-")))
    stack.start("receiver", [sys.executable, str(Path(__file__).parent / "receiver.py"), str(port)])
    results: dict[str, Any] = {"notices": args.notices, "base": args.base, "runs": [], "idle": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            upgrade(db_url)
            base = export_tree(args.base, Path(tmp), WORKER_SRC) / WORKER_SRC
            variants = {"base": base, "new": REPO / WORKER_SRC}
            env = worker_env(db_url, key, tmp, None)
            stack.wait_http("the receiver", f"{receiver_url}/_count", 10)
            for r in range(args.rounds):
                for variant in ("base", "new") if r % 2 == 0 else ("new", "base"):
                    seed(db_url, key, tmp, receiver_url, args.notices)
                    row = deliver(variant, variants[variant], env, db_url, args.notices, args.pyspy)
                    row["round"] = r
                    results["runs"].append(row)
                    print(json.dumps(row), flush=True)
            if args.idle > 0:
                with EmbeddedBroker(free_port()) as broker:
                    ienv = {**env, "RESCIND_KAFKA_BOOTSTRAP": broker.bootstrap}
                    # The last: the delivery role polling every 0.1 s instead of waiting for NOTIFY.
                    polls = {"RESCIND_WORKER_IDLE_WAKE_SECONDS": "0.1"}
                    for variant, role, extra in (
                        ("base", None, {}),
                        ("new", None, {}),
                        ("new", "intake", {}),
                        ("new", "delivery", {}),
                        ("new", "delivery", polls),
                    ):
                        row = idle_cpu(stack, variant, variants[variant], {**ienv, **extra}, role, args.idle)
                        row["polls"] = bool(extra)
                        results["idle"].append(row)
                        print(json.dumps(row), flush=True)
    finally:
        stack.stop_all(timeout=10)
        drop_database(db_url, PG_ADMIN)
    if results["runs"]:
        summary: dict[str, Any] = {}
        for variant in ("base", "new"):
            rows = [r for r in results["runs"] if r["variant"] == variant]
            summary[variant] = {
                "deliveries_per_s": round(sum(r["deliveries_per_s"] for r in rows) / len(rows), 1),
                "cpu_ms_per_delivery": round(sum(r["cpu_ms_per_delivery"] for r in rows) / len(rows), 3),
            }
        heads = ("deliveries/s", "CPU ms/delivery")
        compare_variants(summary, "deliveries_per_s", "cpu_ms_per_delivery", heads)
        results["summary"] = summary
    for row in results["idle"]:
        how = " (0.1 s polls)" if row.get("polls") else ""
        print(f"idle {row['variant']:4} --role {row['role']:8} {row['core_percent']:6.2f}% of a core{how}")
    write_result("delivery_loop.json", results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notices", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base", default=DEFAULT_BASE)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured (0: skip)")
    parser.add_argument("--pyspy", metavar="PATH", help="py-spy binary: profile each delivering child")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
    else:
        driver(args)


if __name__ == "__main__":
    main()
