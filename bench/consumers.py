"""Records per second of one consumer: the registry projection, on PostgreSQL and a Tansu broker.

Publishes RESCIND_BENCH_EVENTS consent events (default 5,000: per subject a SampleRegistered with
two samples, a ConsentGranted and a ConsentRevoked that ends it, keyed by subject over 6
partitions), then times `registry.consumer.build_consumer(...).poll_once()` from the moment they are all on
the broker to the last one committed. The group join is not timed (a first event is consumed
before the clock starts).

    .venv/bin/python bench/consumers.py                # this tree
    .venv/bin/python bench/consumers.py --baseline REF # this tree and git REF (e.g. main), side by side

With --baseline the script exports REF with `git archive` into a temporary directory (nothing in
the working tree changes) and runs itself there too, so that both figures come from one machine
in one run. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PG_ADMIN = os.environ.get("RESCIND_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
EVENTS = int(os.environ.get("RESCIND_BENCH_EVENTS", "5000"))
PARTITIONS = 6
REPO = Path(__file__).resolve().parent.parent
SOURCES = ["libs/rescind-common/src", "services/registry/src"]
PROTO = "libs/rescind-common/src/rescind_common/proto"


def events(n: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: n consent events, three per subject, in the order consent-api emits them."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from rescind_common.ids import new_id, new_ids
    from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

    def envelope(subject: str, **payload: object) -> bytes:
        now = Timestamp()
        now.GetCurrentTime()
        event = pb.ConsentEvent(event_id=new_id("evt"), subject_id=subject, producer="bench", occurred_at=now)
        ((field, message),) = payload.items()
        getattr(event, field).CopyFrom(message)
        return event.SerializeToString()

    out: list[tuple[bytes, bytes]] = []
    while len(out) < n:
        subject, consent = new_id("sub"), new_id("cns")
        samples = new_ids("smp", 2)
        refs = [
            pb.SampleRef(sample_id=s, sha256=uuid.uuid4().hex * 2, kind=pb.SAMPLE_KIND_FACE_IMAGE)
            for s in samples
        ]
        revoked = pb.ConsentRevoked(
            revocation_id=new_id("rev"),
            consent_id=consent,
            sample_ids=samples,
            consent_ended=True,
            purposes=["model_training"],
            chunk_count=1,
            consent_count=1,
        )
        for value in (
            envelope(subject, sample_registered=pb.SampleRegistered(samples=refs)),
            envelope(
                subject,
                consent_granted=pb.ConsentGranted(
                    consent_id=consent, sample_ids=samples, purposes=["model_training"]
                ),
            ),
            envelope(subject, consent_revoked=revoked),
        ):
            out.append((subject.encode(), value))
    return out[:n]


def measure(n: int) -> dict[str, float]:
    """One run in this process, with whatever `registry` and `rescind_common` are importable."""
    import psycopg

    from registry.config import RegistrySettings
    from registry.consumer import build_consumer
    from registry.migrate import upgrade
    from rescind_common.embedded_broker import EmbeddedBroker
    from rescind_common.kafka import ensure_topics, make_admin, make_producer

    name = f"rescind_bench_consumer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN.rpartition('/')[0]}/{name}"
    try:
        upgrade(url)
        with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
            topic = f"bench.consent.{uuid.uuid4().hex[:8]}"
            admin = make_admin(broker.bootstrap, "bench-admin")
            try:
                ensure_topics(admin, [topic], partitions=PARTITIONS, replication_factor=1)
            finally:
                admin.close()
            settings = RegistrySettings(
                registry_database_url=url,
                state_dir=Path(tmp),
                kafka_bootstrap=broker.bootstrap,
                kafka_consent_topic=topic,
                kafka_topic_partitions=PARTITIONS,
            )
            consumer = build_consumer(settings, group_id=f"bench-{uuid.uuid4().hex[:6]}")
            producer = make_producer(broker.bootstrap, "bench")
            # A first event, consumed before the clock starts: the group join is not timed.
            ((key, value),) = events(1)
            producer.send(topic, key=key, value=value).get(timeout=30)
            deadline = time.monotonic() + 120
            while not consumer.poll_once(timeout_ms=500):
                if time.monotonic() > deadline:
                    raise RuntimeError("the consumer did not join its group in 120 s")
            for key, value in events(n):
                producer.send(topic, key=key, value=value)
            producer.flush(timeout=60)
            producer.close(timeout=5)
            # From the moment every record is on the broker to the moment the last one is committed.
            done, started = 0, time.monotonic()
            while done < n and time.monotonic() < started + 600:
                done += consumer.poll_once(timeout_ms=500)
            elapsed = time.monotonic() - started
            consumer.stop_event.set()
            consumer._close()
        return {"records": done, "seconds": round(elapsed, 3), "records_per_s": round(done / elapsed, 1)}
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_in(tree: Path, n: int) -> dict[str, float]:
    """This script in a fresh interpreter whose imports come from `tree`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(tree / s) for s in SOURCES)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one", str(n)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def export(ref: str, into: Path) -> Path:
    """`git archive REF` unpacked into `into`, plus this tree's generated protobuf code (not in git)."""
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.copytree(REPO / PROTO, into / PROTO, dirs_exist_ok=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", metavar="REF", help="also measure git REF (exported, not checked out)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    rows = {"this tree": run_in(REPO, EVENTS)}
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            rows[args.baseline] = run_in(export(args.baseline, Path(tmp)), EVENTS)
    print(f"registry projection consumer, {EVENTS} events, {PARTITIONS} partitions, PostgreSQL")
    for label, r in rows.items():
        print(f"  {label:<12} {r['records_per_s']:>9.1f} records/s  ({r['records']} in {r['seconds']} s)")
    if args.baseline:
        ratio = rows["this tree"]["records_per_s"] / rows[args.baseline]["records_per_s"]
        print(f"  ratio        {ratio:>9.1f} x")


if __name__ == "__main__":
    main()
