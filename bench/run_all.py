"""`make bench`: every benchmark, one after another, then one table and bench/results/report.json.

  1. bench/run.py              consent-api alone: grant latency vs a raw commit, 10,000-sample batch
  2. bench/registry_holders.py holders lookup over 10,000,000 license-sample rows
  3. bench/stack_bench.py      the whole stack: revoke -> verified webhook at fixed rates, the highest
                               sustained rate, fan-out to 100 licensees, grants/s, beside raw paths
  4. bench/auth_gate.py        an authenticated read, idle and under 20 concurrent 16 MiB POSTs
                               (with and without a token); RESCIND_BENCH_GATE_BASELINE=main beside it

Each runs as its own process (it prints its own progress and table and writes its own JSON under
bench/results/); a failing one does not stop the others, and `make bench` then exits non-zero.

  RESCIND_BENCH_ONLY=stack,holders,consent,gate   run only some of them
  RESCIND_BENCH_SECONDS=15                   quick mode for the stack bench (default 60 s per rate)
  RESCIND_BENCH_ROWS=1000000                 a smaller holders table
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import print_table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHES = [
    ("consent", "run.py", "consent_api.json"),
    ("holders", "registry_holders.py", "registry_holders.json"),
    ("stack", "stack_bench.py", "stack.json"),
    ("gate", "auth_gate.py", "auth_gate.json"),
]
TIMEOUT = float(os.environ.get("RESCIND_BENCH_TIMEOUT", 3600))

Row = tuple[str, str, str, str, str]


def consent_rows(r: dict[str, Any]) -> list[Row]:
    g, raw = r["grant_latency_ms"], r["raw_insert_commit_ms"]
    return [
        (
            "grant latency p50/p99 ms (sequential)",
            f"{g['median']:.2f}/{g['p99']:.2f}",
            f"{raw['median']:.3f} INSERT+COMMIT",
            f"{r['grant_to_raw_commit_ratio']:.1f}x",
            "",
        ),
        ("samples/s (batch of 10,000)", f"{r['batch_samples_per_second']:,.0f}", "", "", ""),
    ]


def holders_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for n in (1, 1000):
        h = r["holders_lookup"][f"{n}_samples"]
        rows.append(
            (
                f"POST /v1/holders {n} sample(s) p50/p99 ms",
                f"{h['p50_ms']:.1f}/{h['p99_ms']:.1f}",
                f"{r['data']['license_sample_rows']:,} rows",
                "",
                "",
            )
        )
    return rows


def stack_rows(r: dict[str, Any]) -> list[Row]:
    return [tuple(row) for row in r.get("table", [])]  # type: ignore[misc]


def gate_rows(r: dict[str, Any]) -> list[Row]:
    return [(row[0], row[1], "", row[2], "<= 2x idle") for row in r.get("table", [])]


ROWS = {"consent": consent_rows, "holders": holders_rows, "stack": stack_rows, "gate": gate_rows}


def main() -> int:
    only = {s.strip() for s in os.environ.get("RESCIND_BENCH_ONLY", "").split(",") if s.strip()}
    RESULTS.mkdir(exist_ok=True)
    started = time.time()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "benches": {},
    }
    failed = []
    for name, script, output in BENCHES:
        if only and name not in only:
            continue
        print(f"\n######## {script} ########", flush=True)
        t = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(HERE / script)])
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGINT first: the bench's finally blocks stop what it started and drop its databases.
            print(f"{script}: over {TIMEOUT:.0f}s, interrupting it", file=sys.stderr)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            rc = -1
        entry: dict[str, Any] = {"script": script, "rc": rc, "seconds": round(time.monotonic() - t, 1)}
        path = RESULTS / output
        if rc == 0 and path.exists() and path.stat().st_mtime >= started:
            entry["result"] = json.loads(path.read_text())
        else:
            failed.append(script)
        report["benches"][name] = entry
    rows: list[Row] = []
    for name, entry in report["benches"].items():
        if "result" in entry:
            rows.append((f"[{entry['script']}]", "", "", "", ""))
            try:
                rows += ROWS[name](entry["result"])
            except (KeyError, TypeError) as exc:
                rows.append((f"  (cannot tabulate: {exc!r})", "", "", "", ""))
        else:
            rows.append((f"[{entry['script']}] FAILED (rc {entry['rc']})", "", "", "", ""))
    report["table"] = rows
    report["wall_s"] = round(time.time() - started, 1)
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print("\n######## summary ########")
    print_table(("figure", "Rescind", "raw path", "Rescind/raw", "target"), rows)
    print(f"\nwritten {RESULTS / 'report.json'} ({report['wall_s']:.0f}s)")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
