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

import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

from registry.migrate import upgrade
from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.embedded_broker import free_port, wait_for_port
from rescind_common.ids import new_ids
from rescind_common.settings import RescindSettings

PG_ADMIN = os.environ.get("RESCIND_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROWS = int(os.environ.get("RESCIND_BENCH_ROWS", "10000000"))
PER_LICENSE = 500
LICENSES = ROWS // PER_LICENSE
SAMPLES = ROWS // 5
LICENSEES = max(1, LICENSES // 100)
KINDS = ["face_image", "voice_recording", "handwriting", "demographics", "other"]
NOW = "2026-11-28 00:00:00+00"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def copy_rows(
    conn: psycopg.Connection, table: str, columns: list[str], rows: Iterator[tuple[object, ...]]
) -> None:
    with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


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
    dbname = f"rescind_bench_registry_{uuid.uuid4().hex[:8]}"
    db_url = f"{PG_ADMIN.rpartition('/')[0]}/{dbname}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
        pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    state = Path(tempfile.mkdtemp(prefix="rescind-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "RESCIND_STATE_DIR": str(state),
        "RESCIND_REGISTRY_DATABASE_URL": db_url,
        "RESCIND_REGISTRY_PORT": str(port),
        "RESCIND_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # the lookup never touches Kafka
        "RESCIND_LOG_LEVEL": "WARNING",
    }
    proc: subprocess.Popen[bytes] | None = None
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
        proc = subprocess.Popen([str(Path(sys.executable).parent / "registry"), "serve"], env=env)
        wait_for_port("127.0.0.1", port, timeout=30)
        settings = RescindSettings(state_dir=state)
        token = mint_token(
            ensure_dev_key(settings.dev_auth_key_file),
            sub="bench-ops",
            role="operator",
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
        )
        rng = random.Random(7)
        results: dict[str, dict[str, float]] = {}
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=60
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
                    "p50_ms": pct(lat, 50) * 1000,
                    "p99_ms": pct(lat, 99) * 1000,
                    "mean_holder_sample_entries": sum(held) / len(held),
                }
        plan = explain(db_url, rng.sample(samples, 1000))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        if not os.environ.get("RESCIND_BENCH_KEEP"):
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql": pg_version,
        },
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
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "registry_holders.json").write_text(json.dumps(report, indent=2))
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
