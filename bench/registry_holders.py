"""Holders lookup at scale: 10 million license-sample rows in PostgreSQL, p50/p99 over real HTTP.

Builds a fresh PostgreSQL database with the registry's Alembic migrations, bulk-loads (COPY)
  - 2,000,000 projected samples, 200 licensees with 100 licenses of 500 samples each
    (10,000,000 license_samples rows: every sample held under 5 licenses of 5 different
    licensees, each license's samples spread over the whole sample range),
  - 1,000 models (5 per licensee) trained on 20 licenses each, half of them in shards,
re-creates the indexes exactly as the migration names them, VACUUM ANALYZEs, starts
`registry serve` (uvicorn, one worker) and measures POST /v1/holders over a keep-alive httpx
client: 1 random sample x 300 and 1,000 random samples x 50 -> p50, p99. Also prints the
PostgreSQL plan of the license_samples step for 1,000 samples (an index-only scan on
ix_license_samples_sample_id_license_id). Writes bench/results/registry_holders.json.

  .venv/bin/python bench/registry_holders.py      (RESCIND_BENCH_PG_URL, RESCIND_BENCH_ROWS)
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from _common import (
    bearer,
    copy_rows,
    create_database,
    drop_database,
    launcher,
    machine,
    percentile,
    serve,
    server_version,
    write_result,
)

from registry.migrate import upgrade
from rescind_common.ids import new_ids

ROWS = int(os.environ.get("RESCIND_BENCH_ROWS", "10000000"))
PER_LICENSE = 500
LICENSES = ROWS // PER_LICENSE
SAMPLES = ROWS // 5
LICENSEES = max(1, LICENSES // 100)
KINDS = ["face_image", "voice_recording", "handwriting", "demographics", "other"]
NOW = "2026-11-28 00:00:00+00"


def load(db_url: str) -> dict[str, float]:
    timings: dict[str, float] = {}
    rng = random.Random(42)
    samples = new_ids("smp", SAMPLES)
    licensees = new_ids("lic", LICENSEES)
    licenses = new_ids("lcs", LICENSES)
    models = new_ids("mdl", LICENSEES * 5)
    # A fixed multiplier coprime with SAMPLES spreads each license's samples over the whole range.
    step = 1_000_003
    while math.gcd(step, SAMPLES) != 1:
        step += 2
    with psycopg.connect(db_url, autocommit=True) as conn:
        t = time.perf_counter()
        # Bulk load without the big table's indexes and constraints, then rebuild them.
        conn.execute("ALTER TABLE license_samples DROP CONSTRAINT fk_license_samples_license_id_licenses")
        conn.execute("ALTER TABLE license_samples DROP CONSTRAINT pk_license_samples")
        conn.execute("DROP INDEX ix_license_samples_sample_id_license_id")
        copy_rows(
            conn,
            "projected_samples",
            ["sample_id", "subject_id", "sha256", "kind", "registered_at"],
            (
                (s, f"sub_{i // 20:026d}", uuid.uuid4().hex * 2, KINDS[i % 5], NOW)
                for i, s in enumerate(samples)
            ),
        )
        copy_rows(
            conn,
            "licensees",
            ["id", "name", "created_at"],
            ((lic, f"Buyer {i}", NOW) for i, lic in enumerate(licensees)),
        )
        copy_rows(
            conn,
            "licenses",
            [
                "id",
                "licensee_id",
                "consent_id",
                "subject_id",
                "purpose",
                "dataset_name",
                "dataset_version",
                "status",
                "sample_count",
                "revoked_sample_count",
                "created_at",
            ],
            (
                (
                    lcs,
                    licensees[min(j // 100, LICENSEES - 1)],
                    f"cns_{j:026d}",
                    f"sub_{j:026d}",
                    "model_training",
                    "",
                    "",
                    "active",
                    PER_LICENSE,
                    0,
                    NOW,
                )
                for j, lcs in enumerate(licenses)
            ),
        )
        copy_rows(
            conn,
            "license_samples",
            ["license_id", "sample_id"],
            (
                (lcs, samples[(step * (j * PER_LICENSE + k)) % SAMPLES])
                for j, lcs in enumerate(licenses)
                for k in range(PER_LICENSE)
            ),
        )
        timings["copy_s"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute(
            "ALTER TABLE license_samples ADD CONSTRAINT pk_license_samples "
            "PRIMARY KEY (license_id, sample_id)"
        )
        conn.execute(
            "CREATE INDEX ix_license_samples_sample_id_license_id ON license_samples (sample_id, license_id)"
        )
        conn.execute(
            "ALTER TABLE license_samples ADD CONSTRAINT fk_license_samples_license_id_licenses "
            "FOREIGN KEY (license_id) REFERENCES licenses (id)"
        )
        timings["index_s"] = time.perf_counter() - t
        by_licensee: dict[str, list[str]] = {}
        for j, lcs in enumerate(licenses):
            by_licensee.setdefault(licensees[min(j // 100, LICENSEES - 1)], []).append(lcs)
        model_rows, link_rows = [], []
        for m, mdl in enumerate(models):
            owner = licensees[m // 5]
            model_rows.append((mdl, owner, f"model-{m % 5}", "1", NOW))
            for n, lcs in enumerate(rng.sample(by_licensee[owner], min(20, len(by_licensee[owner])))):
                link_rows.append((mdl, lcs, f"shard-{n % 4}" if m % 2 else ""))
        copy_rows(conn, "models", ["id", "licensee_id", "name", "version", "created_at"], iter(model_rows))
        copy_rows(conn, "model_licenses", ["model_id", "license_id", "shard_id"], iter(link_rows))
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        timings["vacuum_analyze_s"] = time.perf_counter() - t
    return timings


def explain(db_url: str, ids: list[str]) -> str:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS) SELECT sample_id, license_id FROM license_samples "
            "WHERE sample_id = ANY(%s::varchar[])",
            (ids,),
        ).fetchall()
    # The array literal would fill the screen: keep each plan line short.
    return "\n".join(r[0] if len(r[0]) < 120 else r[0][:117] + "..." for r in rows)


def main() -> int:
    db_url = create_database("registry")
    pg_version = server_version()
    state = Path(tempfile.mkdtemp(prefix="rescind-bench-"))
    stack = launcher(state, {"registry": db_url})
    try:
        upgrade(db_url)
        t = time.perf_counter()
        timings = load(db_url)
        timings["load_total_s"] = time.perf_counter() - t
        print(f"loaded {ROWS:,} license-sample rows in {timings['load_total_s']:.0f}s", file=sys.stderr)
        with psycopg.connect(db_url) as conn:
            samples = [r[0] for r in conn.execute("SELECT sample_id FROM projected_samples")]
            rows = int(conn.execute("SELECT count(*) FROM license_samples").fetchone()[0])  # type: ignore[index]
            size = str(
                conn.execute("SELECT pg_size_pretty(pg_total_relation_size('license_samples'))").fetchone()[0]
            )  # type: ignore[index]
        serve(stack, "registry")
        rng = random.Random(7)
        results: dict[str, dict[str, float]] = {}
        with httpx.Client(
            base_url=stack.url("registry"), headers=bearer(state, "operator", "bench-ops"), timeout=60
        ) as client:
            for n, runs in ((1, 300), (1000, 50)):
                for _ in range(10):  # warm-up
                    client.post("/v1/holders", json={"sample_ids": rng.sample(samples, n)})
                lat = []
                held = []
                for _ in range(runs):
                    body = {"sample_ids": rng.sample(samples, n)}
                    t = time.perf_counter()
                    r = client.post("/v1/holders", json=body)
                    lat.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text[:300]
                    held.append(sum(len(h["samples"]) for h in r.json()["holders"]))
                results[f"{n}_samples"] = {
                    "runs": runs,
                    "p50_ms": percentile(lat, 50) * 1000,
                    "p99_ms": percentile(lat, 99) * 1000,
                    "mean_holder_sample_entries": sum(held) / len(held),
                }
        plan = explain(db_url, rng.sample(samples, 1000))
    finally:
        stack.stop_all()
        if not os.environ.get("RESCIND_BENCH_KEEP"):
            drop_database(db_url)

    report = {
        "machine": machine(postgresql=pg_version),
        "data": {
            "license_sample_rows": rows,
            "license_samples_size": size,
            "samples": SAMPLES,
            "licenses": LICENSES,
            "licensees": LICENSEES,
            "models": LICENSEES * 5,
        },
        "load": timings,
        "holders_lookup": results,
        "plan_1000_samples": plan,
    }
    write_result("registry_holders.json", report)
    print(f"{'figure':<48}{'value':>14}")
    print(f"{'license_samples rows':<48}{rows:>14,}")
    print(f"{'license_samples table + indexes':<48}{size:>14}")
    for n in (1, 1000):
        r = results[f"{n}_samples"]
        label = f"POST /v1/holders, {n} sample(s): p50 / p99 (ms)"
        print(f"{label:<48}{r['p50_ms']:>7.1f}/{r['p99_ms']:.1f}")
    print("\nplan of the license_samples step (1,000 samples):\n" + plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
