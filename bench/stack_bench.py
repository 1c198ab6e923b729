"""The whole stack under load: revoke -> verified webhook, fan-out, grants, each beside its raw path.

Starts, on fresh PostgreSQL databases and a fresh Tansu broker, the three services as processes
with the launcher of `make run` and the tests (rescind_cli.processes: consent-api serve/relay/consumer,
registry serve/consumer, revocation-worker serve/worker; defaults except loopback webhooks allowed), plus
  - a receiver process (bench/receiver.py, aiohttp) that verifies every webhook with the
    `standardwebhooks` library and records when it arrived, and
  - a bare FastAPI endpoint (bench/bare_app.py, uvicorn, one worker like consent-api) doing one
    single-row INSERT + COMMIT,
and measures, every setup step done before its clock starts:

  1. raw paths, with the same libraries: psycopg INSERT+COMMIT; kafka-python produce->consume round
     trip on the same broker (the relay's producer settings, a consumer with the services' settings);
     aiohttp POST of a signed webhook to the receiver (verified there); the bare endpoint.
  2. grants/s: POST /v1/consents (1 sample) from 1 client, then from N concurrent clients (one
     subject each), beside the bare endpoint under the same clients; samples/s of a 10,000-sample
     POST /v1/samples/batch beside a psycopg executemany of 10,000 rows.
  3. revoke -> verified-webhook latency at fixed offered rates (open loop, RESCIND_BENCH_RATES,
     RESCIND_BENCH_SECONDS each): every revocation withdraws one sample of a consent licensed to 2
     or 3 licensees; latency runs from just before the revoke HTTP call to the verified receipt at
     the LAST of its licensees ("all holders told"); then a search for the highest sustained rate.
  4. fan-out: one subject with 10,000 samples, 100 licensees each licensed all of them (or a share,
     RESCIND_BENCH_FANOUT_SHARE), revoke everything: time until all 100 receivers have a verified
     delivery, and the worker's peak RSS during it (VmHWM, reset first via /proc/<pid>/clear_refs).

Prints progress and a table, writes bench/results/stack.json. Everything it starts is stopped and
its databases dropped, whatever happens. Not part of `make test`.

  .venv/bin/python bench/stack_bench.py
  RESCIND_BENCH_SECONDS=15        seconds per fixed rate (default 60)
  RESCIND_BENCH_RATES=100,500     offered revocations/s
  RESCIND_BENCH_PROFILE=1         py-spy the services during the top rate and the fan-out
                                  (RESCIND_BENCH_PYSPY=/path/to/py-spy; not a project dependency)
  RESCIND_BENCH_SKIP=fanout,...   skip some of: raw, grants, batch, latency, ladder, fanout
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg
from _common import (
    RESULTS,
    TICK,
    backend_pids,
    bearer,
    create_database,
    create_topic,
    database_name,
    drop_database,
    machine,
    nearest_rank,
    print_table,
    proc_cpu,
    random_sha256,
    raw_commits,
    reset_peak_rss,
    rss_kb,
    server_version,
    write_result,
)
from kafka import KafkaConsumer, TopicPartition
from standardwebhooks.webhooks import Webhook

from rescind_cli.processes import SERVICES, Launcher, free_ports, stack_env
from rescind_common.kafka import make_producer
from rescind_common.proto.rescind.v1 import consent_events_pb2 as consent_pb

HERE = Path(__file__).resolve().parent


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


SECONDS = _env_float("RESCIND_BENCH_SECONDS", 60)
RATES = [int(r) for r in os.environ.get("RESCIND_BENCH_RATES", "100,500").split(",") if r.strip()]
STEP_SECONDS = _env_float("RESCIND_BENCH_STEP_SECONDS", min(SECONDS, 20))
MAX_STEPS = int(_env_float("RESCIND_BENCH_MAX_STEPS", 4))
P99_LIMIT = _env_float("RESCIND_BENCH_P99_LIMIT", 1.0)
CLIENTS = int(_env_float("RESCIND_BENCH_CLIENTS", 8))
GRANTS = int(_env_float("RESCIND_BENCH_GRANTS", 300))
FANOUT_LICENSEES = int(_env_float("RESCIND_BENCH_FANOUT_LICENSEES", 100))
FANOUT_SAMPLES = int(_env_float("RESCIND_BENCH_FANOUT_SAMPLES", 10_000))
FANOUT_SHARE = _env_float("RESCIND_BENCH_FANOUT_SHARE", 1.0)
FANOUT_TIMEOUT = _env_float("RESCIND_BENCH_FANOUT_TIMEOUT", 300)
SKIP = {s.strip() for s in os.environ.get("RESCIND_BENCH_SKIP", "").split(",") if s.strip()}
PROFILE = os.environ.get("RESCIND_BENCH_PROFILE", "") not in ("", "0")
KEEP = bool(os.environ.get("RESCIND_BENCH_KEEP"))

LAT_LICENSEES = 12  # licensees in the latency runs; each revocation reaches 2 or 3 of them
UNIT_SAMPLES = 100  # at most this many samples per consent in the latency pool; a revocation withdraws one
SUBJECT_REVISIT_S = 2.0  # ... and enough subjects that each is revoked at most once per this many seconds
INFLIGHT_CAP = 256  # open-loop sender: at most this many revoke calls outstanding, the rest skipped
BATCH = 10_000
PURPOSE = "model_training"

# After a rate's window: wait at most this long for its webhooks; what is still missing then counts
# as not delivered (latency "inf"), and the next phase gets a fresh stack (no inherited backlog).
DRAIN_S = _env_float("RESCIND_BENCH_DRAIN_SECONDS", 30)

T_START = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T_START:7.1f}s] {msg}", flush=True)


def dist_ms(values: list[float]) -> dict[str, Any]:
    """n, p50/p95/p99/max in milliseconds."""
    out: dict[str, Any] = {"n": len(values)}
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100)):
        v = nearest_rank(values, p)
        # inf: not delivered by the end of the drain window
        out[name] = None if v is None else "inf" if math.isinf(v) else round(v * 1000, 2)
    return out


def ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return None
    return round(a / b, 3)


# -- processes ----------------------------------------------------------------------------------


class RssSampler:
    """Polls VmRSS of some processes every 50 ms (a cross-check of VmHWM)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak_kb: dict[str, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, pid in self.pids.items():
                kb = rss_kb(pid)
                if kb is not None and kb > self.peak_kb[name]:
                    self.peak_kb[name] = kb

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Profiler:
    """py-spy record (raw collapsed stacks, non-blocking) on some processes while a block runs."""

    def __init__(self, label: str, pids: dict[str, int], out_dir: Path) -> None:
        self.label = label
        self.pids = pids
        self.out_dir = out_dir
        self.procs: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self.exe = os.environ.get("RESCIND_BENCH_PYSPY") or shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"

    def __enter__(self) -> Profiler:
        if not PROFILE:
            return self
        if not Path(self.exe).exists():
            say(f"py-spy not found at {self.exe}: not profiling")
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            out = self.out_dir / f"{self.label}-{name}.txt"
            argv = [self.exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "50"]
            argv += ["--nonblocking", "--output", str(out), "--duration", "600"]
            if os.environ.get("RESCIND_BENCH_PROFILE_IDLE"):
                argv.append("--idle")  # wall time: waiting threads too
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append((name, out, p))
        time.sleep(1.0)  # let py-spy attach before the clock starts
        return self

    def __exit__(self, *exc: object) -> None:
        for _, _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for _, _, p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def summary(self, top: int = 12) -> dict[str, Any]:
        return {name: summarize_profile(out, top) for name, out, _ in self.procs if out.exists()}


def summarize_profile(path: Path, top: int) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the busiest leaf functions (self) and project frames (total)."""
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        samples += count
        frames = stack.split(";")
        self_counts[_short(frames[-1])] += count
        seen = set()
        for f in frames:
            if any(k in f for k in ("consent_api", "registry/", "revocation_worker", "rescind_common")):
                s = _short(f)
                if s not in seen:
                    seen.add(s)
                    total_counts[s] += count
    share = (lambda c: round(100 * c / samples, 1)) if samples else (lambda c: 0.0)
    return {
        "samples": samples,
        "self_top": [[f, share(c)] for f, c in self_counts.most_common(top)],
        "project_inclusive_top": [[f, share(c)] for f, c in total_counts.most_common(top)],
    }


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py:123)" keeping a package hint
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


class Stack(Launcher):
    """The launcher of `make run` (rescind_cli.processes) on fresh databases and a fresh broker, plus
    the receiver and the bare endpoint; every database dropped by close()."""

    # Those of `make run` but registry-relay: nothing here reads the license events it publishes.
    SERVICE_PROCS = (
        "consent-api",
        "consent-relay",
        "consent-consumer",
        "registry",
        "registry-consumer",
        "revocation-worker",
        "worker",
    )

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__({}, free_ports(("consent", "registry", "worker", "receiver", "bare")), log_dir=tmp)
        self.tmp = tmp
        self.tag = uuid.uuid4().hex[:8]
        self.db_urls: dict[str, str] = {}  # filled by up(), dropped by close()
        self.state = tmp / "state"
        self.state.mkdir(parents=True, exist_ok=True)

    @property
    def dbs(self) -> dict[str, str]:
        """consent, registry, worker, raw -> database name."""
        return {s: database_name(url) for s, url in self.db_urls.items()}

    def db_url(self, name: str) -> str:
        return self.db_urls[name]

    def up(self) -> None:
        for s in ("consent", "registry", "worker", "raw"):
            self.db_urls[s] = create_database(f"{self.tag}_{s}")
        broker = self.start_broker(log_file=self.tmp / "broker.log")
        services = {s: self.ports[s] for s in SERVICES}
        self.env = {
            **os.environ,
            **stack_env(
                services,
                bootstrap=broker.bootstrap,
                state=self.state,
                db_urls={s: self.db_urls[s] for s in SERVICES},
            ),
            "RESCIND_LOG_LEVEL": "INFO",
        }
        bearer(self.state, "operator", "bench")  # creates the signing key before the services start
        self.migrate()
        for name in self.SERVICE_PROCS:
            self.start(name)
        self.start("receiver", [sys.executable, str(HERE / "receiver.py"), str(self.ports["receiver"])])
        self.start(
            "bare", [sys.executable, str(HERE / "bare_app.py"), str(self.ports["bare"]), self.db_url("raw")]
        )
        self.wait_ready(services, 90)
        self.wait_http("receiver", f"{self.url('receiver')}/_count", 30)
        self.wait_http("bare endpoint", f"{self.url('bare')}/healthz", 30)

    def tail(self, names: list[str], lines: int = 30) -> str:
        return "\n".join(self.procs[n].tail(lines) for n in names if n in self.procs)

    def pid(self, name: str) -> int:
        return self.procs[name].popen.pid

    def token(self, role: str, sub: str) -> dict[str, str]:
        return bearer(self.state, role, sub, ttl=dt.timedelta(hours=6))

    def close(self) -> None:
        self.stop_all(on_timeout=lambda name: say(f"{name} did not stop on SIGTERM: killing it"))
        if self.broker is not None:
            self.broker.stop()
        if KEEP:
            say(f"kept databases {list(self.dbs.values())} and logs in {self.tmp}")
            return
        for url in self.db_urls.values():
            drop_database(url)


# -- the receiver's records -----------------------------------------------------------------------


class Receipts:
    """Pulls the receiver's records; keeps the first verified receipt per (revocation, endpoint key)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.next = 0
        self.first: dict[tuple[str, str], float] = {}
        self.body_bytes: dict[tuple[str, str], int] = {}
        self.duplicates = 0
        self.client = httpx.Client(timeout=30)

    def pull(self) -> int:
        got = 0
        for _ in range(1000):  # bounded: 50,000 a page
            page = self.client.get(f"{self.base}/_events", params={"after": self.next}).json()
            for t, key, rev, _notice, _wid, nbytes in page["events"]:
                k = (rev or "", key)
                if k in self.first:
                    self.duplicates += 1
                    continue
                self.first[k] = t
                self.body_bytes[k] = nbytes
            got += len(page["events"])
            self.next = page["next"]
            if not page["events"]:
                break
        return got

    def count(self) -> dict[str, int]:
        return dict(self.client.get(f"{self.base}/_count").json())

    def add_secrets(self, secrets: dict[str, str]) -> None:
        self.client.post(f"{self.base}/_secrets", json=secrets).raise_for_status()

    def wait_for(self, expected: set[tuple[str, str]], *, cap: float, stall: float, what: str) -> float:
        """Wait until every expected pair arrived, nothing new came for `stall` s, or `cap` s passed."""
        start = last_change = last_print = time.monotonic()
        missing = {k for k in expected if k not in self.first}
        while missing and time.monotonic() - start < cap:
            if self.pull():
                last_change = time.monotonic()
            missing = {k for k in missing if k not in self.first}
            if time.monotonic() - last_change > stall:
                break
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                say(f"  {what}: {len(expected) - len(missing)}/{len(expected)} verified deliveries")
            if missing:
                time.sleep(0.25)
        return time.monotonic() - start

    def settle(self, quiet: float = 5, cap: float = 180) -> float:
        """Wait until no delivery has arrived for `quiet` s (a previous phase's backlog drained)."""
        start = last = time.monotonic()
        seen = self.count()["verified"]
        while time.monotonic() - start < cap:
            time.sleep(0.5)
            now = self.count()["verified"]
            if now != seen:
                seen, last = now, time.monotonic()
            elif time.monotonic() - last >= quiet:
                break
        return time.monotonic() - start


# -- setup through the public APIs ----------------------------------------------------------------


class Api:
    """Sync HTTP for setup (several threads, a client each), with retries for the projection lag."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.local = threading.local()
        self.ops = stack.token("operator", "bench-ops")

    @property
    def http(self) -> httpx.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(timeout=120)
        return client

    def call(
        self, method: str, url: str, headers: dict[str, str], body: Any, expect: int, attempts: int = 60
    ) -> dict[str, Any]:
        for i in range(attempts):
            r = self.http.request(method, url, headers=headers, json=body)
            if r.status_code == expect:
                return dict(r.json())
            # 409: the registry's projection has not seen the grant yet; 429/503: back off.
            if r.status_code in (409, 429, 503) and i + 1 < attempts:
                time.sleep(min(2.0, 0.1 * (i + 1)))
                continue
            raise RuntimeError(f"{method} {url} -> {r.status_code}: {r.text[:500]}")
        raise AssertionError("unreachable")

    def licensees(self, n: int, prefix: str, receipts: Receipts) -> list[str]:
        def one(i: int) -> tuple[str, str]:
            lic = self.call(
                "POST", f"{self.stack.url('registry')}/v1/licensees", self.ops, {"name": f"{prefix} {i}"}, 201
            )
            ep = self.call(
                "POST",
                f"{self.stack.url('worker')}/v1/endpoints",
                self.stack.token("licensee", lic["id"]),
                {"url": f"{self.stack.url('receiver')}/hook/{lic['id']}"},
                201,
            )
            return lic["id"], ep["secret"]

        with ThreadPoolExecutor(4) as pool:
            pairs = list(pool.map(one, range(n)))
        receipts.add_secrets(dict(pairs))
        return [lid for lid, _ in pairs]

    def subject(self, sub: str, n: int) -> tuple[dict[str, str], list[str]]:
        headers = self.stack.token("subject", sub)
        ids: list[str] = []
        for start in range(0, n, BATCH):
            body = {
                "samples": [
                    {"kind": "face_image", "sha256": random_sha256()} for _ in range(min(BATCH, n - start))
                ]
            }
            items = self.call("POST", f"{self.stack.url('consent')}/v1/samples/batch", headers, body, 201)
            ids += [s["id"] for s in items["items"]]
        return headers, ids

    def grant(self, headers: dict[str, str], sample_ids: list[str]) -> str:
        body = {"sample_ids": sample_ids, "purposes": [PURPOSE]}
        return str(self.call("POST", f"{self.stack.url('consent')}/v1/consents", headers, body, 201)["id"])

    def license(self, licensee_id: str, consent_id: str, sample_ids: list[str]) -> str:
        body = {
            "licensee_id": licensee_id,
            "consent_id": consent_id,
            "purpose": PURPOSE,
            "sample_ids": sample_ids,
        }
        return str(self.call("POST", f"{self.stack.url('registry')}/v1/licenses", self.ops, body, 201)["id"])


@dataclass
class Unit:
    """One revocable thing: one sample of one consent, licensed to some licensees."""

    headers: dict[str, str]
    consent_id: str
    sample_id: str
    licensees: tuple[str, ...]


class UnitPool:
    def __init__(self, api: Api, licensees: list[str]) -> None:
        self.api = api
        self.licensees = licensees
        self.units: collections.deque[Unit] = collections.deque()
        self.subjects = 0
        self.run = uuid.uuid4().hex[:6]

    def holders_of(self, i: int) -> tuple[str, ...]:
        n = len(self.licensees)
        return tuple(self.licensees[(3 * i + j) % n] for j in range(2 + i % 2))

    def _subject(self, i: int, samples: int) -> list[Unit]:
        headers, ids = self.api.subject(f"lat-{self.run}-{i}", samples)
        consent = self.api.grant(headers, ids)
        holders = self.holders_of(i)
        for lid in holders:
            self.api.license(lid, consent, ids)
        return [Unit(headers, consent, sid, holders) for sid in ids]

    def prepare(self, n: int, rate: float) -> None:
        """n fresh revocable samples, spread over enough subjects that each subject is revoked at most
        once per SUBJECT_REVISIT_S at this rate (a subject's writes are serialised by a row lock: one
        seller revoking 500 times a second is not the load this measures)."""
        count = max(math.ceil(n / UNIT_SAMPLES), math.ceil(rate * SUBJECT_REVISIT_S), 1)
        per = max(1, math.ceil(n / count))
        t = time.monotonic()
        say(f"  preparing {count} subjects x {per} licensed samples (not timed)")
        first = self.subjects
        self.subjects += count
        with ThreadPoolExecutor(6) as pool:
            groups = list(pool.map(lambda i: self._subject(i, per), range(first, first + count)))
        # Interleave: consecutive revocations come from different subjects (and consents).
        self.units.clear()
        for k in range(per):
            for g in groups:
                self.units.append(g[k])
        say(f"  prepared {count * per} revocable samples in {time.monotonic() - t:.0f}s")

    def take(self) -> Unit | None:
        return self.units.popleft() if self.units else None


# -- raw paths ------------------------------------------------------------------------------------


def raw_pg(url: str, n: int = 500) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        lat = raw_commits(conn, "raw_commit", n)
        batch = []
        conn.execute(
            "CREATE TABLE IF NOT EXISTS raw_samples (id text PRIMARY KEY, subject_id text, kind text, "
            "sha256 text, media_type text, created_at timestamptz)"
        )
        conn.commit()
        for _ in range(3):
            now = dt.datetime.now(dt.UTC)
            rows = [
                (uuid.uuid4().hex, "sub", "voice_recording", random_sha256(), None, now) for _ in range(BATCH)
            ]
            t = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO raw_samples VALUES (%s, %s, %s, %s, %s, %s)", rows)
            conn.commit()
            batch.append(time.perf_counter() - t)
    return {
        "insert_commit_ms": dist_ms(lat),
        "executemany_10k_s": round(statistics.median(batch), 3),
        "executemany_rows_per_s": round(BATCH / statistics.median(batch)),
    }


def raw_kafka(bootstrap: str, n: int = 300) -> dict[str, Any]:
    topic = f"bench.raw.{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, 1)
    producer = make_producer(
        bootstrap, "bench-raw"
    )  # the relay's settings: acks=all, idempotent, linger 5 ms
    # The services' consumer settings (fetch_max_wait_ms etc. at kafka-python defaults), without a group.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, group_id=None)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                consumer.seek_to_end(tp)
                consumer.position(tp)
                break
            time.sleep(0.2)
        lat = []
        payload = os.urandom(200)
        for i in range(n + 10):
            key = f"k{i}".encode()
            t = time.perf_counter()
            producer.send(topic, key=key, value=payload)
            producer.flush(timeout=10)
            got = False
            limit = time.monotonic() + 10
            while not got and time.monotonic() < limit:
                for records in consumer.poll(timeout_ms=1000).values():
                    got = got or any(r.key == key for r in records)
            if not got:
                raise TimeoutError("raw kafka round trip: record never consumed")
            if i >= 10:
                lat.append(time.perf_counter() - t)
    finally:
        producer.close(timeout=2)
        consumer.close()
    return {"produce_consume_ms": dist_ms(lat)}


def signed(secret: str, body: bytes, msg_id: str) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body.decode()),
        "content-type": "application/json",
    }


def webhook_like_body(samples: int) -> bytes:
    """A body shaped like a revocation notice with this many inline samples."""
    data = {
        "type": "revocation.notice",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "data": {
            "notice_id": "ntc_" + uuid.uuid4().hex,
            "revocation_id": "rev_raw",
            "licensee_id": "lic_" + uuid.uuid4().hex,
            "deadline": dt.datetime.now(dt.UTC).isoformat(),
            "samples": [
                {"sample_id": "smp_" + uuid.uuid4().hex, "sha256": random_sha256(), "kind": "face_image"}
                for _ in range(samples)
            ],
            "models": [],
        },
    }
    return json.dumps(data, separators=(",", ":")).encode()


async def raw_http(receiver: str, receipts: Receipts, fanout_bytes: int | None = None) -> dict[str, Any]:
    """Signed POSTs to the receiver (which verifies them): 1 at a time; 50 concurrent; 100 at once."""
    secret = "whsec_" + __import__("base64").b64encode(os.urandom(24)).decode()
    keys = [f"raw{i}" for i in range(100)]
    receipts.add_secrets(dict.fromkeys(keys, secret))
    small = webhook_like_body(1)
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

        async def post(key: str, body: bytes) -> None:
            headers = signed(secret, body, "msg_" + uuid.uuid4().hex)
            async with http.post(f"{receiver}/hook/{key}", data=body, headers=headers) as r:
                await r.read()
                assert r.status == 204, r.status

        for _ in range(20):
            await post(keys[0], small)
        lat = []
        for _ in range(500):
            t = time.perf_counter()
            await post(keys[0], small)
            lat.append(time.perf_counter() - t)
        out["post_ms"] = dist_ms(lat)
        sem = asyncio.Semaphore(50)

        async def limited(i: int) -> None:
            async with sem:
                await post(keys[i % 100], small)

        t = time.perf_counter()
        await asyncio.gather(*(limited(i) for i in range(3000)))
        out["post_per_s_50_concurrent"] = round(3000 / (time.perf_counter() - t))
        # 100 endpoints at once with a fan-out-sized body (1,000 inline samples unless measured)
        big = webhook_like_body(1000)
        if fanout_bytes and fanout_bytes > len(big):
            big = webhook_like_body(int(1000 * fanout_bytes / len(big)))
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            await asyncio.gather(*(post(k, big) for k in keys))
            runs.append(time.perf_counter() - t)
        out["fanout_100_posts_s"] = round(statistics.median(runs), 4)
        out["fanout_body_bytes"] = len(big)
    receipts.pull()
    return out


async def closed_loop(
    url: str, bodies: list[list[Any]], headers: list[dict[str, str]], warmup: int = 10
) -> dict[str, Any]:
    """One client per list (concurrently), each POSTing its bodies one after another."""
    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(bodies) + 1)) as http:

        async def client(items: list[Any], h: dict[str, str], timed: bool) -> None:
            nonlocal errors
            for body in items:
                t = time.perf_counter()
                async with http.post(url, json=body, headers=h) as r:
                    await r.read()
                    ok = r.status == 201
                if timed:
                    lat.append(time.perf_counter() - t)
                    errors += 0 if ok else 1

        await asyncio.gather(*(client(b[:warmup], h, False) for b, h in zip(bodies, headers, strict=True)))
        t = time.perf_counter()
        await asyncio.gather(*(client(b[warmup:], h, True) for b, h in zip(bodies, headers, strict=True)))
        wall = time.perf_counter() - t
    return {
        "per_s": round(len(lat) / wall, 1),
        "latency_ms": dist_ms(lat),
        "errors": errors,
        "clients": len(bodies),
    }


# -- the measurements -----------------------------------------------------------------------------


def measure_grants(stack: Stack, api: Api) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    per_client = max(20, GRANTS // CLIENTS) + 10
    say(f"grants: preparing 1 + {CLIENTS} subjects with samples (not timed)")
    single_h, single_ids = api.subject(f"grant-{run}-single", GRANTS + 10)
    many = [api.subject(f"grant-{run}-{i}", per_client) for i in range(CLIENTS)]

    def grant_bodies(ids: list[str]) -> list[Any]:
        return [{"sample_ids": [s], "purposes": [PURPOSE]} for s in ids]

    consent = f"{stack.url('consent')}/v1/consents"
    bare = f"{stack.url('bare')}/grants"
    out: dict[str, Any] = {}
    say(f"grants: {GRANTS} one at a time, then {CLIENTS} concurrent clients; the bare endpoint likewise")
    c0 = cpu_snapshot(stack)
    out["rescind_single"] = asyncio.run(closed_loop(consent, [grant_bodies(single_ids)], [single_h]))
    c1 = cpu_snapshot(stack)
    out["rescind_single"]["cpu_ms_per_grant"] = cpu_ms_per_op(
        cpu_delta(c0, c1), GRANTS + 10, ["consent-api", "pg:consent"]
    )
    prof_dir = HERE / "results" / "profiles"
    with Profiler("grants", {"consent-api": stack.pid("consent-api")} if PROFILE else {}, prof_dir) as prof:
        out["rescind_concurrent"] = asyncio.run(
            closed_loop(consent, [grant_bodies(ids) for _, ids in many], [h for h, _ in many])
        )
    if PROFILE:
        out["profile_concurrent"] = prof.summary()
    fake = [["smp_" + uuid.uuid4().hex for _ in range(n)] for n in [GRANTS + 10] + [per_client] * CLIENTS]
    c0 = cpu_snapshot(stack)
    out["bare_single"] = asyncio.run(closed_loop(bare, [grant_bodies(fake[0])], [{}]))
    c1 = cpu_snapshot(stack)
    out["bare_single"]["cpu_ms_per_grant"] = cpu_ms_per_op(cpu_delta(c0, c1), GRANTS + 10, ["bare", "pg:raw"])
    out["bare_concurrent"] = asyncio.run(
        closed_loop(bare, [grant_bodies(f) for f in fake[1:]], [{}] * CLIENTS)
    )
    out["single_ratio"] = ratio(out["rescind_single"]["per_s"], out["bare_single"]["per_s"])
    out["concurrent_ratio"] = ratio(out["rescind_concurrent"]["per_s"], out["bare_concurrent"]["per_s"])
    return out


def measure_batch(stack: Stack, api: Api) -> dict[str, Any]:
    headers = stack.token("subject", f"batch-{uuid.uuid4().hex[:6]}")
    url = f"{stack.url('consent')}/v1/samples/batch"
    runs = []
    pids = {"consent-api": stack.pid("consent-api")} if PROFILE else {}
    with httpx.Client(timeout=300) as http, Profiler("batch", pids, HERE / "results" / "profiles") as prof:
        for i in range(3):
            body = {"samples": [{"kind": "voice_recording", "sha256": random_sha256()} for _ in range(BATCH)]}
            t = time.perf_counter()
            r = http.post(url, json=body, headers=headers)
            runs.append(time.perf_counter() - t)
            if r.status_code != 201:
                raise RuntimeError(f"batch -> {r.status_code}: {r.text[:300]}")
            say(f"batch {i + 1}/3: {BATCH} samples in {runs[-1]:.2f}s")
    med = statistics.median(runs)
    out: dict[str, Any] = {
        "runs_s": [round(r, 3) for r in runs],
        "median_s": round(med, 3),
        "samples_per_s": round(BATCH / med),
    }
    if PROFILE:
        out["profile"] = prof.summary()
    return out


@dataclass
class Sent:
    unit: Unit
    scheduled: float
    t0: float
    t1: float
    status: int
    revocation_id: str | None
    wall0: float


async def offered_load(
    consent_url: str, pool: UnitPool, rate: float, seconds: float
) -> tuple[list[Sent], int]:
    """Open loop: a revoke call every 1/rate s on schedule, whatever the answers; skipped when
    INFLIGHT_CAP calls are outstanding (the service is not keeping up)."""
    sends: list[Sent] = []
    skipped = 0
    inflight = 0
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=INFLIGHT_CAP), timeout=timeout
    ) as http:

        async def one(u: Unit, scheduled: float) -> None:
            nonlocal inflight
            t0, wall0 = time.monotonic(), time.time()
            status, rev = -1, None
            try:
                async with http.post(
                    f"{consent_url}/v1/consents/{u.consent_id}/revoke",
                    json={"sample_ids": [u.sample_id]},
                    headers=u.headers,
                ) as r:
                    body = await r.read()
                    status = r.status
                    if status == 202:
                        rev = json.loads(body)["id"]
            except (aiohttp.ClientError, TimeoutError):
                status = -1
            finally:
                inflight -= 1
            sends.append(Sent(u, scheduled, t0, time.monotonic(), status, rev, wall0))

        tasks = []
        n = int(rate * seconds)
        start = time.monotonic() + 0.05
        for k in range(n):
            scheduled = start + k / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            unit = pool.take() if inflight < INFLIGHT_CAP else None
            if unit is None:
                skipped += 1
                continue
            inflight += 1
            tasks.append(asyncio.create_task(one(unit, scheduled)))
        if tasks:
            await asyncio.wait(tasks, timeout=90)
    return sends, skipped


def run_rate(
    stack: Stack, pool: UnitPool, receipts: Receipts, rate: float, seconds: float, profile: bool = False
) -> dict[str, Any]:
    pool.prepare(int(rate * seconds) + 10, rate)
    settled = receipts.settle(quiet=2, cap=30)
    receipts.pull()
    prof_pids = {
        n: stack.pid(n)
        for n in (
            "consent-api",
            "consent-relay",
            "consent-consumer",
            "worker",
            "registry",
            "registry-consumer",
        )
    }
    with Profiler(f"rate{rate:.0f}", prof_pids if profile else {}, HERE / "results" / "profiles") as prof:
        say(f"rate {rate:.0f}/s for {seconds:.0f}s (offered, open loop)")
        cpu0, http0 = cpu_snapshot(stack), http_stats(stack)
        t_start = time.monotonic()
        sends, skipped = asyncio.run(offered_load(stack.url("consent"), pool, rate, seconds))
        window = time.monotonic() - t_start
        cpu1 = cpu_snapshot(stack)
        ok = [s for s in sends if s.status == 202 and s.revocation_id]
        expected = {(s.revocation_id or "", lid) for s in ok for lid in s.unit.licensees}
        drain = receipts.wait_for(expected, cap=DRAIN_S, stall=DRAIN_S, what=f"{rate:.0f}/s drain")
        cpu2, http2 = cpu_snapshot(stack), http_stats(stack)
    receipts.pull()
    t_end = time.monotonic()
    all_told: list[float] = []
    first_told: list[float] = []
    per_webhook: list[float] = []
    undelivered = 0
    for s in ok:
        times = [receipts.first.get((s.revocation_id or "", lid)) for lid in s.unit.licensees]
        got = [t for t in times if t is not None]
        per_webhook += [t - s.t0 for t in got]
        first_told.append(min(got) - s.t0 if got else math.inf)
        if len(got) == len(times):
            all_told.append(max(got) - s.t0)
        else:
            all_told.append(math.inf)
            undelivered += 1
    offered = int(rate * seconds)
    late = [s for s in sends if s.t0 - s.scheduled > 0.05]
    last = sorted(ok, key=lambda s: s.t0)
    fifth = max(1, len(last) // 5)

    def median_told(group: list[Sent]) -> float | None:
        vals = [
            max(receipts.first.get((s.revocation_id or "", lid), math.inf) for lid in s.unit.licensees) - s.t0
            for s in group
        ]
        return statistics.median(vals) if vals else None

    early, late_med = median_told(last[:fifth]), median_told(last[-fifth:])
    growing = early is not None and late_med is not None and late_med > 2 * early + 0.2
    p99 = nearest_rank(all_told, 99)
    sustained = (
        len(ok) >= 0.95 * offered
        and undelivered == 0
        and p99 is not None
        and p99 <= P99_LIMIT
        and not growing
    )
    completed = len(ok) - undelivered
    result = {
        "offered_per_s": rate,
        "seconds": seconds,
        "offered": offered,
        "accepted": len(ok),
        "accepted_per_s": round(len(ok) / window, 1),
        "skipped_inflight_cap": skipped,
        "errors": len(sends) - len(ok),
        "errors_by_status": dict(collections.Counter(str(s.status) for s in sends if s.status != 202)),
        "sent_late_over_50ms": len(late),
        "revoke_http_ms": dist_ms([s.t1 - s.t0 for s in ok]),
        "all_holders_told_ms": dist_ms(all_told),
        "first_holder_told_ms": dist_ms(first_told),
        "per_webhook_ms": dist_ms(per_webhook),
        "webhooks_expected": len(expected),
        "undelivered_revocations": undelivered,
        "drain_s": round(drain, 1),
        "settle_before_s": round(settled, 1),
        "completed_per_s": round(completed / (t_end - t_start), 1),
        "median_told_first_fifth_ms": _ms(early),
        "median_told_last_fifth_ms": _ms(late_med),
        "backlog_growing": growing,
        "sustained": sustained,
        "stages_ms": phase_stages(stack, ok, receipts),
        "cpu_s_during_window": cpu_delta(cpu0, cpu1),
        "cpu_s_window_plus_drain": cpu_delta(cpu0, cpu2),
        "server_side_http": http_delta(http0, http2),
        "cpu_ms_per_completed_revocation": cpu_ms_per_op(cpu_delta(cpu0, cpu2), completed),
    }
    if profile and PROFILE:
        result["profile"] = prof.summary()
    d = result["all_holders_told_ms"]
    say(
        f"  {rate:.0f}/s: accepted {len(ok)}/{offered} ({result['accepted_per_s']}/s), "
        f"all told p50 {d['p50']} p95 {d['p95']} p99 {d['p99']} ms, undelivered {undelivered}, "
        f"sustained={sustained}"
    )
    return result


def _ms(v: float | None) -> float | str | None:
    return None if v is None else "inf" if math.isinf(v) else round(v * 1000, 1)


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds (user+system) so far: each of our processes, our PostgreSQL backends, the machine."""
    out = {name: proc_cpu(p.popen.pid) for name, p in stack.procs.items()}
    out["harness"] = proc_cpu(os.getpid())
    if stack.broker is not None and stack.broker.proc is not None:
        out["broker"] = proc_cpu(stack.broker.proc.pid)
    try:
        rows = backend_pids(list(stack.dbs.values()))
        names = {db: name for name, db in stack.dbs.items()}
        for db, pid in rows:
            key = f"pg:{names[db]}"
            out[key] = out.get(key, 0.0) + proc_cpu(pid)
    except psycopg.Error:
        pass
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]
    out["machine_busy"] = (sum(values[:8]) - idle) / TICK
    out["machine_total"] = sum(values[:8]) / TICK
    out["wall"] = time.monotonic()
    return out


def http_stats(stack: Stack) -> dict[str, tuple[float, float]]:
    """(count, seconds) of every service route so far, from the services' own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, tuple[float, float]] = {}
    for svc in ("consent", "registry", "worker"):
        try:
            text = httpx.get(f"{stack.url(svc)}/metrics", timeout=5).text
        except httpx.HTTPError:
            continue
        for fam in text_string_to_metric_families(text):
            if fam.name != "rescind_http_request_duration_seconds":
                continue
            for sample in fam.samples:
                key = f"{svc} {sample.labels.get('method')} {sample.labels.get('route')}"
                count, total = out.get(key, (0.0, 0.0))
                if sample.name.endswith("_count"):
                    out[key] = (sample.value, total)
                elif sample.name.endswith("_sum"):
                    out[key] = (count, sample.value)
    return out


def http_delta(a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Requests and mean server-side ms per route between two scrapes (routes with traffic only)."""
    out = {}
    for key, (count, total) in b.items():
        c0, t0 = a.get(key, (0.0, 0.0))
        if count - c0 > 0:
            out[key] = {"requests": int(count - c0), "mean_ms": round(1000 * (total - t0) / (count - c0), 2)}
    return out


def cpu_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    wall = b["wall"] - a["wall"]
    keys = (set(a) | set(b)) - {"wall", "machine_total"}
    # a PostgreSQL backend that appeared in between counts from 0 (pooled connections mostly persist)
    out = {k: round(max(0.0, b.get(k, 0.0) - a.get(k, 0.0)), 2) for k in sorted(keys)}
    out["wall_s"] = round(wall, 2)
    out["machine_cores_busy"] = round((b["machine_busy"] - a["machine_busy"]) / wall, 2) if wall else 0.0
    ours = sum(v for k, v in out.items() if k not in ("wall_s", "machine_busy", "machine_cores_busy"))
    out["ours_cores_busy"] = round(ours / wall, 2) if wall else 0.0
    return out


IDLE_CPU_RATE: dict[str, float] = {}  # CPU seconds per second each process burns doing nothing


def cpu_ms_per_op(delta: dict[str, float], ops: int, keys: list[str] | None = None) -> dict[str, float]:
    """CPU ms per operation by process, less what it burns idle (measured at the start): a figure
    that moves far less than latency when other work shares the machine."""
    if ops <= 0:
        return {}
    wall = delta.get("wall_s", 0.0)
    skip = {"wall_s", "machine_busy", "machine_cores_busy", "ours_cores_busy", "harness", "receiver"}
    out = {}
    for k, v in delta.items():
        if k in skip or (keys is not None and k not in keys):
            continue
        net = max(0.0, v - IDLE_CPU_RATE.get(k, 0.0) * wall)
        out[k] = round(1000 * net / ops, 2)
    out["total"] = round(sum(out.values()), 2)
    return out


def phase_stages(stack: Stack, sends: list[Sent], receipts: Receipts) -> dict[str, Any]:
    """Where each revocation's time went, from timestamps the services record anyway: consent-api's
    outbox (published_at, set by the relay), the worker's revocations (created_at: intake committed;
    resolved_at: notices committed) and the receiver."""
    by_rev = {s.revocation_id: s for s in sends if s.revocation_id}
    if not by_rev:
        return {}
    ids = list(by_rev)
    published: dict[str, float] = {}
    intake: dict[str, float] = {}
    resolved: dict[str, float] = {}
    since = dt.datetime.fromtimestamp(min(s.wall0 for s in by_rev.values()) - 1, dt.UTC)
    with psycopg.connect(stack.db_url("consent")) as conn:
        for payload, at in conn.execute(
            "SELECT payload, published_at FROM outbox WHERE event_type = 'consent_revoked' "
            "AND created_at >= %s AND published_at IS NOT NULL",
            (since,),
        ):
            event = consent_pb.ConsentEvent()
            event.ParseFromString(payload)
            rev = event.consent_revoked.revocation_id
            if rev in by_rev:
                published.setdefault(rev, at.timestamp())
    with psycopg.connect(stack.db_url("worker")) as conn:
        for rev, created, done in conn.execute(
            "SELECT id, created_at, resolved_at FROM revocations WHERE id = ANY(%s)", (ids,)
        ):
            intake[rev] = created.timestamp()
            if done is not None:
                resolved[rev] = done.timestamp()
    stages: dict[str, list[float]] = collections.defaultdict(list)
    for rev, s in by_rev.items():
        chain = [("api_commit_and_relay_publish", s.wall0, published.get(rev))]
        chain.append(("kafka_and_worker_intake", published.get(rev), intake.get(rev)))
        # The resolver claims ready revocations in batches: wait, holders lookup and notices together.
        chain.append(("resolver_batch_and_notices_committed", intake.get(rev), resolved.get(rev)))
        told = [receipts.first.get((rev, lid)) for lid in s.unit.licensees]
        last = None if None in told else max(t for t in told if t is not None) - s.t0 + s.wall0
        chain.append(("delivery_claim_post_verify", resolved.get(rev), last))
        for name, a, b in chain:
            if a is not None and b is not None:
                stages[name].append(b - a)
    return {name: dist_ms(v) for name, v in stages.items()}


CANDIDATES = [2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000]


def next_rate(best: float | None, ceiling: float, hint: float | None) -> float | None:
    """The next offered rate to try between the highest sustained rate and the lowest failed one.
    Below every failure, jump to about 80% of what the failed run actually completed per second."""
    between = [c for c in CANDIDATES if (best or 0) < c < ceiling]
    if not between:
        return None
    if best is None:
        below = [c for c in between if hint is None or c <= 0.8 * hint]
        return max(below) if below else min(between)
    # above a success: the geometric middle of the bracket (or the next candidate)
    if math.isinf(ceiling):
        return between[0]
    target = math.sqrt(best * ceiling)
    return min(between, key=lambda c: abs(math.log(c / target)))


def ladder(bench: Bench, fixed: dict[float, dict[str, Any]]) -> dict[str, Any]:
    """The highest offered rate that is sustained (see `criteria`), by bracketing."""
    results = dict(fixed)
    for _ in range(MAX_STEPS):
        passed = [r for r, v in results.items() if v["sustained"]]
        best = max(passed) if passed else None
        failed = [r for r, v in results.items() if not v["sustained"] and (best is None or r > best)]
        ceiling = min(failed, default=math.inf)
        hint = results[ceiling]["completed_per_s"] if failed else None
        rate = next_rate(best, ceiling, hint)
        if rate is None:
            break
        results[rate] = bench.rate(rate, STEP_SECONDS)
    passed = [r for r, v in results.items() if v["sustained"]]
    best = max(passed) if passed else None
    failed = [r for r, v in results.items() if not v["sustained"] and (best is None or r > best)]
    return {
        "highest_sustained_per_s": best,
        "lowest_failed_per_s": min(failed, default=None),
        "criteria": f"accepted >= 95% of offered, every revocation's holders all told within {DRAIN_S:.0f}s "
        f"of the window's end, all-holders p99 <= {P99_LIMIT}s, no growing backlog",
        "steps": {str(k): v for k, v in sorted(results.items()) if k not in fixed},
    }


def measure_fanout(stack: Stack, api: Api, receipts: Receipts, prof_dir: Path) -> dict[str, Any]:
    say(f"fan-out: {FANOUT_LICENSEES} licensees with endpoints (not timed)")
    lids = api.licensees(FANOUT_LICENSEES, "fanout", receipts)
    say(
        f"fan-out: a subject with {FANOUT_SAMPLES} samples, one consent, "
        f"{FANOUT_LICENSEES} licenses (not timed)"
    )
    headers, ids = api.subject(f"fanout-{uuid.uuid4().hex[:6]}", FANOUT_SAMPLES)
    consent = api.grant(headers, ids)
    share = max(1, min(len(ids), round(FANOUT_SHARE * len(ids))))

    def held_by(i: int) -> list[str]:
        if share >= len(ids):
            return ids
        start = (i * len(ids)) // len(lids)
        return [ids[(start + k) % len(ids)] for k in range(share)]

    t = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: api.license(lids[i], consent, held_by(i)), range(len(lids))))
    say(f"fan-out: {len(lids)} licenses of {share} samples recorded in {time.monotonic() - t:.0f}s")
    receipts.settle(quiet=3, cap=120)
    receipts.pull()
    pids = {n: stack.pid(n) for n in ("worker", "registry", "consent-api")}
    before = {n: rss_kb(p) for n, p in pids.items()}
    reset = {n: reset_peak_rss(p) for n, p in pids.items()}
    say("fan-out: revoke everything")
    with (
        RssSampler(pids) as sampler,
        Profiler("fanout", {"worker": pids["worker"], "registry": pids["registry"]}, prof_dir) as prof,
    ):
        wall0 = time.time()
        t0 = time.monotonic()
        r = api.http.post(f"{stack.url('consent')}/v1/revocations", headers=headers, json={"scope": "all"})
        t1 = time.monotonic()
        if r.status_code != 202:
            raise RuntimeError(f"revoke all -> {r.status_code}: {r.text[:300]}")
        rev = r.json()["id"]
        expected = {(rev, lid) for lid in lids}
        receipts.wait_for(expected, cap=FANOUT_TIMEOUT, stall=FANOUT_TIMEOUT, what="fan-out")
    times = sorted(receipts.first[k] - t0 for k in expected if k in receipts.first)
    peak = {n: rss_kb(p, "VmHWM") for n, p in pids.items()}
    sizes = [receipts.body_bytes[k] for k in expected if k in receipts.body_bytes]
    out = {
        "licensees": len(lids),
        "samples": len(ids),
        "samples_per_licensee": share,
        "holdings": share * len(lids),
        "revoke_http_ms": round((t1 - t0) * 1000, 1),
        "delivered": len(times),
        "first_delivery_s": round(times[0], 3) if times else None,
        "half_delivered_s": round(times[len(times) // 2], 3) if times else None,
        "all_delivered_s": round(times[-1], 3) if len(times) == len(lids) else None,
        "webhook_body_bytes_median": statistics.median(sizes) if sizes else None,
        "rss_mb_before": {n: round((v or 0) / 1024, 1) for n, v in before.items()},
        "peak_rss_mb": {n: round((v or 0) / 1024, 1) for n, v in peak.items()},
        "peak_rss_sampled_mb": {n: round(v / 1024, 1) for n, v in sampler.peak_kb.items()},
        "peak_reset_ok": reset,
        "stages_s": worker_stages(stack.tmp / "worker.log", rev, wall0),
    }
    if PROFILE:
        out["profile"] = prof.summary()
    say(
        f"  fan-out: {out['delivered']}/{len(lids)} delivered, all in {out['all_delivered_s']}s, "
        f"worker peak RSS {out['peak_rss_mb']['worker']} MB"
    )
    return out


def worker_stages(log: Path, revocation_id: str, wall0: float) -> dict[str, float]:
    """When the worker logged the holders answer and the notices' commit, in s after the revoke call."""
    out: dict[str, float] = {}
    if not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        if revocation_id not in line:
            continue
        try:
            rec = json.loads(line)
            ts = dt.datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
        except (ValueError, KeyError):
            continue
        msg = rec.get("msg", "")
        key = (
            "notices_committed" if " resolved:" in msg else "holders_answered" if "hold some" in msg else None
        )
        if key and key not in out:
            out[key] = round(ts - wall0, 3)
    return out


# -- report -------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, Rescind, raw path, Rescind/raw, target) rows."""
    rows: list[tuple[str, str, str, str, str]] = []
    raw = report.get("raw", {})

    def f(v: Any, unit: str = "", nd: int = 1) -> str:
        if v is None:
            return "-"
        return f"{v:,.{nd}f}{unit}" if isinstance(v, float | int) else f"{v}{unit}"

    chain = raw.get("revoke_chain_p50_ms")
    for rate, r in report.get("latency", {}).items():
        d = r["all_holders_told_ms"]
        rows.append(
            (
                f"revoke->all told @{rate}/s p50/p95/p99 ms",
                f"{f(d['p50'])}/{f(d['p95'])}/{f(d['p99'])}",
                f"{f(chain)} (p50)",
                f"{f(ratio(d['p50'], chain), 'x')} (p50)",
                "p99<=250ms @500/s" if str(rate) == "500" else "",
            )
        )
        cpu = r.get("cpu_ms_per_completed_revocation", {})
        rows.append((f"  CPU ms per revocation, all processes @{rate}/s", f(cpu.get("total")), "", "", ""))
        rows.append(
            (
                f"  accepted/s, completed/s, undelivered @{rate}/s",
                f"{f(r['accepted_per_s'])}, {f(r['completed_per_s'])}, {r['undelivered_revocations']}",
                "",
                "",
                "",
            )
        )
    lad = report.get("ladder")
    if lad:
        bare = report.get("grants", {}).get("bare_concurrent", {}).get("per_s")
        best = lad["highest_sustained_per_s"]
        tried = ", ".join(
            f"{k}:{'ok' if v['sustained'] else 'no'}"
            for k, v in {**report.get("latency", {}), **lad["steps"]}.items()
        )
        rows.append(
            (
                "highest sustained revocations/s",
                f(best, nd=0) if best is not None else f"<{lad['lowest_failed_per_s']}",
                f"{f(bare)} bare req/s",
                f(ratio(lad["highest_sustained_per_s"], bare), "x", 3),
                ">=500/s",
            )
        )
        rows.append(("  rates tried (per s)", tried, "", "", ""))
        at = {**report.get("latency", {}), **lad["steps"]}.get(str(best)) if best is not None else None
        if at:
            d = at["all_holders_told_ms"]
            rows.append(
                (
                    f"  revoke->all told @{best}/s p50/p95/p99 ms",
                    f"{f(d['p50'])}/{f(d['p95'])}/{f(d['p99'])}",
                    f"{f(chain)} (p50)",
                    f"{f(ratio(d['p50'], chain), 'x')} (p50)",
                    "",
                )
            )
    fo = report.get("fanout")
    if fo:
        rows.append(
            (
                f"fan-out {fo['licensees']}x{fo['samples_per_licensee']}: all told s",
                f(fo["all_delivered_s"], nd=2),
                f(raw.get("fanout_chain_s"), nd=3),
                f(ratio(fo["all_delivered_s"], raw.get("fanout_chain_s")), "x"),
                "<=5s",
            )
        )
        rows.append(("fan-out: worker peak RSS MB", f(fo["peak_rss_mb"]["worker"]), "", "", "<=300MB"))
    g = report.get("grants")
    if g:
        for mode in ("single", "concurrent"):
            rows.append(
                (
                    f"grants/s ({g['rescind_' + mode]['clients']} client{'s' if mode != 'single' else ''})",
                    f(g["rescind_" + mode]["per_s"]),
                    f"{f(g['bare_' + mode]['per_s'])} bare",
                    f(g[mode + "_ratio"], "x", 2),
                    ">=0.5x bare",
                )
            )
        rows.append(
            (
                "grant latency p50/p99 ms (1 client)",
                f"{f(g['rescind_single']['latency_ms']['p50'])}/{f(g['rescind_single']['latency_ms']['p99'])}",
                f"{f(g['bare_single']['latency_ms']['p50'])}/{f(g['bare_single']['latency_ms']['p99'])} bare",
                f(
                    ratio(g["rescind_single"]["latency_ms"]["p50"], g["bare_single"]["latency_ms"]["p50"]),
                    "x",
                ),
                "",
            )
        )
        rc = g["rescind_single"].get("cpu_ms_per_grant", {}).get("total")
        bc = g["bare_single"].get("cpu_ms_per_grant", {}).get("total")
        rows.append(
            (
                "CPU ms per grant (service + its PG)",
                f(rc, nd=2),
                f"{f(bc, nd=2)} bare",
                f(ratio(rc, bc), "x"),
                "",
            )
        )
    b = report.get("batch")
    if b:
        rows.append(
            (
                "samples/s (batch of 10,000)",
                f(b["samples_per_s"], nd=0),
                f"{f(raw.get('pg', {}).get('executemany_rows_per_s'), nd=0)} executemany",
                f(ratio(b["samples_per_s"], raw.get("pg", {}).get("executemany_rows_per_s")), "x", 3),
                "",
            )
        )
    if raw:
        pgd = raw.get("pg", {}).get("insert_commit_ms", {})
        rows.append(
            (
                "raw: psycopg INSERT+COMMIT p50/p99 ms",
                "",
                f"{f(pgd.get('p50'), nd=2)}/{f(pgd.get('p99'), nd=2)}",
                "",
                "",
            )
        )
        kd = raw.get("kafka", {}).get("produce_consume_ms", {})
        rows.append(
            (
                "raw: kafka produce->consume p50/p99 ms",
                "",
                f"{f(kd.get('p50'), nd=2)}/{f(kd.get('p99'), nd=2)}",
                "",
                "",
            )
        )
        hd = raw.get("http", {}).get("post_ms", {})
        rows.append(
            (
                "raw: signed POST->verified p50/p99 ms",
                "",
                f"{f(hd.get('p50'), nd=2)}/{f(hd.get('p99'), nd=2)}",
                "",
                "",
            )
        )
        rows.append(
            (
                "raw: POST/s, 50 concurrent",
                "",
                f(raw.get("http", {}).get("post_per_s_50_concurrent"), nd=0),
                "",
                "",
            )
        )
    return rows


class Bench:
    """Owns the current stack; a phase that left a backlog behind gets the next phase a fresh one."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.root = Path(tempfile.mkdtemp(prefix="rescind-stack-bench-"))
        self.stacks = 0
        self.stack: Stack | None = None
        self.api: Api | None = None
        self.receipts: Receipts | None = None
        self.pool: UnitPool | None = None
        self.dirty = False

    def fresh(self, why: str) -> Stack:
        self.close()
        self.stacks += 1
        say(f"stack #{self.stacks} ({why}): fresh databases, broker, 7 services, receiver, bare endpoint")
        stack = Stack(self.root / f"stack{self.stacks}")
        self.stack = stack  # stopped by close() even when start() fails half-way
        t = time.monotonic()
        stack.up()
        say(f"  stack up in {time.monotonic() - t:.0f}s (logs in {stack.tmp})")
        self.api = Api(stack)
        self.receipts = Receipts(stack.url("receiver"))
        self.pool = None
        self.dirty = False
        return stack

    def ensure(self, why: str) -> Stack:
        if self.stack is None or self.dirty:
            return self.fresh(why if self.stack is None else f"{why}; the last one has a backlog")
        return self.stack

    def close(self) -> None:
        if self.stack is not None:
            say(f"stopping stack #{self.stacks} and dropping its databases")
            self.stack.close()
            self.stack = None

    def rate(self, rate: float, seconds: float, profile: bool = False) -> dict[str, Any]:
        stack = self.ensure(f"rate {rate:.0f}/s")
        assert self.api is not None and self.receipts is not None
        if self.pool is None:
            say(f"latency: {LAT_LICENSEES} licensees with endpoints (not timed)")
            self.pool = UnitPool(self.api, self.api.licensees(LAT_LICENSEES, "latency", self.receipts))
        result = run_rate(stack, self.pool, self.receipts, rate, seconds, profile=profile)
        self.dirty = result["undelivered_revocations"] > 0
        return result


def main() -> int:
    prof_dir = RESULTS / "profiles"
    report: dict[str, Any] = {
        "config": {
            "seconds_per_rate": SECONDS,
            "rates": RATES,
            "step_seconds": STEP_SECONDS,
            "max_steps": MAX_STEPS,
            "drain_seconds": DRAIN_S,
            "p99_limit_s": P99_LIMIT,
            "clients": CLIENTS,
            "grants": GRANTS,
            "latency_licensees": LAT_LICENSEES,
            "max_samples_per_consent": UNIT_SAMPLES,
            "subject_revisit_s": SUBJECT_REVISIT_S,
            "inflight_cap": INFLIGHT_CAP,
            "fanout": {"licensees": FANOUT_LICENSEES, "samples": FANOUT_SAMPLES, "share": FANOUT_SHARE},
            "profile": PROFILE,
        },
        "machine": machine(loadavg_start=os.getloadavg()),
    }
    bench = Bench(report)
    say(f"logs under {bench.root}")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the finally below: stop everything, drop the databases

    signal.signal(signal.SIGTERM, on_term)
    try:
        stack = bench.fresh("raw paths, grants, batch")
        assert bench.api is not None and bench.receipts is not None
        report["machine"]["postgresql"] = server_version()
        say("idle: CPU the stack uses doing nothing (10 s)")
        time.sleep(2)
        idle0 = cpu_snapshot(stack)
        time.sleep(10)
        report["idle_cpu_s_per_10s"] = idle = cpu_delta(idle0, cpu_snapshot(stack))
        IDLE_CPU_RATE.update({k: v / idle["wall_s"] for k, v in idle.items() if idle["wall_s"]})
        raw: dict[str, Any] = {}
        if "raw" not in SKIP:
            say("raw: psycopg INSERT+COMMIT, executemany 10,000 rows")
            raw["pg"] = raw_pg(stack.db_url("raw"))
            say("raw: kafka-python produce->consume round trip")
            assert stack.broker is not None
            raw["kafka"] = raw_kafka(stack.broker.bootstrap)
            say("raw: signed POSTs to the receiver")
            raw["http"] = asyncio.run(raw_http(stack.url("receiver"), bench.receipts))
            report["raw"] = raw
        if "grants" not in SKIP:
            report["grants"] = measure_grants(stack, bench.api)
            g = report["grants"]
            say(
                f"  grants/s: 1 client {g['rescind_single']['per_s']} (bare {g['bare_single']['per_s']}), "
                f"{CLIENTS} clients {g['rescind_concurrent']['per_s']} (bare {g['bare_concurrent']['per_s']})"
            )
        if "batch" not in SKIP:
            report["batch"] = measure_batch(stack, bench.api)
        if raw:
            # The least a revoke->webhook could take: one request with a commit (the bare endpoint),
            # one Kafka hop, one signed POST verified by the receiver.
            bare_p50 = report.get("grants", {}).get("bare_single", {}).get("latency_ms", {}).get("p50")
            parts = [bare_p50, raw["kafka"]["produce_consume_ms"]["p50"], raw["http"]["post_ms"]["p50"]]
            raw["revoke_chain_p50_ms"] = round(sum(parts), 2) if None not in parts else None
        fixed: dict[float, dict[str, Any]] = {}
        if "latency" not in SKIP:
            for i, rate in enumerate(RATES):
                fixed[rate] = bench.rate(rate, SECONDS, profile=i == len(RATES) - 1)
            report["latency"] = {str(int(k)): v for k, v in fixed.items()}
        if "ladder" not in SKIP:
            report["ladder"] = ladder(bench, fixed)
        if "fanout" not in SKIP:
            bench.dirty = True  # its own stack: a clean worker and nothing else in flight
            stack = bench.ensure("fan-out")
            assert bench.api is not None and bench.receipts is not None
            fo = measure_fanout(stack, bench.api, bench.receipts, prof_dir)
            report["fanout"] = fo
            if raw:
                say("raw: 100 signed POSTs at once with the fan-out body size")
                more = asyncio.run(
                    raw_http(stack.url("receiver"), bench.receipts, fo.get("webhook_body_bytes_median"))
                )
                raw["http_fanout_sized"] = {k: more[k] for k in ("fanout_100_posts_s", "fanout_body_bytes")}
                raw["fanout_chain_s"] = round(
                    (raw["pg"]["insert_commit_ms"]["p50"] + raw["kafka"]["produce_consume_ms"]["p50"]) / 1000
                    + more["fanout_100_posts_s"],
                    4,
                )
    except BaseException:
        say("FAILED; tails of the service logs follow")
        if bench.stack is not None:
            print(bench.stack.tail(list(bench.stack.procs)), file=sys.stderr)
        raise
    finally:
        bench.close()
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["stacks_started"] = bench.stacks
    report["wall_s"] = round(time.monotonic() - T_START, 1)
    rows = table(report)
    report["table"] = rows
    path = write_result("stack.json", report)
    print()
    print_table(("figure", "Rescind", "raw path", "ratio", "target"), rows)
    print(f"\nwritten {path} ({report['wall_s']:.0f}s, {bench.stacks} stack(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
