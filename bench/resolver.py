"""The revocation-worker's resolver alone: ready revocations -> notices, one at a time vs. in batches.

Builds fresh PostgreSQL databases for the registry and the worker (Alembic), starts `registry
serve` (uvicorn, one worker) and fills it like the stack bench: 12 licensees, sellers whose
consents are licensed to 2 or 3 of them (one license per consent and licensee), and per licensee
two models trained on half of its licenses each. Every licensee has one webhook endpoint, so each
notice gets a delivery row. Then, per round, it inserts K ready revocations (each withdrawing one
sample held by 2 or 3 licensees) into the worker's database and times resolver passes until all
are resolved:

  - `baseline`: the resolver as it was before batching (copied below, unchanged: one session to
    read each revocation's parts, one holders call and one transaction per revocation; its
    default of 50 per pass), but for its notices: the single-notice creation it called is gone,
    so it makes each notice alone with `create_many` (a few statements per notice, as before);
  - `batched`: `revocation_worker.intake.resolver.resolve_due` (its default batch).

Both resolve the same samples (the two sets of revocations withdraw the same K samples), and the
script checks that they told every licensee the same samples and models. Rounds alternate the
order (baseline first, then batched first) since the worker's tables grow as it goes. Also counts
SQL statements (an executemany is one), transactions and holders calls per revocation. Writes
bench/results/resolver.json.

  .venv/bin/python bench/resolver.py      (RESCIND_BENCH_PG_URL, RESCIND_BENCH_REVOCATIONS=2000,
                                           RESCIND_BENCH_ROUNDS=2; RESCIND_BENCH_PROFILE=1
                                           prints cProfile's top of the batched passes)
"""

from __future__ import annotations

import cProfile
import datetime as dt
import logging
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _common import (
    bearer,
    create_database,
    drop_database,
    envelope,
    launcher,
    machine,
    serve,
    server_version,
    write_result,
)
from fastapi.testclient import TestClient
from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import Session

from registry.migrate import upgrade as upgrade_registry
from registry.projection.service import apply_event
from rescind_common.db import make_engine, make_session_factory, utcnow
from rescind_common.embedded_broker import free_port
from rescind_common.ids import new_id, new_ids
from rescind_common.proto.rescind.v1 import consent_events_pb2 as cpb
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.config import WorkerSettings
from revocation_worker.context import AppContext
from revocation_worker.events import publish
from revocation_worker.intake.models import Revocation, RevocationPart
from revocation_worker.intake.resolver import RegistryClient, Withdrawal, affected, resolve_due
from revocation_worker.main import create_app as create_worker_app
from revocation_worker.migrate import upgrade as upgrade_worker
from revocation_worker.notices import service as notices
from revocation_worker.notices.models import Notice, NoticeModel, NoticeSample

K = int(os.environ.get("RESCIND_BENCH_REVOCATIONS", "2000"))
ROUNDS = int(os.environ.get("RESCIND_BENCH_ROUNDS", "2"))
LICENSEES = 12
SAMPLES_PER_SELLER = 10

log = logging.getLogger("bench.resolver")


# -- the resolver before batching (commit 0908bca), kept verbatim as the baseline ---------------


def baseline_due(session: Session, now: dt.datetime, limit: int) -> list[str]:
    return list(
        session.scalars(
            select(Revocation.id)
            .where(Revocation.state == "ready", Revocation.next_resolve_at <= now)
            .order_by(Revocation.next_resolve_at)
            .limit(limit)
        )
    )


def baseline_withdrawals_of(session: Session, revocation_id: str) -> list[Withdrawal]:
    merged: dict[str, tuple[set[str], set[str], str | None]] = {}
    for part in session.scalars(select(RevocationPart).where(RevocationPart.revocation_id == revocation_id)):
        samples, purposes, _ = merged.setdefault(part.consent_id, (set(), set(), part.only_licensee_id))
        samples.update(part.sample_ids)
        purposes.update(part.purposes)
    return [Withdrawal(cid, frozenset(s), frozenset(p), only) for cid, (s, p, only) in sorted(merged.items())]


def baseline_resolve_due(ctx: AppContext, registry: RegistryClient, limit: int = 50) -> int:
    with ctx.session_factory() as session:
        ids = baseline_due(session, utcnow(), limit)
    done = 0
    for revocation_id in ids:
        with ctx.session_factory() as session:
            withdrawals = baseline_withdrawals_of(session, revocation_id)
        samples = sorted({s for w in withdrawals for s in w.samples})
        try:
            raw = registry.holders(samples) if samples else []
            holders = affected(raw, withdrawals)
            log.info(
                "revocation %s: %d sample(s), %d licensee(s) hold some, %d hold what it withdrew",
                revocation_id,
                len(samples),
                len(raw),
                len(holders),
            )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise RuntimeError(f"the baseline's holders lookup failed: {exc}") from exc
        with ctx.session_factory() as session, session.begin():
            revocation = session.get(Revocation, revocation_id, with_for_update=True)
            if revocation is None or revocation.state != "ready":
                continue
            now = utcnow()
            for holder in holders:  # one notice at a time (the worker's one creation path)
                notices.create_many(session, ctx, [(revocation, [holder])], now)
            publish(
                session,
                ctx.settings,
                licensee_id="",
                key=revocation.id,
                revocation_id=revocation.id,
                subject_id=revocation.subject_id,
                revocation_resolved=pb.RevocationResolved(
                    notice_count=len(holders), licensee_ids=sorted(h["licensee_id"] for h in holders)
                ),
            )
            revocation.state = "resolved"
            revocation.resolved_at = now
            done += 1
            log.info("revocation %s resolved: %d licensee(s) to notify", revocation_id, len(holders))
    return done


# -- the registry: sellers, licenses, models ---------------------------------------------------


class Seller:
    def __init__(self, subject_id: str, consent_id: str, samples: list[str], holders: list[str]) -> None:
        self.subject_id = subject_id
        self.consent_id = consent_id
        self.samples = samples
        self.holders = holders


def fill_registry(
    db_url: str, api: httpx.Client, ops: dict[str, str], licensee_auth: Callable[[str], dict[str, str]]
) -> tuple[list[str], list[Seller]]:
    """Licensees over the API; samples and consents through the registry's projection handler (as
    its consent-topic consumer applies them); licenses and models over the API."""

    def created(r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 201, r.text[:300]
        return dict(r.json())

    licensees = [
        created(api.post("/v1/licensees", json={"name": f"Buyer {i}"}, headers=ops))["id"]
        for i in range(LICENSEES)
    ]
    engine = make_engine(db_url, pool_size=1)
    sessions = make_session_factory(engine)
    rng = random.Random(11)
    sellers = []
    n_sellers = -(-K // SAMPLES_PER_SELLER)
    with sessions() as session, session.begin():
        for _ in range(n_sellers):
            subject_id = new_id("sub")
            samples = new_ids("smp", SAMPLES_PER_SELLER)
            refs = [
                cpb.SampleRef(sample_id=s, sha256=uuid.uuid4().hex * 2, kind=cpb.SAMPLE_KIND_FACE_IMAGE)
                for s in samples
            ]
            registered = envelope(
                cpb.ConsentEvent, subject_id=subject_id, sample_registered=cpb.SampleRegistered(samples=refs)
            )
            apply_event(session, registered)
            consent_id = new_id("cns")
            granted = cpb.ConsentGranted(
                consent_id=consent_id,
                sample_ids=samples,
                purposes=["model_training"],
                receipt_id=new_id("rcp"),
            )
            apply_event(session, envelope(cpb.ConsentEvent, subject_id=subject_id, consent_granted=granted))
            sellers.append(Seller(subject_id, consent_id, samples, rng.sample(licensees, rng.choice((2, 3)))))
    engine.dispose()
    licenses: dict[str, list[str]] = {lic: [] for lic in licensees}
    for seller in sellers:
        for lic in seller.holders:
            body = {
                "licensee_id": lic,
                "consent_id": seller.consent_id,
                "purpose": "model_training",
                "sample_ids": seller.samples,
            }
            licenses[lic].append(created(api.post("/v1/licenses", json=body, headers=ops))["id"])
    for lic, ids in licenses.items():
        for half, name in ((ids[::2], "faces"), (ids[1::2], "voices")):
            if half:
                created(
                    api.post(
                        "/v1/models",
                        json={"name": name, "version": "1", "license_ids": half},
                        headers=licensee_auth(lic),
                    )
                )
    return licensees, sellers


# -- the worker --------------------------------------------------------------------------------


def insert_ready(ctx: AppContext, sellers: list[Seller]) -> list[tuple[str, str]]:
    """K ready revocations, as the consent consumer leaves them: (revocation id, sample id)."""
    now = utcnow()
    withdrawn = [(seller, sample) for seller in sellers for sample in seller.samples][:K]
    ids = new_ids("rev", len(withdrawn))
    with ctx.session_factory() as session, session.begin():
        session.execute(
            insert(Revocation),
            [
                {
                    "id": rid,
                    "subject_id": seller.subject_id,
                    "trigger": "subject",
                    "consent_count": 1,
                    "state": "ready",
                    "occurred_at": now,
                    "created_at": now,
                    "resolve_attempts": 0,
                    "next_resolve_at": now,
                }
                for rid, (seller, _) in zip(ids, withdrawn, strict=True)
            ],
        )
        session.execute(
            insert(RevocationPart),
            [
                {
                    "revocation_id": rid,
                    "consent_id": seller.consent_id,
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "sample_ids": [sample],
                    "purposes": ["model_training"],
                    "licensee_id": None,
                    "only_licensee_id": None,
                }
                for rid, (seller, sample) in zip(ids, withdrawn, strict=True)
            ],
        )
    return [(rid, sample) for rid, (_, sample) in zip(ids, withdrawn, strict=True)]


class Counters:
    """SQL statements and transactions on the worker's engine; holders calls of one client."""

    def __init__(self, ctx: AppContext, registry: RegistryClient) -> None:
        self.statements = 0
        self.commits = 0
        self.holders_calls = 0
        event.listen(ctx.engine, "before_cursor_execute", self._statement)
        event.listen(ctx.engine, "commit", self._commit)
        real = registry.holders

        def holders(sample_ids: list[str]) -> list[dict[str, Any]]:
            self.holders_calls += -(-len(sample_ids) // 10_000)
            return real(sample_ids)

        registry.holders = holders

    def _statement(self, *args: Any) -> None:
        self.statements += 1

    def _commit(self, *args: Any) -> None:
        self.commits += 1

    def snapshot(self) -> tuple[int, int, int]:
        return self.statements, self.commits, self.holders_calls


def run(
    name: str, ctx: AppContext, counters: Counters, resolve: Callable[[], int], sellers: list[Seller]
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    revocations = insert_ready(ctx, sellers)
    before = counters.snapshot()
    passes = 0
    done = 0
    t = time.perf_counter()
    while done < len(revocations):
        n = resolve()
        passes += 1
        done += n
        if n == 0:
            raise RuntimeError(f"{name}: a pass resolved nothing with {len(revocations) - done} left")
    elapsed = time.perf_counter() - t
    statements, commits, calls = (a - b for a, b in zip(counters.snapshot(), before, strict=True))
    figures = {
        "revocations": len(revocations),
        "seconds": elapsed,
        "revocations_per_s": len(revocations) / elapsed,
        "ms_per_revocation": elapsed * 1000 / len(revocations),
        "passes": passes,
        "sql_statements_per_revocation": statements / len(revocations),
        "transactions_per_revocation": commits / len(revocations),
        "holders_calls_per_revocation": calls / len(revocations),
    }
    print(
        f"  {name:<8} {figures['revocations_per_s']:8.0f} revocations/s  ({elapsed:.2f} s, {passes} passes)",
        file=sys.stderr,
    )
    return figures, revocations


def told(
    ctx: AppContext, revocations: list[tuple[str, str]]
) -> dict[str, set[tuple[str, tuple[str, ...], tuple[str, ...]]]]:
    """Per withdrawn sample: (licensee, samples, model names) of every notice it produced."""
    sample_of = dict(revocations)
    out: dict[str, set[tuple[str, tuple[str, ...], tuple[str, ...]]]] = {s: set() for s in sample_of.values()}
    with ctx.session_factory() as session:
        rows = session.execute(
            select(Notice.id, Notice.revocation_id, Notice.licensee_id).where(
                Notice.revocation_id.in_(list(sample_of))
            )
        ).all()
        samples: dict[str, list[str]] = {}
        models: dict[str, list[str]] = {}
        ids = [r[0] for r in rows]
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            for nid, sid in session.execute(
                select(NoticeSample.notice_id, NoticeSample.sample_id).where(
                    NoticeSample.notice_id.in_(chunk)
                )
            ):
                samples.setdefault(nid, []).append(sid)
            for nid, mid in session.execute(
                select(NoticeModel.notice_id, NoticeModel.model_id).where(NoticeModel.notice_id.in_(chunk))
            ):
                models.setdefault(nid, []).append(mid)
        for nid, rid, lic in rows:
            out[sample_of[rid]].add(
                (lic, tuple(sorted(samples.get(nid, []))), tuple(sorted(models.get(nid, []))))
            )
    return out


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    urls = {k: create_database(f"resolver_{k}") for k in ("registry", "worker")}
    pg_version = server_version()
    state = Path(tempfile.mkdtemp(prefix="rescind-bench-"))
    stack = launcher(state, {"registry": urls["registry"]})
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        upgrade_registry(urls["registry"])
        upgrade_worker(urls["worker"])
        serve(stack, "registry")

        def auth(role: str, sub: str) -> dict[str, str]:
            return bearer(state, role, sub)

        t = time.perf_counter()
        with httpx.Client(base_url=stack.url("registry"), timeout=60) as api:
            licensees, sellers = fill_registry(
                urls["registry"], api, auth("operator", "bench-ops"), lambda lic: auth("licensee", lic)
            )
        settings = WorkerSettings(
            worker_database_url=urls["worker"],
            state_dir=state,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",  # no relay here: events stay in the outbox
            worker_registry_url=stack.url("registry"),
            worker_allow_networks=["127.0.0.0/8"],
            worker_allow_http=True,
        )
        app = create_worker_app(settings)
        ctx: AppContext = app.state.ctx
        with TestClient(app) as worker_api:
            for lic in licensees:
                r = worker_api.post(
                    "/v1/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=auth("licensee", lic)
                )
                assert r.status_code == 201, r.text[:300]
        print(
            f"registry filled ({len(sellers)} sellers, {LICENSEES} licensees) "
            f"in {time.perf_counter() - t:.0f}s",
            file=sys.stderr,
        )

        registry = RegistryClient(ctx)
        counters = Counters(ctx, registry)
        profile = cProfile.Profile() if os.environ.get("RESCIND_BENCH_PROFILE") else None

        def batched() -> int:
            if profile is None:
                return resolve_due(ctx, registry)
            profile.enable()
            try:
                return resolve_due(ctx, registry)
            finally:
                profile.disable()

        runs: dict[str, Callable[[], int]] = {
            "baseline": lambda: baseline_resolve_due(ctx, registry),
            "batched": batched,
        }
        same = True
        for i in range(ROUNDS):
            print(f"round {i + 1} of {ROUNDS}: {K} revocations each", file=sys.stderr)
            order = ["baseline", "batched"] if i % 2 == 0 else ["batched", "baseline"]
            figures: dict[str, dict[str, float]] = {}
            outcomes = {}
            for name in order:
                figures[name], revs = run(name, ctx, counters, runs[name], sellers)
                outcomes[name] = told(ctx, revs)
            same = same and outcomes["baseline"] == outcomes["batched"]
            rounds.append(figures)
        if profile is not None:
            pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        with ctx.session_factory() as session:
            notices_made = int(session.scalar(select(func.count()).select_from(Notice)) or 0)
        registry.close()
        ctx.engine.dispose()
    finally:
        stack.stop_all()
        if not os.environ.get("RESCIND_BENCH_KEEP"):
            for url in urls.values():
                drop_database(url)

    def median(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    summary = {name: {key: median(name, key) for key in rounds[0][name]} for name in ("baseline", "batched")}
    ratio = summary["batched"]["revocations_per_s"] / summary["baseline"]["revocations_per_s"]
    report = {
        "machine": machine(postgresql=pg_version),
        "setup": {
            "revocations_per_round": K,
            "rounds": ROUNDS,
            "licensees": LICENSEES,
            "holders_per_revocation": "2 or 3",
            "notices_made": notices_made,
        },
        "rounds": rounds,
        "median": summary,
        "ratio_revocations_per_s": ratio,
        "same_notices": same,
    }
    write_result("resolver.json", report)

    rows = [
        ("revocations/s", "revocations_per_s", "{:,.0f}"),
        ("ms per revocation", "ms_per_revocation", "{:.2f}"),
        ("SQL statements per revocation", "sql_statements_per_revocation", "{:.2f}"),
        ("transactions per revocation", "transactions_per_revocation", "{:.3f}"),
        ("holders calls per revocation", "holders_calls_per_revocation", "{:.3f}"),
    ]
    print(
        f"\nresolver: {K} ready revocations x {ROUNDS} rounds, median "
        f"(each withdraws 1 sample held by 2-3 of {LICENSEES} licensees)"
    )
    print("| figure | baseline (one at a time) | batched | ratio |\n|---|---|---|---|")
    for label, key, fmt in rows:
        b, n = summary["baseline"][key], summary["batched"][key]
        print(f"| {label} | {fmt.format(b)} | {fmt.format(n)} | {n / b if b else float('nan'):.2f}x |")
    print(f"same notices (licensee, samples, models per withdrawn sample): {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
