"""The outbox relay's wake-up: commit → published latency and idle CPU, this tree beside a base
revision's relay (`git show <base>:libs/rescind-common/src/rescind_common/outbox.py`, a 50 ms poll
on main), on PostgreSQL with a real Tansu broker, in one run. Plus what the NOTIFY trigger costs
the writers: single-row outbox transactions a second from several threads, trigger on vs off.

Each variant runs in a child process of its own (consent-api's outbox table, migrated to head, a
topic of its own):
- idle: the relay alone for `--idle` seconds after its first pass; CPU of the relay's process
  (getrusage) and of its PostgreSQL backends (/proc/<pid>/stat), as % of one core;
- latency: `--rows` outbox rows, one per transaction, a random 20-200 ms apart; for each, the
  time from the writer's commit returning to the relay's producer flush returning (the broker
  acked the record), p50/p90/p99/max.

  .venv/bin/python bench/relay_wake.py [--rows 200] [--idle 20] [--base main]

Needs PostgreSQL on 127.0.0.1:5432 (RESCIND_TEST_PG_URL); creates and drops its own database.
Writes bench/results/relay_wake.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUTBOX_PY = "libs/rescind-common/src/rescind_common/outbox.py"
TICKS = os.sysconf("SC_CLK_TCK")


def pg_admin_url() -> str:
    return os.environ.get("RESCIND_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def db_url(name: str) -> str:
    return f"{pg_admin_url().rpartition('/')[0]}/{name}"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# -- child: one relay variant ---------------------------------------------------------------------


def backend_cpu(admin: psycopg.Connection[Any], dbname: str) -> dict[int, float]:
    """CPU seconds so far of every backend connected to `dbname` but `admin` itself."""
    out: dict[int, float] = {}
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
    ).fetchall()
    for (pid,) in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def child(args: argparse.Namespace) -> None:
    import datetime as dt

    from sqlalchemy import insert

    from consent_api.db import Outbox
    from rescind_common.db import make_engine, utcnow

    if args.outbox_file:
        spec = importlib.util.spec_from_file_location("base_outbox", args.outbox_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        relay_class = module.OutboxRelay
    else:
        from rescind_common.outbox import OutboxRelay as relay_class

    url = db_url(args.db)
    relay = relay_class(
        make_engine(url, pool_size=2),
        Outbox,
        service=f"bench-{args.variant}",
        bootstrap=args.bootstrap,
        topics=[args.topic],
        partitions=1,
        retention=dt.timedelta(hours=72),
    )
    published: dict[str, float] = {}
    send = relay._send

    def timed_send(rows: list[Any]) -> None:
        send(rows)
        now = time.perf_counter()
        for row in rows:
            published.setdefault(row.event_id, now)

    relay._send = timed_send
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while relay._last_topic_check == 0 or not getattr(relay, "listening", True):
        if time.monotonic() > deadline:
            raise SystemExit("relay did not start")
        time.sleep(0.05)
    time.sleep(1.0)

    # Idle: nothing written.
    with psycopg.connect(url, autocommit=True) as admin:
        before_pg = backend_cpu(admin, args.db)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        time.sleep(args.idle)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        after_pg = backend_cpu(admin, args.db)
    wall = t1 - t0
    relay_cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / wall * 100
    pg_cpu = sum(after_pg[p] - before_pg[p] for p in after_pg if p in before_pg) / wall * 100

    # Latency: one row per transaction, at random moments relative to the relay's poll.
    writer = make_engine(url, pool_size=1)
    rng = random.Random(7)
    committed: dict[str, float] = {}
    for i in range(args.rows):
        time.sleep(rng.uniform(0.02, 0.2))
        event_id = f"evt_{args.variant}_{i:05d}"
        with writer.begin() as conn:
            conn.execute(
                insert(Outbox).values(
                    event_id=event_id,
                    topic=args.topic,
                    key=f"k{i % 7}",
                    event_type="bench",
                    payload=b"x" * 200,
                    created_at=utcnow(),
                )
            )
        committed[event_id] = time.perf_counter()
    deadline = time.monotonic() + 30
    while len(published) < args.rows and time.monotonic() < deadline:
        time.sleep(0.05)
    relay.stop_event.set()
    thread.join(timeout=30)
    writer.dispose()
    relay.engine.dispose()
    lat = [(published[e] - committed[e]) * 1000 for e in committed if e in published]
    print(
        json.dumps(
            {
                "variant": args.variant,
                "rows": args.rows,
                "published": len(lat),
                "latency_ms": {
                    "p50": pct(lat, 50),
                    "p90": pct(lat, 90),
                    "p99": pct(lat, 99),
                    "max": max(lat),
                    "mean": statistics.fmean(lat),
                },
                "idle_seconds": round(wall, 1),
                "idle_relay_cpu_pct": relay_cpu,
                "idle_pg_backends_cpu_pct": pg_cpu,
            }
        )
    )


# -- parent ---------------------------------------------------------------------------------------


def writer_throughput(url: str, seconds: float, threads: int) -> float:
    """Single-row outbox transactions a second from `threads` writers."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def work(n: int) -> None:
        with psycopg.connect(url) as conn:
            while time.monotonic() < stop:
                conn.execute(
                    "INSERT INTO outbox (event_id, topic, key, event_type, payload, created_at) "
                    "VALUES (%s, 'bench.throughput', 'k', 'x', %s, now())",
                    (f"evt_w{n}_{uuid.uuid4().hex}", b"x" * 200),
                )
                conn.commit()
                counts[n] += 1

    ts = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / seconds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--base", default="main")
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--write-seconds", type=float, default=5.0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="head", help=argparse.SUPPRESS)
    ap.add_argument("--outbox-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--db", default="", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    ap.add_argument("--topic", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0

    from consent_api.migrate import upgrade
    from rescind_common.embedded_broker import EmbeddedBroker

    name = f"rescind_bench_wake_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    results: dict[str, Any] = {"base": args.base, "variants": []}
    try:
        upgrade(db_url(name))
        with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
            base_file = Path(tmp) / "base_outbox.py"
            base_src = subprocess.check_output(["git", "show", f"{args.base}:{OUTBOX_PY}"], cwd=ROOT)
            base_file.write_bytes(base_src)
            for variant, outbox_file in ((args.base, str(base_file)), ("head", "")):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        f"--variant={variant}",
                        f"--outbox-file={outbox_file}",
                        f"--db={name}",
                        f"--bootstrap={broker.bootstrap}",
                        f"--topic=bench.wake.{variant}.{uuid.uuid4().hex[:8]}",
                        f"--rows={args.rows}",
                        f"--idle={args.idle}",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                results["variants"].append(json.loads(out.strip().splitlines()[-1]))
        # What the trigger costs writers (its NOTIFY serialises the commits that send one).
        url = db_url(name)
        writes: dict[str, list[float]] = {"trigger": [], "no_trigger": []}
        for _ in range(2):
            for mode in ("trigger", "no_trigger"):
                with psycopg.connect(url, autocommit=True) as conn:
                    action = "ENABLE" if mode == "trigger" else "DISABLE"
                    conn.execute(f"ALTER TABLE outbox {action} TRIGGER outbox_notify")
                writes[mode].append(writer_throughput(url, args.write_seconds, args.writers))
        results["writer_tx_per_second"] = {k: statistics.fmean(v) for k, v in writes.items()}
        results["writers"] = args.writers
    finally:
        with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    heads = ("p50 ms", "p90 ms", "p99 ms", "max ms")
    print(
        f"{'variant':<10} "
        + " ".join(f"{h:>8}" for h in heads)
        + f" {'idle relay CPU':>15} {'idle PG CPU':>12}"
    )
    for v in results["variants"]:
        lat = v["latency_ms"]
        print(
            f"{v['variant']:<10} {lat['p50']:>8.1f} {lat['p90']:>8.1f} {lat['p99']:>8.1f} {lat['max']:>8.1f} "
            f"{v['idle_relay_cpu_pct']:>14.2f}% {v['idle_pg_backends_cpu_pct']:>11.2f}%"
        )
    w = results["writer_tx_per_second"]
    print(
        f"outbox writes, {args.writers} writers, 1 row/transaction: {w['trigger']:.0f}/s with the NOTIFY "
        f"trigger, {w['no_trigger']:.0f}/s without"
    )
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "relay_wake.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
