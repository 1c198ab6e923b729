"""`rescind dead-letters kafka list|replay`: the consumers' dead-letter topics (`<topic>.<service>.dlq`).

A consumer that gave up on a record (see rescind_common.consumer) copied it there; nothing applies it
until it is replayed. `replay` publishes each record again to its original topic, as the relay had
published it (key, value, the producer's headers) plus `dlq-replayed-from`, so every consumer group
of that topic sees it once more; they deduplicate by event id, so the groups that had applied it
change nothing.

What was replayed is remembered as the committed offset of the group `rescind-dlq-replay` on each
dead-letter partition: everything below it was replayed. `replay --all` starts there, so a second
run replays nothing again. Publishing comes before the commit: a run cut short in between replays
those records again next time, which the consumers absorb.

Imported lazily by `rescind_cli.main` (it loads the Kafka client).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from rescind_cli.errors import CliError
from rescind_cli.tokens import load_settings
from rescind_common import dead_letters as dl
from rescind_common.kafka import broker_reachable, make_admin, make_producer, security_config

CLIENT_ID = "rescind-cli-dead-letters"
# Empty polls in a row after which a partition counts as read to its end even if its reported end
# offset was not reached (an end past the last record: transaction markers, an under-report).
EMPTY_POLLS = 3


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]

    def header(self, name: str) -> str | None:
        return dl.header(self.headers, name)

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def original_topic(self) -> str | None:
        return self.header(dl.ORIGINAL_TOPIC)

    def describe(self, replayed: bool) -> dict[str, Any]:
        """What an operator needs to decide: where it came from, what it is, why it failed."""

        def number(name: str) -> int | None:
            text = self.header(name)
            return int(text) if text is not None and text.lstrip("-").isdigit() else None

        return {
            "offset": self.offset,
            "partition": self.partition,
            "time": dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "original_topic": self.original_topic,
            "original_partition": number(dl.ORIGINAL_PARTITION),
            "original_offset": number(dl.ORIGINAL_OFFSET),
            "consumer": self.header(dl.CONSUMER),
            "event_type": self.header(dl.EVENT_TYPE) or dl.UNKNOWN,
            "event_id": self.header(dl.EVENT_ID),
            "error": self.header(dl.ERROR),
            # Set when this record had been replayed once already and failed again.
            "replayed_from": self.header(dl.REPLAYED_FROM),
            "replayed": replayed,
        }


@dataclass
class TopicLog:
    """A dead-letter topic as read now: its records and the replay group's offset per partition."""

    topic: str
    records: list[DeadLetter]
    committed: dict[int, int]  # partition -> everything below was replayed

    def replayed(self, record: DeadLetter) -> bool:
        return record.offset < self.committed.get(record.partition, 0)

    def watermarks(self, replayed_now: set[tuple[int, int]]) -> dict[int, int]:
        """Per partition, the offset below which every record is replayed, counting `replayed_now`
        ((partition, offset) pairs): the first record still pending, or past the last one."""
        marks: dict[int, int] = dict(self.committed)
        for partition in sorted({r.partition for r in self.records}):
            mark = self.committed.get(partition, 0)
            for r in sorted((r for r in self.records if r.partition == partition), key=lambda r: r.offset):
                if r.offset < mark:
                    continue
                if (partition, r.offset) not in replayed_now:
                    break
                mark = r.offset + 1
            marks[partition] = mark
        return marks


def show(data: Any) -> int:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


@contextmanager
def _kafka() -> Iterator[str]:
    """The bootstrap servers (RESCIND_KAFKA_BOOTSTRAP), checked reachable; Kafka errors inside
    become CliError."""
    bootstrap = load_settings().kafka_bootstrap
    if not broker_reachable(bootstrap, timeout=3.0):
        raise CliError(
            f"cannot reach Kafka at {bootstrap} "
            "(set RESCIND_KAFKA_BOOTSTRAP; is the stack running? `make run`)"
        )
    try:
        yield bootstrap
    except KafkaError as exc:
        raise CliError(f"Kafka at {bootstrap}: {type(exc).__name__}: {exc}") from exc


def dead_letter_topics(bootstrap: str, wanted: Sequence[str] | None) -> list[str]:
    """The broker's topics ending in `.dlq`, or those of `wanted` (each must be one of them)."""
    admin = make_admin(bootstrap, CLIENT_ID)
    try:
        found = sorted(t for t in admin.list_topics() if dl.is_dead_letter_topic(t))
    finally:
        admin.close()
    if not wanted:
        return found
    unknown = [t for t in wanted if t not in found]
    if unknown:
        known = ", ".join(found) or "none yet"
        raise CliError(f"no dead-letter topic {', '.join(unknown)} (dead-letter topics: {known})", code=2)
    return list(dict.fromkeys(wanted))


def _reader(bootstrap: str) -> KafkaConsumer:
    # A member of the replay group only to read and commit its offsets: partitions are assigned by
    # hand, so it never joins (or disturbs) a group.
    return KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        client_id=CLIENT_ID,
        group_id=dl.REPLAY_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        fetch_max_wait_ms=100,
        request_timeout_ms=30_000,
        **security_config(),
    )


def read_topic(consumer: KafkaConsumer, topic: str) -> TopicLog:
    """Every record the topic holds now, and the replay group's committed offsets on it."""
    partitions = sorted(consumer.partitions_for_topic(topic) or ())
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    committed: dict[int, int] = {}
    for tp in tps:
        offset = consumer.committed(tp)
        if offset is not None:
            committed[tp.partition] = int(offset)
    records: list[DeadLetter] = []
    if tps:
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        empty = 0
        while empty < EMPTY_POLLS:
            polled = consumer.poll(timeout_ms=300)
            got = [r for batch in polled.values() for r in batch]
            records += [
                DeadLetter(
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    timestamp_ms=r.timestamp,
                    key=r.key,
                    value=r.value,
                    headers=tuple(r.headers or ()),
                )
                for r in got
            ]
            if got:
                empty = 0
                continue
            empty += 1
            if all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
    records.sort(key=lambda r: (r.partition, r.offset))
    return TopicLog(topic=topic, records=records, committed=committed)


def list_dead_letters(topics: Sequence[str] | None) -> int:
    with _kafka() as bootstrap:
        names = dead_letter_topics(bootstrap, topics)
        consumer = _reader(bootstrap)
        try:
            logs = [read_topic(consumer, name) for name in names]
        finally:
            consumer.close(autocommit=False)
    out = []
    for log in logs:
        described = [r.describe(log.replayed(r)) for r in log.records]
        out.append(
            {
                "topic": log.topic,
                "records": described,
                "pending": sum(not d["replayed"] for d in described),
                "replayed_up_to": {str(p): o for p, o in sorted(log.committed.items())},
            }
        )
    return show({"replay_group": dl.REPLAY_GROUP, "topics": out})


def replay(topics: Sequence[str] | None, offsets: Sequence[int] | None, partition: int) -> int:
    """Replay the pending records of `topics` (all dead-letter topics when None), or, with
    `offsets`, exactly those records of the one topic named (again, if replayed before)."""
    with _kafka() as bootstrap:
        names = dead_letter_topics(bootstrap, topics)
        if offsets and len(names) != 1:
            raise CliError("--offset needs --topic: the dead-letter topic the offsets are in", code=2)
        consumer = _reader(bootstrap)
        try:
            logs = [read_topic(consumer, name) for name in names]
            chosen = [_choose(log, offsets, partition) for log in logs]
            producer = make_producer(bootstrap, f"{CLIENT_ID}-replay")
            try:
                sent = [_publish(producer, records) for records in chosen]
            finally:
                producer.close(timeout=10)
            results = []
            for log, records, published in zip(logs, chosen, sent, strict=True):
                results.append(_remember(consumer, log, records, published))
        finally:
            consumer.close(autocommit=False)
    total = sum(len(r["replayed"]) for r in results)
    return show({"replay_group": dl.REPLAY_GROUP, "replayed": total, "topics": results})


def _choose(log: TopicLog, offsets: Sequence[int] | None, partition: int) -> list[DeadLetter]:
    if offsets:
        by_offset = {r.offset: r for r in log.records if r.partition == partition}
        missing = [o for o in offsets if o not in by_offset]
        if missing:
            raise CliError(
                f"{log.topic}[{partition}] holds no record at offset {', '.join(map(str, missing))}"
                " (see `rescind dead-letters kafka list`)",
                code=2,
            )
        records = [by_offset[o] for o in dict.fromkeys(offsets)]
    else:
        records = [r for r in log.records if not log.replayed(r)]
    # Nowhere to send it, or nothing to send (Kafka refuses a record without key and value).
    orphans = [r.offset for r in records if not r.original_topic or (r.key is None and r.value is None)]
    if orphans:
        raise CliError(
            f"{log.topic}: records at {orphans} carry no {dl.ORIGINAL_TOPIC} header or are empty;"
            " nothing replayed"
        )
    return records


def _publish(producer: Any, records: list[DeadLetter]) -> list[str]:
    """Send each record to its original topic; where each landed ("topic[partition]@offset")."""
    futures = [
        producer.send(
            r.original_topic,
            key=r.key,
            value=r.value,
            headers=dl.replay_headers(r.headers, r.source),
        )
        for r in records
    ]
    producer.flush(timeout=30)
    landed = []
    for future in futures:
        meta = future.get(timeout=30)
        landed.append(f"{meta.topic}[{meta.partition}]@{meta.offset}")
    return landed


def _remember(
    consumer: KafkaConsumer, log: TopicLog, records: list[DeadLetter], published: list[str]
) -> dict[str, Any]:
    before = {r.source for r in log.records if log.replayed(r)}
    marks = log.watermarks({(r.partition, r.offset) for r in records})
    advanced = {
        TopicPartition(log.topic, p): OffsetAndMetadata(o, "", -1)
        for p, o in marks.items()
        if o > log.committed.get(p, 0)
    }
    if advanced:
        try:
            consumer.commit(advanced)
        except KafkaError as exc:
            raise CliError(
                f"{log.topic}: replayed {len(records)} records but could not remember it ({exc}); "
                "a second replay publishes them again (harmless: consumers deduplicate by event id)"
            ) from exc
    remembered = TopicLog(log.topic, log.records, {**log.committed, **marks})
    forgotten = [r.offset for r in records if not remembered.replayed(r)]
    skipped = len(before - {r.source for r in records})
    if records:
        message = f"replayed {len(records)} record(s) from {log.topic}"
        again = [r.offset for r in records if r.source in before]
        if again:
            message += f"; offsets {again} had been replayed before"
        if forgotten:
            message += (
                f"; offsets {forgotten} are not remembered as replayed (earlier records are still"
                " pending), so `replay --all` replays them again (harmless: consumers deduplicate by"
                " event id)"
            )
    elif log.records:
        message = f"nothing to replay: the {len(before)} record(s) of {log.topic} were replayed before"
    else:
        message = f"nothing to replay: {log.topic} is empty"
    return {
        "topic": log.topic,
        "replayed": [
            {
                "offset": r.offset,
                "partition": r.partition,
                "event_type": r.header(dl.EVENT_TYPE) or dl.UNKNOWN,
                "event_id": r.header(dl.EVENT_ID),
                "to": landed,
            }
            for r, landed in zip(records, published, strict=True)
        ],
        "already_replayed": skipped,
        "replayed_up_to": {str(p): o for p, o in sorted(remembered.committed.items())},
        "message": message,
    }
