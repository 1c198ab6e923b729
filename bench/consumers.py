"""Records per second and CPU per record of one consumer: the registry projection, on PostgreSQL
and a Tansu broker.

Two workloads (`--mode`), RESCIND_BENCH_EVENTS events each (default 5,000), keyed by subject over 6
partitions:
- `mixed` (default): per subject a SampleRegistered with two samples, a ConsentGranted and a
  ConsentRevoked that ends it, all timed;
- `revocations`: the samples and grants are consumed first (not timed), then each consent is
  licensed to 3 licensees (rows written straight into the registry's tables), then one
  ConsentRevoked per consent withdrawing 1 of its 2 samples for every purpose (the shape of a
  seller's revocation in the whole-stack bench) is timed: every event touches license_samples.

Timed: `registry.consumer.build_consumer(...).poll_once()` from the moment the records are all on
the broker to the last one committed (RESCIND_BENCH_POLL_RECORDS per poll, default 500). The group
join is not timed (a first event is consumed before the clock starts). Besides records/s it
reports CPU per record: of the consumer's process (all its threads) and of the PostgreSQL backends
serving it (from /proc; the database's connections).

    .venv/bin/python bench/consumers.py                # this tree
    .venv/bin/python bench/consumers.py --baseline REF # this tree and git REF (e.g. main), side by side
    .venv/bin/python bench/consumers.py --mode revocations --baseline main
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from _common import (
    baseline_parser,
    database_and_topic,
    database_name,
    drain,
    envelope,
    join_group,
    measure_in_trees,
    print_consumer_rows,
)

EVENTS = int(os.environ.get("RESCIND_BENCH_EVENTS", "5000"))
# Records per poll (the consumer's default 500). 1 is the trickle of a live stack at tens of
# revocations per second, where a poll rarely holds more than one record.
POLL_RECORDS = int(os.environ.get("RESCIND_BENCH_POLL_RECORDS", "500"))
PARTITIONS = 6
SOURCES = ["libs/rescind-common/src", "services/registry/src"]


Subject = tuple[str, str, list[str]]  # subject id, consent id, sample ids


def events(n: int, subjects: list[Subject] | None = None) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: n consent events, three per subject, in the order consent-api emits them.
    With `subjects` (an empty list to fill), only the first two of each (the revocations are
    `revocations(subjects)`)."""
    from rescind_common.ids import new_id, new_ids
    from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

    def event(subject: str, **payload: Any) -> bytes:
        return envelope(pb.ConsentEvent, subject_id=subject, **payload).SerializeToString()

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
        values = [
            event(subject, sample_registered=pb.SampleRegistered(samples=refs)),
            event(
                subject,
                consent_granted=pb.ConsentGranted(
                    consent_id=consent, sample_ids=samples, purposes=["model_training"]
                ),
            ),
        ]
        if subjects is None:
            values.append(event(subject, consent_revoked=revoked))
        else:
            subjects.append((subject, consent, samples))
        out += [(subject.encode(), value) for value in values]
    return out if subjects is not None else out[:n]


def revocations(subjects: list[Subject]) -> list[tuple[bytes, bytes]]:
    """One ConsentRevoked per consent: its first sample withdrawn for every purpose."""
    from rescind_common.ids import new_id
    from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb

    out: list[tuple[bytes, bytes]] = []
    for subject, consent, samples in subjects:
        revoked = pb.ConsentRevoked(
            revocation_id=new_id("rev"),
            consent_id=consent,
            sample_ids=samples[:1],
            purposes=["model_training"],
            chunk_count=1,
            consent_count=1,
        )
        event = envelope(pb.ConsentEvent, subject_id=subject, consent_revoked=revoked)
        out.append((subject.encode(), event.SerializeToString()))
    return out


LICENSEES = 3


def add_licenses(url: str, subjects: list[Subject]) -> None:
    """Each consent licensed to LICENSEES licensees, straight into the registry's tables."""
    import datetime as dt

    import psycopg

    from rescind_common.ids import new_id

    now = dt.datetime.now(dt.UTC)
    licensees = [new_id("lic") for _ in range(LICENSEES)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO licensees (id, name, created_at) VALUES (%s, %s, %s)",
            [(lic, f"bench {i}", now) for i, lic in enumerate(licensees)],
        )
        licenses, samples = [], []
        for subject, consent, sample_ids in subjects:
            for lic in licensees:
                lid = new_id("lcs")
                licenses.append((lid, lic, consent, subject, "model_training", len(sample_ids), now))
                samples += [(lid, s) for s in sample_ids]
        cur.executemany(
            "INSERT INTO licenses (id, licensee_id, consent_id, subject_id, purpose, dataset_name,"
            " dataset_version, status, sample_count, revoked_sample_count, created_at)"
            " VALUES (%s, %s, %s, %s, %s, '', '', 'active', %s, 0, %s)",
            licenses,
        )
        cur.executemany("INSERT INTO license_samples (license_id, sample_id) VALUES (%s, %s)", samples)
        cur.execute("ANALYZE")


def measure(n: int, mode: str) -> dict[str, float]:
    """One run in this process, with whatever `registry` and `rescind_common` are importable."""
    from registry.config import RegistrySettings
    from registry.consumer import build_consumer
    from registry.migrate import upgrade
    from rescind_common.kafka import make_producer

    with database_and_topic("consumer", "consent", upgrade, PARTITIONS) as bus:
        settings = RegistrySettings(
            registry_database_url=bus.url,
            state_dir=bus.tmp,
            kafka_bootstrap=bus.bootstrap,
            kafka_consent_topic=bus.topic,
            kafka_topic_partitions=PARTITIONS,
        )
        consumer = build_consumer(
            settings, group_id=f"bench-{uuid.uuid4().hex[:6]}", max_poll_records=POLL_RECORDS
        )
        producer = make_producer(bus.bootstrap, "bench")
        join_group(consumer, producer, bus.topic, events(1)[0])
        if mode == "revocations":
            subjects: list[Subject] = []
            setup = events(2 * n, subjects)
            for key, value in setup:
                producer.send(bus.topic, key=key, value=value)
            producer.flush(timeout=60)
            done, deadline = 0, time.monotonic() + 600
            while done < len(setup) and time.monotonic() < deadline:
                done += consumer.poll_once(timeout_ms=500)
            add_licenses(bus.url, subjects)
            timed = revocations(subjects)
        else:
            timed = events(n)
        n = len(timed)
        for key, value in timed:
            producer.send(bus.topic, key=key, value=value)
        producer.flush(timeout=60)
        producer.close(timeout=5)
        # From the moment every record is on the broker to the moment the last one is committed.
        polled = drain(consumer, n, database_name(bus.url))
        consumer.stop_event.set()
        consumer._close()
        done = polled.records
        return {
            "records": done,
            "seconds": round(polled.seconds, 3),
            "records_per_s": round(done / polled.seconds, 1),
            "cpu_ms_per_record": round(1000 * polled.cpu_s / max(done, 1), 3),
            "pg_cpu_ms_per_record": round(1000 * (polled.pg_cpu_s or 0.0) / max(done, 1), 3),
        }


def main() -> None:
    parser = baseline_parser(__doc__)
    parser.add_argument("--mode", choices=["mixed", "revocations"], default="mixed")
    args = parser.parse_args()
    rows = measure_in_trees(
        args, __file__, SOURCES, lambda n: measure(n, args.mode), EVENTS, "--mode", args.mode
    )
    if rows is None:
        return
    print(
        f"registry projection consumer, {args.mode}, {EVENTS} events, {PARTITIONS} partitions,"
        f" up to {POLL_RECORDS} records per poll, PostgreSQL"
    )
    print_consumer_rows(rows, args.baseline, "record")


if __name__ == "__main__":
    main()
