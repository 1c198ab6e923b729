"""Large bodies against an authenticated read (issue 13, finding 1): does anyone, with or without a
token, stall consent-api by POSTing big JSON?

Starts consent-api (`consent-api serve`, as `make run` does: one process, SQLite) with the CLI's
launcher, registers a subject's samples and consents, then measures GET /v1/consents (that subject,
sequential, keep-alive) p50/p99:
  1. idle;
  2. while an attacker process (this script, --attack, on a CPU of its own: the client's CPU is
     not the server's) keeps
     20 connections POSTing 16 MiB of nested lists (`[[[[]]],...]`) to /v1/samples/batch without a
     token, each connection sending its body again as soon as it has an answer (or a closed socket);
  3. the same with a valid token on every attacking request;
  4. the control: the same 20 connections sending tokenless GETs without a body, as fast as they are
     answered (what the request rate alone costs, whatever the body).
and prints the ratios to idle. With --baseline REF (or RESCIND_BENCH_GATE_BASELINE) the same again
for git REF's consent-api (exported with `git archive`, run from its sources; same migrations
assumed), so both figures come from one machine in one run. Writes bench/results/auth_gate.json.
Not part of `make test`.

  .venv/bin/python bench/auth_gate.py --baseline main
  RESCIND_BENCH_GATE_SECONDS=20   seconds measured per phase (default 20)
  RESCIND_BENCH_GATE_CLIENTS=20   attacking connections (default 20)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _common import (
    bearer,
    export_tree,
    launcher,
    machine,
    nearest_rank,
    print_table,
    proc_cpu,
    random_sha256,
    serve,
    write_result,
)

from rescind_cli.processes import sqlite_urls

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("RESCIND_BENCH_GATE_SECONDS", 20))
CLIENTS = int(os.environ.get("RESCIND_BENCH_GATE_CLIENTS", 20))
BASELINE = os.environ.get("RESCIND_BENCH_GATE_BASELINE")
BODY_BYTES = 16 * 1024 * 1024  # the batch endpoints' limit (RESCIND_MAX_BATCH_BODY_BYTES)
READ_TIMEOUT = 120.0  # a stalled server may take this long; a read that takes longer counts as this
# With 2 CPUs or more the attacker gets the last one and the server (and this reader) the others:
# the attack's own sending costs CPU that must not be counted against the server.
_CPUS = sorted(os.sched_getaffinity(0))
ATTACKER_CPUS = {_CPUS[-1]} if len(_CPUS) > 1 else set()
SERVER_CPUS = set(_CPUS[:-1]) if len(_CPUS) > 1 else set()
# (name, with a token, no body): the attacks, and the control (tokenless GETs without a body, on
# fresh connections as fast as answered: the cost of the request rate alone).
PHASES = [
    ("unauthenticated", False, False),
    ("authenticated", True, False),
    ("control: tokenless GETs, no body", False, True),
]
PACE = 0.025  # 40 reads/s: well under the default rate limit (100/s)
SOURCES = ["services/consent-api/src", "libs/rescind-common/src"]


def say(msg: str) -> None:
    print(f"[auth_gate] {msg}", flush=True)


def nested_lists(size: int) -> bytes:
    """JSON of nested empty lists, `size` bytes at most: the costliest body to parse per byte."""
    unit = b"[[[]]],"
    return b"[" + unit * ((size - 3) // len(unit)) + b"[]]"


# -- the attacker (a child process) ---------------------------------------------------------------


def attack(port: int, clients: int, token: str | None, empty: bool = False) -> None:
    """POST the body (`empty`: none, a tokenless GET instead) on `clients` connections until stdin
    closes; prints requests answered."""
    if ATTACKER_CPUS:
        os.sched_setaffinity(0, ATTACKER_CPUS)  # before the threads start: they inherit it
    body = nested_lists(BODY_BYTES)
    head = (
        b"POST /v1/samples/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + (b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b"")
        + b"Content-Length: %d\r\n\r\n" % len(body)
    )
    if empty:  # the control: as many requests, no body at all
        head, body = b"GET /v1/consents HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", b""
    stop = threading.Event()
    answered = [0] * clients

    def one(i: int) -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as conn:
                    conn.sendall(head)
                    # Answered and closed before the body was taken: read the answer all the same.
                    with contextlib.suppress(OSError):
                        conn.sendall(body)
                    if conn.recv(65536):
                        answered[i] += 1
            except OSError:
                time.sleep(0.01)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    sys.stdin.read()  # the parent closes it to stop us
    stop.set()
    print(sum(answered), flush=True)


# -- the measurement ------------------------------------------------------------------------------


def reads(http: httpx.Client, headers: dict[str, str], seconds: float, at_least: int = 20) -> dict[str, Any]:
    """GET /v1/consents every PACE seconds (or as soon as the last answered, when slower) for
    `seconds`, and at least `at_least` of them: p50/p99 ms. Paced: under the rate limit."""
    latencies: list[float] = []
    errors = 0
    until = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < until or len(latencies) + errors < at_least:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = time.monotonic() + PACE
        t = time.perf_counter()
        try:
            r = http.get("/v1/consents", headers=headers, params={"limit": 20})
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        elapsed = time.perf_counter() - t
        if ok:
            latencies.append(elapsed)
        else:
            errors += 1
            latencies.append(min(elapsed, READ_TIMEOUT))
        if elapsed >= READ_TIMEOUT and time.monotonic() > until:
            break
    return {
        "n": len(latencies),
        "errors": errors,
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round((nearest_rank(latencies, 99) or 0) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def under_attack(
    port: int, pid: int, http: httpx.Client, headers: dict[str, str], token: str | None, empty: bool = False
) -> dict[str, Any]:
    # `python bench/auth_gate.py --attack`: our own script, never user input.
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--attack",
            str(port),
            "--clients",
            str(CLIENTS),
            *(["--token", token] if token else []),
            *(["--empty"] if empty else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)  # every connection has started sending
        cpu, t = proc_cpu(pid), time.monotonic()
        result = reads(http, headers, SECONDS, at_least=5)
        result["server_cpu_share"] = round((proc_cpu(pid) - cpu) / (time.monotonic() - t), 2)
    finally:
        out, _ = child.communicate(input="", timeout=READ_TIMEOUT + 30)  # EOF on its stdin: stop
    result["attack_answers"] = int(out.strip() or 0)
    return result


def measure(tree: Path | None, label: str) -> dict[str, Any]:
    """One consent-api (this checkout's, or `tree`'s sources): idle, then each attack."""
    with tempfile.TemporaryDirectory(prefix="rescind-gate-") as tmp:
        state = Path(tmp)
        urls = sqlite_urls(state / "db")
        stack = launcher(state, {"consent": urls["consent"]}, RESCIND_LOG_LEVEL="ERROR")
        env: dict[str, str] = {}
        if tree is not None:
            env["PYTHONPATH"] = os.pathsep.join(str(tree / s) for s in SOURCES)
            # Code from before per-service audiences requires one `aud`; this tree's development
            # tokens carry consent-api's among theirs.
            env["RESCIND_AUTH_AUDIENCE"] = "rescind-consent-api"
        py = sys.executable
        try:
            code = stack.run_to_end("consent-migrate", [py, "-m", "consent_api", "migrate"], env)
            if code != 0:
                raise RuntimeError(f"{label}: migrate exited with {code}")
            pid = serve(stack, "consent-api", [py, "-m", "consent_api", "serve"], env).popen.pid
            port = stack.ports["consent"]
            headers = bearer(state, "subject", "gate-reader")
            token = headers["Authorization"].split(" ", 1)[1]
            attacker = bearer(state, "subject", "gate-attacker")["Authorization"].split(" ", 1)[1]
            with httpx.Client(base_url=stack.url("consent"), timeout=READ_TIMEOUT) as http:
                samples = http.post(
                    "/v1/samples/batch",
                    json={"samples": [{"kind": "face_image", "sha256": random_sha256()} for _ in range(100)]},
                    headers=headers,
                )
                samples.raise_for_status()
                ids = [s["id"] for s in samples.json()["items"]]
                for i in range(20):
                    http.post(
                        "/v1/consents",
                        json={"sample_ids": ids[i * 5 : i * 5 + 5], "purposes": ["model_training"]},
                        headers=headers,
                    ).raise_for_status()
                reads(http, headers, 2.0)  # warm
                out: dict[str, Any] = {}
                say(f"{label}: idle")
                cpu, t = proc_cpu(pid), time.monotonic()
                out["idle"] = reads(http, headers, SECONDS)
                out["idle"]["server_cpu_share"] = round((proc_cpu(pid) - cpu) / (time.monotonic() - t), 2)
                say(f"{label}: idle {out['idle']}")
                for name, with_token, empty in PHASES:
                    say(f"{label}: {CLIENTS} connections, {name}")
                    tok = attacker if with_token else None
                    out[name] = under_attack(port, pid, http, headers, tok, empty)
                    say(f"{label}: {name} {out[name]}")
                    for p in ("p50", "p99"):
                        out[name][f"{p}_ratio"] = round(out[name][f"{p}_ms"] / out["idle"][f"{p}_ms"], 2)
                del token
            return out
        finally:
            stack.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", metavar="REF", default=BASELINE, help="also measure git REF (exported)")
    parser.add_argument("--attack", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--empty", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        attack(args.attack, args.clients, args.token, args.empty)
        return 0
    report: dict[str, Any] = {
        "machine": machine(),
        "seconds": SECONDS,
        "clients": CLIENTS,
        "body_bytes": BODY_BYTES,
    }
    report["this tree"] = measure(None, "this tree")
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            report[args.baseline] = measure(export_tree(args.baseline, Path(tmp)), args.baseline)
    rows = []
    for name in [k for k in ("this tree", args.baseline) if k]:
        r = report[name]
        rows.append(
            (
                f"{name}: idle GET /v1/consents p50/p99 ms",
                f"{r['idle']['p50_ms']}/{r['idle']['p99_ms']}",
                "",
                "",
            )
        )
        for phase, _, _ in PHASES:
            a = r[phase]
            rows.append(
                (
                    f"{name}: {CLIENTS} x {phase}",
                    f"{a['p50_ms']}/{a['p99_ms']}",
                    f"{a['p50_ratio']}x/{a['p99_ratio']}x",
                    f"{a['attack_answers']} answered, {a['errors']} reads failed",
                )
            )
    report["table"] = [list(r) for r in rows]
    print_table(("figure", "p50/p99 ms", "vs idle", "notes"), rows)
    print(f"written {write_result('auth_gate.json', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
