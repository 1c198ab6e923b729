"""consent-api under concurrent load and overload, beside the bare endpoint, measured in one run.

Starts, each on its own fresh PostgreSQL database: consent-api as a process (`consent-api serve`),
optionally a second consent-api from another source tree (`RESCIND_LOAD_BASELINE_SRC`, e.g. an
export of the previous commit, to compare before/after in the same run), and `bench/bare_app.py`.
One target is loaded at a time; the others sit idle.

  - grants/s: closed loop, `POST /v1/consents` (1 sample) from 1, 8 and 64 concurrent clients
    (one subject each) for `RESCIND_LOAD_SECONDS` each, beside the bare endpoint under the same
    clients; CPU ms per grant (the service process + its PostgreSQL backends);
  - overload: open loop at `RESCIND_LOAD_RATES` revocations/s offered (`POST /v1/consents/{id}/revoke`,
    each a different consent, spread over 200 subjects) with at most 512 calls outstanding:
    accepted (202) per second, the share answered 503, p50/p99 of every answer and of the 202s.

Prints a table and writes bench/results/consent_load.json. Never part of `make test`.

  .venv/bin/python bench/consent_load.py
  RESCIND_LOAD_BASELINE_SRC=/tmp/consent-base .venv/bin/python bench/consent_load.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from _common import (
    backend_pids,
    bearer,
    create_database,
    database_name,
    drop_database,
    percentile,
    proc_cpu,
    random_sha256,
    service_env,
    write_result,
)

from rescind_cli.processes import Launcher
from rescind_common.embedded_broker import free_port

HERE = Path(__file__).parent
SECONDS = float(os.environ.get("RESCIND_LOAD_SECONDS", "8"))
CLIENTS = [int(c) for c in os.environ.get("RESCIND_LOAD_CLIENTS", "1,8,64").split(",")]
RATES = [int(r) for r in os.environ.get("RESCIND_LOAD_RATES", "400").split(",") if r]
OVERLOAD_SECONDS = float(os.environ.get("RESCIND_LOAD_OVERLOAD_SECONDS", "6"))
BASELINE_SRC = os.environ.get("RESCIND_LOAD_BASELINE_SRC")
WORKERS = os.environ.get("RESCIND_LOAD_WORKERS", "1")
MAX_OUTSTANDING = 512
SUBJECTS = 200


def say(msg: str) -> None:
    print(f"[load] {msg}", flush=True)


def dist_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50) * 1000, 2),
        "p99": round(percentile(values, 99) * 1000, 2),
        "max": round(max(values, default=float("nan")) * 1000, 2),
    }


def tree_pids(pid: int) -> list[int]:
    """The process and its children (uvicorn --workers forks)."""
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out.extend(tree_pids(int(child)))
    return out


class Target:
    def __init__(self, name: str, url: str, dbname: str, pid: int) -> None:
        self.name, self.url, self.dbname, self.pid = name, url, dbname, pid

    def cpu(self) -> dict[int, float]:
        backends = [pid for _, pid in backend_pids([self.dbname])]
        return {p: proc_cpu(p) for p in [*tree_pids(self.pid), *backends]}


def cpu_delta(before: dict[int, float], after: dict[int, float], only: set[int] | None = None) -> float:
    return sum(v - before.get(p, 0.0) for p, v in after.items() if only is None or p in only)


async def closed_loop(
    url: str, bodies: list[dict[str, Any]], headers: list[dict[str, str]], seconds: float
) -> dict[str, Any]:
    """One client per body (concurrently), each POSTing it again and again for `seconds`."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=len(bodies) + 1), timeout=aiohttp.ClientTimeout(total=60)
    ) as http:

        async def client(body: dict[str, Any], h: dict[str, str], until: float, timed: bool) -> None:
            while time.perf_counter() < until:
                t = time.perf_counter()
                async with http.post(url, json=body, headers=h) as r:
                    await r.read()
                if timed:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status == 201:
                        lat.append(time.perf_counter() - t)

        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(client(b, h, warm, False) for b, h in zip(bodies, headers, strict=True)))
        t0 = time.perf_counter()
        await asyncio.gather(
            *(client(b, h, t0 + seconds, True) for b, h in zip(bodies, headers, strict=True))
        )
        wall = time.perf_counter() - t0
    return {
        "clients": len(bodies),
        "per_s": round(len(lat) / wall, 1),
        "latency_ms": dist_ms(lat),
        "statuses": statuses,
        "ok": len(lat),
    }


async def open_loop(url_of: list[str], headers_of: list[dict[str, str]], rate: int) -> dict[str, Any]:
    """POST each URL once, at `rate` per second; at most MAX_OUTSTANDING in flight (the rest skipped)."""
    all_lat: list[float] = []
    ok_lat: list[float] = []
    statuses: dict[str, int] = {}
    outstanding = 0
    skipped = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_OUTSTANDING), timeout=aiohttp.ClientTimeout(total=60)
    ) as http:

        async def call(url: str, h: dict[str, str]) -> None:
            nonlocal outstanding
            t = time.perf_counter()
            try:
                async with http.post(url, json={}, headers=h) as r:
                    await r.read()
                    key = str(r.status)
            except Exception as exc:
                key = type(exc).__name__
            finally:
                outstanding -= 1
            took = time.perf_counter() - t
            statuses[key] = statuses.get(key, 0) + 1
            all_lat.append(took)
            if key == "202":
                ok_lat.append(took)

        tasks = []
        t0 = time.perf_counter()
        n = min(len(url_of), int(rate * OVERLOAD_SECONDS))
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if outstanding >= MAX_OUTSTANDING:
                skipped += 1
                continue
            outstanding += 1
            tasks.append(asyncio.create_task(call(url_of[i], headers_of[i])))
        window = time.perf_counter() - t0
        await asyncio.gather(*tasks)
    answered = sum(statuses.values())
    return {
        "offered_per_s": rate,
        "sent": len(tasks),
        "skipped": skipped,
        "accepted_per_s": round(statuses.get("202", 0) / window, 1),
        "share_503": round(statuses.get("503", 0) / answered, 3) if answered else None,
        "statuses": statuses,
        "latency_ms_all": dist_ms(all_lat),
        "latency_ms_202": dist_ms(ok_lat),
    }


class Stack(Launcher):
    """The launcher of `make run` (rescind_cli.processes) starting single targets, each on its own
    fresh database and port; every database dropped by close()."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="rescind-load-"))
        super().__init__(service_env(self.state), {})
        self.dbs: list[str] = []

    def db(self, label: str) -> str:
        url = create_database(f"load_{label}")
        self.dbs.append(url)
        return url

    def token(self, sub: str) -> dict[str, str]:
        return bearer(self.state, "subject", sub)

    def serve(self, name: str, argv: list[str], env: dict[str, str], port: int, db_url: str) -> Target:
        """Start a target and wait until it answers; `env` adds to the stack's."""
        self.ports[name] = port
        proc = self.start(name, argv, env)
        self.wait_http(name, f"{self.url(name)}/healthz", 30, watch=[name])
        return Target(name, self.url(name), database_name(db_url), proc.popen.pid)

    def consent_api(self, name: str, src: str | None) -> Target:
        db_url = self.db(name)
        port = free_port()
        env = {"RESCIND_CONSENT_DATABASE_URL": db_url, "RESCIND_CONSENT_PORT": str(port)}
        if src:
            paths = [f"{src}/services/consent-api/src", f"{src}/libs/rescind-common/src"]
            env["PYTHONPATH"] = os.pathsep.join(paths)
        py = sys.executable
        code = self.run_to_end(f"{name}-migrate", [py, "-m", "consent_api", "migrate"], env)
        if code != 0:
            raise RuntimeError(f"{name} migrate exited with code {code}")
        workers = WORKERS if src is None else "1"
        return self.serve(name, [py, "-m", "consent_api", "serve", "--workers", workers], env, port, db_url)

    def bare(self) -> Target:
        db_url = self.db("bare")
        port = free_port()
        argv = [sys.executable, str(HERE / "bare_app.py"), str(port), db_url]
        return self.serve("bare", argv, {}, port, db_url)

    def close(self) -> None:
        self.stop_all()
        for url in self.dbs:
            drop_database(url)


def register(http: httpx.Client, headers: dict[str, str], n: int) -> list[str]:
    r = http.post(
        "/v1/samples/batch",
        json={"samples": [{"kind": "face_image", "sha256": random_sha256()} for _ in range(n)]},
        headers=headers,
    )
    r.raise_for_status()
    return [s["id"] for s in r.json()["items"]]


def grant_setup(
    stack: Stack, target: Target, clients: int
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    bodies, headers = [], []
    run = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=target.url, timeout=60) as http:
        for i in range(clients):
            h = stack.token(f"load-{run}-{i}")
            ids = ["smp_" + uuid.uuid4().hex[:26]] if target.name == "bare" else register(http, h, 1)
            bodies.append({"sample_ids": ids, "purposes": ["model_training"]})
            headers.append(h)
    return bodies, headers


def revoke_setup(stack: Stack, target: Target, n: int) -> tuple[list[str], list[dict[str, str]]]:
    """n consents spread over SUBJECTS subjects; one revoke URL each, in an order that rotates subjects."""
    run = uuid.uuid4().hex[:6]
    per = -(-n // SUBJECTS)
    subjects = [stack.token(f"rev-{run}-{i}") for i in range(SUBJECTS)]

    async def make() -> list[list[str]]:
        async with aiohttp.ClientSession(
            base_url=target.url, timeout=aiohttp.ClientTimeout(total=120)
        ) as http:
            sem = asyncio.Semaphore(8)

            async def one(h: dict[str, str]) -> list[str]:
                async with sem:
                    body = {
                        "samples": [{"kind": "face_image", "sha256": random_sha256()} for _ in range(per)]
                    }
                    async with http.post("/v1/samples/batch", json=body, headers=h) as r:
                        ids = [s["id"] for s in (await r.json())["items"]]
                    out = []
                    for sid in ids:
                        body2 = {"sample_ids": [sid], "purposes": ["model_training"]}
                        async with http.post("/v1/consents", json=body2, headers=h) as r:
                            assert r.status == 201, await r.text()
                            out.append((await r.json())["id"])
                    return out

            return list(await asyncio.gather(*(one(h) for h in subjects)))

    consents = asyncio.run(make())
    urls, headers = [], []
    for k in range(per):
        for i, h in enumerate(subjects):
            urls.append(f"{target.url}/v1/consents/{consents[i][k]}/revoke")
            headers.append(h)
    return urls[:n], headers[:n]


def measure(stack: Stack, target: Target) -> dict[str, Any]:
    out: dict[str, Any] = {"grants": {}, "overload": []}
    path = "/grants" if target.name == "bare" else "/v1/consents"
    for n in CLIENTS:
        bodies, headers = grant_setup(stack, target, n)
        c0 = target.cpu()
        res = asyncio.run(closed_loop(target.url + path, bodies, headers, SECONDS))
        c1 = target.cpu()
        res["cpu_ms_per_grant"] = round(cpu_delta(c0, c1) * 1000 / max(1, res["ok"]), 2)
        service = set(tree_pids(target.pid))
        res["cpu_ms_per_grant_service"] = round(cpu_delta(c0, c1, service) * 1000 / max(1, res["ok"]), 2)
        say(
            f"{target.name} grants {n} clients: {res['per_s']}/s {res['latency_ms']} {res['statuses']} "
            f"cpu ms/grant {res['cpu_ms_per_grant']} (service {res['cpu_ms_per_grant_service']})"
        )
        out["grants"][n] = res
    if target.name != "bare":
        for rate in RATES:
            need = int(rate * OVERLOAD_SECONDS)
            say(f"{target.name}: preparing {need} consents for the overload at {rate}/s")
            urls, headers = revoke_setup(stack, target, need)
            res = asyncio.run(open_loop(urls, headers, rate))
            say(f"{target.name} overload {rate}/s: {res}")
            out["overload"].append(res)
    return out


def main() -> int:
    stack = Stack()
    report: dict[str, Any] = {"cpus": os.cpu_count(), "seconds": SECONDS, "workers": WORKERS}
    try:
        targets = [stack.bare()]
        if BASELINE_SRC:
            targets.append(stack.consent_api("baseline", BASELINE_SRC))
        targets.append(stack.consent_api("consent", None))
        for t in targets:
            report[t.name] = measure(stack, t)
    finally:
        stack.close()
    bare = report["bare"]["grants"]
    lines = [
        f"{'figure':<44}" + "".join(f"{t:>16}" for t in report if t not in ("cpus", "seconds", "workers"))
    ]
    names = [k for k in report if k not in ("cpus", "seconds", "workers")]
    for n in CLIENTS:
        row = f"{'grants/s, ' + str(n) + ' clients (x bare)':<44}"
        for name in names:
            g = report[name]["grants"][n]
            row += f"{g['per_s']:>9} ({g['per_s'] / bare[n]['per_s']:.2f})"
        lines.append(row)
        row = f"{'  p50/p99 ms':<44}"
        for name in names:
            g = report[name]["grants"][n]["latency_ms"]
            row += f"{str(g['p50']) + '/' + str(g['p99']):>16}"
        lines.append(row)
        row = f"{'  CPU ms per grant':<44}"
        for name in names:
            row += f"{report[name]['grants'][n]['cpu_ms_per_grant']:>16}"
        lines.append(row)
    for name in names:
        for o in report[name]["overload"]:
            lines.append(
                f"{name} @{o['offered_per_s']}/s offered: accepted/s {o['accepted_per_s']}, "
                f"503 share {o['share_503']}, p50/p99 all {o['latency_ms_all']['p50']}/"
                f"{o['latency_ms_all']['p99']} ms, 202 p99 {o['latency_ms_202']['p99']} ms, "
                f"statuses {o['statuses']}, skipped {o['skipped']}"
            )
    print("\n".join(lines))
    write_result("consent_load.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
