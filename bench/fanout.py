"""Revocation fan-out: one subject's 10,000 samples, 100 licensees each licensed all of them
(1,000,000 license-sample rows), everything withdrawn.

Registry: POST /v1/holders for the 10,000 samples, `view: licenses` (median of 5) beside the
default `view: samples` (median of RESCIND_BENCH_FANOUT_SAMPLES_RUNS, default 2): wall time,
response bytes, and the registry process's peak RSS during each (VmHWM, reset first via
/proc/<pid>/clear_refs; licenses first, as a Python heap never shrinks back).

Worker: in a fresh process each, against that registry and a fresh migrated worker database,
the resolution of that revocation: holders lookup (HTTP + parse + merge), `affected`, the 100
notices (`create_many`) in one transaction + commit; wall time per stage and the process's peak RSS.
`new` is this code; `legacy` is the code before the licenses view (samples view, per-licensee
sample lists, one notice at a time with one notice_samples row per (licensee, sample) inserted
with ORM executemany), kept below verbatim so the ratio is measured on the same machine in the
same run (RESCIND_BENCH_FANOUT_LEGACY=0 skips it: it takes ~1 GB and a minute).

  .venv/bin/python bench/fanout.py      (RESCIND_BENCH_PG_URL; RESCIND_BENCH_FANOUT_LICENSEES,
                                         RESCIND_BENCH_FANOUT_SAMPLES scale it)
Writes bench/results/fanout.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from _common import (
    bearer,
    copy_rows,
    create_database,
    drop_database,
    launcher,
    machine,
    reset_peak_rss,
    rss_kb,
    run_json,
    serve,
    write_result,
)

LICENSEES = int(os.environ.get("RESCIND_BENCH_FANOUT_LICENSEES", "100"))
SAMPLES = int(os.environ.get("RESCIND_BENCH_FANOUT_SAMPLES", "10000"))
SAMPLES_VIEW_RUNS = int(os.environ.get("RESCIND_BENCH_FANOUT_SAMPLES_RUNS", "2"))
LEGACY = os.environ.get("RESCIND_BENCH_FANOUT_LEGACY", "1") != "0"
CONSENT = "cns_bench_fanout"
PURPOSE = "model_training"
NOW = "2026-11-28 00:00:00+00"


def load_registry(db_url: str) -> list[str]:
    from registry.migrate import upgrade

    upgrade(db_url)
    samples = [f"smp_fan{i:023d}" for i in range(SAMPLES)]
    licensees = [f"lic_fan{i:05d}" for i in range(LICENSEES)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        copy_rows(
            conn,
            "projected_samples",
            ["sample_id", "subject_id", "sha256", "kind", "registered_at"],
            ((s, "sub_fanout", f"{i:064x}", "face_image", NOW) for i, s in enumerate(samples)),
        )
        copy_rows(
            conn, "licensees", ["id", "name", "created_at"], ((lic, f"Buyer {lic}", NOW) for lic in licensees)
        )
        copy_rows(
            conn,
            "licenses",
            [
                *("id", "licensee_id", "consent_id", "subject_id", "purpose", "dataset_name"),
                *("dataset_version", "status", "sample_count", "revoked_sample_count", "created_at"),
            ],
            (
                (f"lcs_{lic}", lic, CONSENT, "sub_fanout", PURPOSE, "", "", "active", SAMPLES, 0, NOW)
                for lic in licensees
            ),
        )
        copy_rows(
            conn,
            "license_samples",
            ["license_id", "sample_id"],
            ((f"lcs_{lic}", s) for lic in licensees for s in samples),
        )
        copy_rows(
            conn,
            "models",
            ["id", "licensee_id", "name", "version", "created_at"],
            ((f"mdl_{lic}", lic, "faces", "1", NOW) for lic in licensees),
        )
        copy_rows(
            conn,
            "model_licenses",
            ["model_id", "license_id", "shard_id"],
            ((f"mdl_{lic}", f"lcs_{lic}", "") for lic in licensees),
        )
        conn.execute("VACUUM ANALYZE")
    return samples


# -- the worker side, run in its own process --------------------------------------------------------


def legacy_holders(
    client: httpx.Client, headers: dict[str, str], sample_ids: list[str]
) -> list[dict[str, Any]]:
    """RegistryClient.holders before the licenses view (verbatim but for the client)."""
    merged: dict[str, dict[str, Any]] = {}
    for i in range(0, len(sample_ids), 10_000):
        r = client.post("/v1/holders", json={"sample_ids": sample_ids[i : i + 10_000]}, headers=headers)
        r.raise_for_status()
        for h in r.json().get("holders", []):
            entry = merged.setdefault(
                h["licensee_id"],
                {"licensee_id": h["licensee_id"], "samples": [], "licenses": {}, "models": {}},
            )
            entry["samples"].extend(h.get("samples", []))
            for lic in h.get("licenses", []):
                entry["licenses"][lic["license_id"]] = lic
            for m in h.get("models", []):
                prev = entry["models"].get(m["model_id"])
                if prev is None:
                    entry["models"][m["model_id"]] = dict(m)
                else:
                    for key in ("shard_ids", "sample_ids", "license_ids"):
                        prev[key] = sorted(set(prev.get(key) or []) | set(m.get(key) or []))
    return [
        {**e, "licenses": list(e["licenses"].values()), "models": list(e["models"].values())}
        for e in merged.values()
    ]


def legacy_affected(holders: list[dict[str, Any]], withdrawals: list[Any]) -> list[dict[str, Any]]:
    """resolver.affected before the licenses view (verbatim)."""
    by_consent: dict[str, list[Any]] = {}
    for w in withdrawals:
        by_consent.setdefault(w.consent_id, []).append(w)
    out = []
    for h in holders:
        licensee_id = h["licensee_id"]
        licenses = {lic["license_id"]: lic for lic in h.get("licenses", [])}
        hit_licenses: set[str] = set()
        hit_samples: set[str] = set()
        for s in h.get("samples", []):
            for license_id in s.get("license_ids", []):
                lic = licenses.get(license_id)
                if lic is None:
                    continue
                for w in by_consent.get(lic.get("consent_id", ""), []):
                    if (
                        s["sample_id"] in w.samples
                        and lic.get("purpose") in w.purposes
                        and w.only_licensee_id in (None, licensee_id)
                    ):
                        hit_licenses.add(license_id)
                        hit_samples.add(s["sample_id"])
        if not hit_samples:
            continue
        models = [
            m
            for m in h.get("models", [])
            if set(m.get("license_ids", [])) & hit_licenses and set(m.get("sample_ids", [])) & hit_samples
        ]
        samples = [s for s in h.get("samples", []) if s["sample_id"] in hit_samples]
        out.append({**h, "samples": samples, "models": models})
    return out


def legacy_create_notice(session: Any, ctx: Any, revocation: Any, holder: dict[str, Any], now: Any) -> None:
    """The worker's single-notice creation before the licenses view (since removed: the worker now
    has `create_many` only), for one legacy holder with its own sample list: one notice_samples
    row per sample, inserted with ORM executemany."""

    from sqlalchemy import insert

    from rescind_common.ids import new_id
    from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
    from revocation_worker.delivery import repository as deliveries_repo
    from revocation_worker.endpoints import repository as endpoints_repo
    from revocation_worker.events import publish, timestamp
    from revocation_worker.notices.models import Notice, NoticeModel, NoticeSample
    from revocation_worker.policy.rules import deadline_of
    from revocation_worker.policy.service import default_rule

    licensee_id = str(holder["licensee_id"])
    listed = {str(s["sample_id"]): s for s in holder.get("samples", [])}
    models = list(holder.get("models", []))
    deadline = deadline_of(revocation.occurred_at, default_rule(ctx.settings))
    notice = Notice(
        id=new_id("ntc"),
        revocation_id=revocation.id,
        subject_id=revocation.subject_id,
        licensee_id=licensee_id,
        status="pending",
        deadline=deadline,
        revoked_at=revocation.occurred_at,
        sample_count=len(listed),
        covers_revocation_samples=False,
        created_at=now,
    )
    session.add(notice)
    session.flush()
    rows = [
        {
            "notice_id": notice.id,
            "sample_id": sid,
            "sha256": s.get("sha256") or "",
            "kind": s.get("kind") or "other",
        }
        for sid, s in sorted(listed.items())
    ]
    for i in range(0, len(rows), 1000):
        session.execute(insert(NoticeSample), rows[i : i + 1000])
    for m in models:
        session.add(
            NoticeModel(
                notice_id=notice.id,
                model_id=m["model_id"],
                name=m.get("name", ""),
                version=m.get("version", ""),
                shard_ids=list(m.get("shard_ids") or []),
            )
        )
    deliveries_repo.add_deliveries(session, notice, endpoints_repo.active_for(session, licensee_id), now)
    publish(
        session,
        ctx.settings,
        licensee_id=licensee_id,
        notice_id=notice.id,
        revocation_id=revocation.id,
        subject_id=revocation.subject_id,
        notice_created=pb.NoticeCreated(
            deadline=timestamp(deadline), sample_count=len(listed), model_count=len(models)
        ),
    )


def worker_main(mode: str, registry_url: str, db_url: str) -> None:
    from rescind_common.db import utcnow
    from revocation_worker.config import WorkerSettings
    from revocation_worker.intake.models import Revocation
    from revocation_worker.intake.resolver import RegistryClient, Withdrawal, affected
    from revocation_worker.migrate import upgrade
    from revocation_worker.notices.service import create_many
    from revocation_worker.runner import build_context

    upgrade(db_url)
    settings = WorkerSettings(
        worker_database_url=db_url, worker_registry_url=registry_url, kafka_bootstrap="127.0.0.1:1"
    )
    ctx = build_context(settings)
    samples = [f"smp_fan{i:023d}" for i in range(SAMPLES)]
    withdrawals = [Withdrawal(CONSENT, frozenset(samples), frozenset({PURPOSE}), None)]
    now = utcnow()
    with ctx.session_factory() as session, session.begin():
        session.add(
            Revocation(
                id="rev_bench_fanout",
                subject_id="sub_fanout",
                trigger="subject",
                consent_count=1,
                state="ready",
                occurred_at=now,
                created_at=now,
            )
        )
    registry = RegistryClient(ctx)
    base_kb = rss_kb("self")
    t0 = time.perf_counter()
    holders: Any
    if mode == "legacy":
        # The old answer takes longer than the client's 30 s timeout on a busy machine.
        with httpx.Client(base_url=registry_url, timeout=600) as slow:
            raw: Any = legacy_holders(slow, registry._auth(), samples)
        t1 = time.perf_counter()
        holders = legacy_affected(raw, withdrawals)
    else:
        raw = registry.holders(samples)
        t1 = time.perf_counter()
        holders = affected(raw, withdrawals)
    t2 = time.perf_counter()
    with ctx.session_factory() as session, session.begin():
        revocation = session.get(Revocation, "rev_bench_fanout")
        assert revocation is not None
        if mode == "legacy":
            for holder in holders:
                legacy_create_notice(session, ctx, revocation, holder, now)
        else:
            create_many(session, ctx, [(revocation, holders)], now)
    t3 = time.perf_counter()
    with ctx.session_factory() as session:
        from sqlalchemy import text

        notices = session.scalar(text("SELECT count(*) FROM notices"))
        own_rows = session.scalar(text("SELECT count(*) FROM notice_samples"))
        shared_rows = session.scalar(text("SELECT count(*) FROM revocation_samples"))
    registry.close()
    ctx.engine.dispose()
    print(
        json.dumps(
            {
                "mode": mode,
                "holders_lookup_s": t1 - t0,
                "affected_s": t2 - t1,
                "create_notices_s": t3 - t2,
                "total_s": t3 - t0,
                "rss_before_kb": base_kb,
                "peak_rss_kb": rss_kb("self", "VmHWM"),
                "notices": notices,
                "notice_samples_rows": own_rows,
                "revocation_samples_rows": shared_rows,
            }
        )
    )


# -- the driver ---------------------------------------------------------------------------------


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="rescind-bench-fanout-"))
    registry_db = create_database("fanout_registry")
    worker_dbs: list[str] = []
    stack = launcher(state, {"registry": registry_db})
    report: dict[str, Any] = {
        "machine": machine(),
        "shape": {"licensees": LICENSEES, "samples": SAMPLES, "holdings": LICENSEES * SAMPLES},
    }
    try:
        t = time.perf_counter()
        samples = load_registry(registry_db)
        print(f"loaded {LICENSEES * SAMPLES:,} holdings in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        pid = serve(stack, "registry").popen.pid
        registry: dict[str, Any] = {}
        with httpx.Client(
            base_url=stack.url("registry"), headers=bearer(state, "operator", "bench-ops"), timeout=300
        ) as client:
            client.post("/v1/holders", json={"sample_ids": samples[:10], "view": "licenses"})  # warm-up
            for view, runs in (("licenses", 5), ("samples", SAMPLES_VIEW_RUNS)):
                reset_peak_rss(pid)
                before = rss_kb(pid) or 0
                times, sizes, parse = [], [], []
                for _ in range(runs):
                    t = time.perf_counter()
                    r = client.post("/v1/holders", json={"sample_ids": samples, "view": view})
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text[:300]
                    sizes.append(len(r.content))
                    t = time.perf_counter()
                    r.json()
                    parse.append(time.perf_counter() - t)
                registry[view] = {
                    "runs": runs,
                    "median_s": statistics.median(times),
                    "client_parse_s": statistics.median(parse),
                    "response_bytes": sizes[0],
                    "rss_before_mb": before / 1024,
                    "peak_rss_mb": (rss_kb(pid, "VmHWM") or 0) / 1024,
                }
                print(f"holders view={view}: {registry[view]}", file=sys.stderr)
        report["registry"] = registry

        worker: dict[str, Any] = {}
        for mode in ("new", "legacy") if LEGACY else ("new",):
            # A fresh registry process each: a Python heap never gives back what the samples view took.
            stack.stop("registry")
            pid = serve(stack, "registry").popen.pid
            db = create_database(f"fanout_worker_{mode}")
            worker_dbs.append(db)
            reset_peak_rss(pid)
            argv = [sys.executable, __file__, "--worker", mode, stack.url("registry"), db]
            worker[mode] = run_json(argv, env=stack.env)
            worker[mode]["registry_peak_rss_mb"] = (rss_kb(pid, "VmHWM") or 0) / 1024
            print(f"worker {mode}: {worker[mode]}", file=sys.stderr)
        report["worker"] = worker
    finally:
        stack.stop_all()
        for db in [registry_db, *worker_dbs]:
            drop_database(db)

    write_result("fanout.json", report)
    lic, smp = report["registry"]["licenses"], report["registry"]["samples"]
    print(f"\nfan-out {LICENSEES} licensees x {SAMPLES:,} samples ({LICENSEES * SAMPLES:,} holdings)")
    print(f"{'figure':<52}{'licenses view':>15}{'samples view':>15}{'ratio':>9}")
    rows = [
        ("POST /v1/holders, median s", lic["median_s"], smp["median_s"]),
        ("response MB", lic["response_bytes"] / 1e6, smp["response_bytes"] / 1e6),
        ("client json parse s", lic["client_parse_s"], smp["client_parse_s"]),
        ("registry peak RSS MB", lic["peak_rss_mb"], smp["peak_rss_mb"]),
    ]
    for label, a, b in rows:
        print(f"{label:<52}{a:>15.3f}{b:>15.3f}{b / a if a else float('inf'):>8.1f}x")
    w = report["worker"]
    if "legacy" in w:
        print(f"{'worker':<52}{'new':>15}{'before':>15}{'ratio':>9}")
        for key, label, scale in (
            ("holders_lookup_s", "holders lookup (HTTP + parse + merge) s", 1.0),
            ("affected_s", "affected s", 1.0),
            ("create_notices_s", "create 100 notices + commit s", 1.0),
            ("total_s", "resolution total s", 1.0),
            ("peak_rss_kb", "worker peak RSS MB", 1 / 1024),
            ("registry_peak_rss_mb", "registry peak RSS during it MB", 1.0),
            ("notice_samples_rows", "notice_samples rows", 1.0),
            ("revocation_samples_rows", "revocation_samples rows", 1.0),
        ):
            a, b = w["new"][key] * scale, w["legacy"][key] * scale
            print(f"{label:<52}{a:>15.3f}{b:>15.3f}{(b / a if a else float('inf')):>8.1f}x")
    else:
        print(json.dumps(w["new"], indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    sys.exit(main())
