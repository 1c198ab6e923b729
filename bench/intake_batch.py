"""The revocation-worker's consumer intake alone: `IntakeHandler.apply_batch`, this tree
beside a base revision, on PostgreSQL, in one run.

N ConsentRevoked events (default 2,000: three in four revocations one event, the others two
consents, one of them in two chunks, so 3 events; parts of a multi-part revocation land in
different polls), applied in polls of 500 (the consumer's max_poll_records), one transaction per
poll, every poll then repeated once (a redelivery: nothing applied). Per variant and round:
events/s and the process's CPU ms per event (imports and set-up excluded), and a check that both
variants leave the same revocation states and part counts.

The base variant is `git archive <rev>` of services/revocation-worker/src put first on PYTHONPATH.

  .venv/bin/python bench/intake_batch.py [--events 2000] [--poll 500] [--rounds 3] [--base main]

Needs PostgreSQL on 127.0.0.1:5432 (RESCIND_TEST_PG_URL); creates and drops its own databases.
Writes bench/results/intake_batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from _common import (
    REPO,
    compare_variants,
    export_tree,
    run_json,
    scratch_database,
    self_cpu,
    with_pythonpath,
    write_result,
)

WORKER_SRC = "services/revocation-worker/src"
# This bench reads the tests' variable, not RESCIND_BENCH_PG_URL.
PG_ADMIN = os.environ.get("RESCIND_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def events(n: int, seed: str) -> list[bytes]:
    """n serialized ConsentRevoked events; the parts of multi-part revocations spread apart."""
    import datetime as dt

    from google.protobuf.timestamp_pb2 import Timestamp

    from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

    ts = Timestamp()
    ts.FromDatetime(dt.datetime.now(dt.UTC))
    out: list[pb.ConsentEvent] = []
    late: list[pb.ConsentEvent] = []
    i = 0
    while len(out) + len(late) < n:
        rev = f"rev_{seed}_{i:06d}"
        sub = f"sub_{seed}_{i:06d}"
        # Every fourth: two consents, the first in two chunks.
        one, three = [("a", 0, 1, 1)], [("a", 0, 2, 2), ("a", 1, 2, 2), ("b", 0, 1, 2)]
        shapes = three if i % 4 == 3 else one
        for j, (consent, chunk, chunks, consents) in enumerate(shapes):
            event = pb.ConsentEvent(
                event_id=f"evt_{seed}_{i:06d}_{j}",
                subject_id=sub,
                producer="bench",
                occurred_at=ts,
                consent_revoked=pb.ConsentRevoked(
                    revocation_id=rev,
                    consent_id=f"cns_{seed}_{i:06d}{consent}",
                    sample_ids=[f"smp_{seed}_{i:06d}_{j}"],
                    consent_ended=True,
                    purposes=["model_training"],
                    trigger=pb.REVOCATION_TRIGGER_SUBJECT,
                    chunk_index=chunk,
                    chunk_count=chunks,
                    consent_count=consents,
                ),
            )
            (late if j == 2 else out).append(event)
        i += 1
    # The last part of each multi-part revocation arrives a poll or more later.
    mixed = out + late
    return [e.SerializeToString() for e in mixed[:n]]


def child(db_url: str, n: int, poll: int, seed: str) -> None:
    from rescind_common.db import make_engine, make_session_factory
    from revocation_worker.intake.handler import IntakeHandler

    engine = make_engine(db_url, pool_size=2)
    factory = make_session_factory(engine)
    handler = IntakeHandler(factory)
    decoded = [handler.decode(v) for v in events(n, seed)]
    with factory() as session:  # connect and warm up outside the clock
        session.connection()
    cpu = self_cpu()
    start = time.perf_counter()
    applied = 0
    for i in range(0, n, poll):
        chunk = decoded[i : i + poll]
        for _ in range(2):  # the poll, then its redelivery
            with factory() as session, session.begin():
                applied += sum(handler.apply_batch(session, chunk))
    wall = time.perf_counter() - start
    cpu = self_cpu() - cpu
    engine.dispose()
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "applied": applied}), flush=True)


def outcome(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT r.state, count(*),"
            " sum((SELECT count(*) FROM revocation_parts p WHERE p.revocation_id = r.id))"
            " FROM revocations r GROUP BY r.state"
        ).fetchall()
    return {f"{state}": int(count) for state, count, _ in rows} | {
        f"{state}_parts": int(parts) for state, _, parts in rows
    }


def run_variant(variant: str, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    from revocation_worker.migrate import upgrade

    with scratch_database("intake", PG_ADMIN) as db_url:
        upgrade(db_url)
        sizes = ["--events", str(args.events), "--poll", str(args.poll)]
        env = with_pythonpath(dict(os.environ), src)
        got = run_json([sys.executable, str(Path(__file__).resolve()), "--child", db_url, *sizes], env=env)
        states = outcome(db_url)
    return {
        "variant": variant,
        "events": args.events,
        "applied": got["applied"],
        "events_per_s": round(args.events / got["wall_s"], 1),
        "cpu_ms_per_event": round(got["cpu_s"] * 1000 / args.events, 4),
        "states": states,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--poll", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", default="main")
    parser.add_argument("--child", metavar="DB_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.events, args.poll, "b")
        return
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = export_tree(args.base, Path(tmp), WORKER_SRC) / WORKER_SRC
        variants = {"base": base, "new": REPO / WORKER_SRC}
        for r in range(args.rounds):
            for variant in ("base", "new") if r % 2 == 0 else ("new", "base"):
                row = run_variant(variant, variants[variant], args) | {"round": r}
                runs.append(row)
                print(json.dumps(row), flush=True)
    states = {json.dumps(r["states"], sort_keys=True) for r in runs}
    assert len(states) == 1, f"the variants disagree: {states}"
    summary: dict[str, Any] = {}
    for variant in ("base", "new"):
        rows = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["cpu_ms_per_event"])
        mid = rows[len(rows) // 2]
        summary[variant] = {"events_per_s": mid["events_per_s"], "cpu_ms_per_event": mid["cpu_ms_per_event"]}
    heads = ("events/s", "CPU ms/event")
    compare_variants(summary, "events_per_s", "cpu_ms_per_event", heads, f"   (median of {args.rounds})")
    print(f"end state (both): {runs[0]['states']}")
    write_result(
        "intake_batch.json", {"base": args.base, "poll": args.poll, "runs": runs, "summary": summary}
    )


if __name__ == "__main__":
    main()
