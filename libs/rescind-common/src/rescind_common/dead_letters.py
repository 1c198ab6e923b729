"""What a Kafka dead-letter record carries, shared by the consumers that write them and the
`rescind dead-letters kafka` commands that read and replay them.

A consumer that gives up on a record copies it (key, value, the producer's headers) to
`<topic>.<service>.dlq` and adds the `dlq-*` headers below. Replaying drops every `dlq-*` header,
so the record looks as the relay published it, and adds `dlq-replayed-from`: if it fails again,
its new dead letter says it had been replayed. Kept free of heavy imports: the CLI loads it.
"""

from __future__ import annotations

from collections.abc import Iterable

# Set by the outbox relay on every event it publishes.
EVENT_ID = "event-id"
EVENT_TYPE = "event-type"

ORIGINAL_TOPIC = "dlq-original-topic"
ORIGINAL_PARTITION = "dlq-original-partition"
ORIGINAL_OFFSET = "dlq-original-offset"
ERROR = "dlq-error"
CONSUMER = "dlq-consumer"
# "<dlq topic>:<partition>:<offset>" of the dead letter a replayed record came from.
REPLAYED_FROM = "dlq-replayed-from"

DLQ_HEADER_PREFIX = "dlq-"
DLQ_SUFFIX = ".dlq"

# The consumer group whose committed offset on a dead-letter topic marks what was replayed.
REPLAY_GROUP = "rescind-dlq-replay"

UNKNOWN = "unknown"

Headers = Iterable[tuple[str, bytes | None]]


def dead_letter_topic(topic: str, service: str) -> str:
    return f"{topic}.{service}{DLQ_SUFFIX}"


def is_dead_letter_topic(topic: str) -> bool:
    return topic.endswith(DLQ_SUFFIX)


def header(headers: Headers | None, name: str) -> str | None:
    """The last value of header `name`, decoded (undecodable bytes replaced), or None."""
    value: str | None = None
    for key, raw in headers or ():
        if key == name and raw is not None:
            value = raw.decode("utf-8", "replace")
    return value


def replay_headers(headers: Headers | None, source: str) -> list[tuple[str, bytes]]:
    """The producer's headers without the `dlq-*` ones, plus `dlq-replayed-from: source`."""
    kept = [(k, v) for k, v in headers or () if v is not None and not k.startswith(DLQ_HEADER_PREFIX)]
    return [*kept, (REPLAYED_FROM, source.encode())]
