"""`make bench`: consent-api figures on PostgreSQL, each beside a raw baseline measured in the same run.

Starts consent-api as a real process (uvicorn, one worker) on a fresh PostgreSQL
database and measures, over real HTTP with a keep-alive httpx client:
  - grant latency: one POST /v1/consents (1 sample) at a time, 200 times -> median, p95, p99;
  - batch time: POST /v1/samples/batch with 10,000 samples, 3 times -> median;
and the raw path with the same libraries: one single-row INSERT + COMMIT with psycopg.
Prints a table and writes bench/results/consent_api.json. Never part of `make test`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from _common import (
    bearer,
    create_database,
    drop_database,
    launcher,
    machine,
    percentile,
    random_sha256,
    raw_commits,
    serve,
    write_result,
)

from rescind_common.embedded_broker import EmbeddedBroker

GRANTS = int(os.environ.get("RESCIND_BENCH_GRANTS", "200"))
BATCH = 10_000


def raw_commit_latency(url: str, n: int) -> list[float]:
    with psycopg.connect(url) as conn:
        out = raw_commits(conn, "bench_raw", n)
        conn.execute("DROP TABLE bench_raw")
        conn.commit()
    return out


def main() -> int:
    db_url = create_database("consent")
    state = Path(tempfile.mkdtemp(prefix="rescind-bench-"))
    broker = EmbeddedBroker().start()
    stack = launcher(state, {"consent": db_url}, RESCIND_KAFKA_BOOTSTRAP=broker.bootstrap)
    try:
        stack.migrate(["consent"])
        stack.start("consent-relay")
        serve(stack, "consent-api")
        headers = bearer(state, "subject", "bench-seller")
        with httpx.Client(base_url=stack.url("consent"), headers=headers, timeout=60) as c:
            ids = [
                s["id"]
                for s in c.post(
                    "/v1/samples/batch",
                    json={
                        "samples": [
                            {"kind": "face_image", "sha256": random_sha256()} for _ in range(GRANTS + 20)
                        ]
                    },
                ).json()["items"]
            ]
            for sid in ids[:20]:  # warm-up
                c.post("/v1/consents", json={"sample_ids": [sid], "purposes": ["model_training"]})
            grant = []
            for sid in ids[20:]:
                t = time.perf_counter()
                r = c.post("/v1/consents", json={"sample_ids": [sid], "purposes": ["model_training"]})
                grant.append(time.perf_counter() - t)
                assert r.status_code == 201, r.text
            batch = []
            for _ in range(3):
                body = {
                    "samples": [{"kind": "voice_recording", "sha256": random_sha256()} for _ in range(BATCH)]
                }
                t = time.perf_counter()
                r = c.post("/v1/samples/batch", json=body)
                batch.append(time.perf_counter() - t)
                assert r.status_code == 201 and len(r.json()["items"]) == BATCH, r.text[:200]
        raw = raw_commit_latency(db_url, GRANTS)
    finally:
        stack.stop_all()
        broker.stop()
        drop_database(db_url)

    report = {
        "machine": machine(),
        "grant_latency_ms": {
            "n": len(grant),
            "median": statistics.median(grant) * 1000,
            "p95": percentile(grant, 95) * 1000,
            "p99": percentile(grant, 99) * 1000,
        },
        "raw_insert_commit_ms": {"n": len(raw), "median": statistics.median(raw) * 1000},
        "batch_10k_seconds": {"runs": batch, "median": statistics.median(batch)},
        "batch_samples_per_second": BATCH / statistics.median(batch),
    }
    report["grant_to_raw_commit_ratio"] = (
        report["grant_latency_ms"]["median"] / report["raw_insert_commit_ms"]["median"]
    )
    write_result("consent_api.json", report)
    g, r = report["grant_latency_ms"], report["raw_insert_commit_ms"]
    print(f"{'figure':<42}{'value':>14}")
    print(f"{'grant latency median (ms), n=' + str(g['n']):<42}{g['median']:>14.2f}")
    print(f"{'grant latency p95 / p99 (ms)':<42}{g['p95']:>7.2f}/{g['p99']:.2f}")
    print(f"{'raw INSERT+COMMIT median (ms)':<42}{r['median']:>14.3f}")
    print(f"{'grant / raw commit':<42}{report['grant_to_raw_commit_ratio']:>13.1f}x")
    print(f"{'10,000-sample batch, median of 3 (s)':<42}{report['batch_10k_seconds']['median']:>14.2f}")
    print(f"{'batch samples/s':<42}{report['batch_samples_per_second']:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
