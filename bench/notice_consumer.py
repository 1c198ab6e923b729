"""CPU per event of consent-api's notice-topic consumer, on PostgreSQL and a Tansu broker.

Publishes RESCIND_BENCH_EVENTS notice events (default 8,000) shaped like the worker's for one
revocation: a RevocationResolved, then per licensee (three) a NoticeCreated and a NoticeDelivered,
and one NoticeAcknowledged — eight per revocation, keyed by licensee over 6 partitions. Then times
`consent_api.consumer.build_consumer(...).poll_once()` from the moment they are all on the broker
to the last one committed (the group join is not timed: a first event is consumed before the clock
starts), and reports events/s, this process's CPU (`time.process_time()` around the polls: decode,
handler, SQLAlchemy, driver, Kafka client) and the CPU of the database's PostgreSQL backends over
the same span (from /proc, when PostgreSQL runs on this machine; else shown as n/a).

    .venv/bin/python bench/notice_consumer.py                # this tree
    .venv/bin/python bench/notice_consumer.py --baseline REF # this tree and git REF (e.g. main)
    .venv/bin/python bench/notice_consumer.py --burst 8      # one revocation's events at a time
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from _common import (
    PG_ADMIN,
    Drained,
    baseline_parser,
    database_and_topic,
    database_name,
    drain,
    envelope,
    join_group,
    measure_in_trees,
    print_consumer_rows,
)

EVENTS = int(os.environ.get("RESCIND_BENCH_EVENTS", "8000"))
PARTITIONS = 6
LICENSEES = 3
SOURCES = ["libs/rescind-common/src", "services/consent-api/src"]


def events(n: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: n notice events, eight per revocation, in the order the worker emits them."""
    from rescind_common.ids import new_id
    from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb

    def event(revocation: str, licensee: str = "", notice: str = "", **payload: Any) -> bytes:
        ids = {"revocation_id": revocation, "licensee_id": licensee, "notice_id": notice}
        return envelope(pb.NoticeEvent, **ids, **payload).SerializeToString()

    out: list[tuple[bytes, bytes]] = []
    while len(out) < n:
        revocation = new_id("rev")
        notices = [(new_id("lic"), new_id("ntc")) for _ in range(LICENSEES)]
        resolved = pb.RevocationResolved(notice_count=LICENSEES)
        out.append((revocation.encode(), event(revocation, revocation_resolved=resolved)))
        for licensee, notice in notices:
            out.append(
                (licensee.encode(), event(revocation, licensee, notice, notice_created=pb.NoticeCreated()))
            )
        for licensee, notice in notices:
            value = event(revocation, licensee, notice, notice_delivered=pb.NoticeDelivered())
            out.append((licensee.encode(), value))
        licensee, notice = notices[0]
        value = event(revocation, licensee, notice, notice_acknowledged=pb.NoticeAcknowledged())
        out.append((licensee.encode(), value))
    return out[:n]


def measure(n: int, burst: int = 0) -> dict[str, float | None]:
    """One run in this process, with whatever `consent_api` and `rescind_common` are importable."""
    import psycopg

    from consent_api.config import ConsentSettings
    from consent_api.consumer import build_consumer
    from consent_api.migrate import upgrade
    from rescind_common.kafka import make_producer

    with (
        database_and_topic("notices", "notice", upgrade, PARTITIONS) as bus,
        psycopg.connect(PG_ADMIN, autocommit=True) as admin_conn,
    ):
        name = database_name(bus.url)
        settings = ConsentSettings(
            consent_database_url=bus.url,
            state_dir=bus.tmp,
            kafka_bootstrap=bus.bootstrap,
            kafka_notice_topic=bus.topic,
            kafka_topic_partitions=PARTITIONS,
            consent_consumer_group=f"bench-{uuid.uuid4().hex[:6]}",
        )
        consumer = build_consumer(settings)
        producer = make_producer(bus.bootstrap, "bench")
        join_group(consumer, producer, bus.topic, events(1)[0])
        # Every record on the broker first (a backlog drained in polls of up to 500), or, with
        # `burst`, a few at a time as at a steady low rate: the clocks run only while polling.
        pending = events(n)
        step = burst or n
        polled = Drained(0)
        for start in range(0, n, step):
            for key, value in pending[start : start + step]:
                producer.send(bus.topic, key=key, value=value)
            producer.flush(timeout=60)
            polled.add(drain(consumer, min(n, start + step), name, done=polled.records, conn=admin_conn))
        producer.close(timeout=5)
        consumer.stop_event.set()
        consumer._close()
        done, pg = polled.records, polled.pg_cpu_s
        return {
            "records": done,
            "seconds": round(polled.seconds, 3),
            "records_per_s": round(done / polled.seconds, 1),
            "cpu_ms_per_event": round(polled.cpu_s * 1000 / done, 3),
            "pg_cpu_ms_per_event": round(pg * 1000 / done, 3) if pg is not None else None,
        }


def main() -> None:
    parser = baseline_parser(__doc__)
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        metavar="K",
        help="publish K events at a time and poll them in before the next K (8: one revocation "
        "at a time, small polls as at a low steady rate); default: all at once, a backlog",
    )
    args = parser.parse_args()
    burst = ["--burst", str(args.burst)]
    rows = measure_in_trees(args, __file__, SOURCES, lambda n: measure(n, args.burst), EVENTS, *burst)
    if rows is None:
        return
    shape = f"{args.burst} at a time" if args.burst else "all at once"
    print(f"consent-api notice consumer, {EVENTS} events ({shape}), {PARTITIONS} partitions, PostgreSQL")
    print_consumer_rows(rows, args.baseline, "event")


if __name__ == "__main__":
    main()
