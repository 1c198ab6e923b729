"""License-topic events (rescind.v1.LicenseEvent), through the registry's outbox: built here as
plain rows, written by the projection in the transaction of the change it reports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from rescind_common.ids import new_ids
from rescind_common.outbox import EVENT_IDS_CHUNK, outbox_row
from rescind_common.proto.rescind.v1 import license_events_pb2 as pb

PRODUCER = "registry"
# Sample ids per event, as consent-api chunks its ConsentRevoked events: a license may hold 100,000
# samples (RESCIND_REGISTRY_MAX_LICENSE_SAMPLES), far over a Kafka record's default 1 MB.
EVENT_CHUNK = EVENT_IDS_CHUNK


def timestamp(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def samples_withdrawn(
    topic: str,
    *,
    license_id: str,
    licensee_id: str,
    consent_id: str,
    revocation_id: str,
    purpose: str,
    sample_ids: Sequence[str],
    license_ended: bool,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The outbox rows of one license's LicenseSamplesWithdrawn (one per chunk of sample ids, in
    order), keyed by its licensee."""
    ordered = sorted(sample_ids)
    parts = [ordered[i : i + EVENT_CHUNK] for i in range(0, len(ordered), EVENT_CHUNK)] or [[]]
    rows = []
    for index, (event_id, part) in enumerate(zip(new_ids("evt", len(parts)), parts, strict=True)):
        event = pb.LicenseEvent(
            event_id=event_id,
            occurred_at=timestamp(now),
            licensee_id=licensee_id,
            license_id=license_id,
            producer=PRODUCER,
            license_samples_withdrawn=pb.LicenseSamplesWithdrawn(
                consent_id=consent_id,
                revocation_id=revocation_id,
                sample_ids=part,
                license_ended=license_ended,
                purpose=purpose,
                chunk_index=index,
                chunk_count=len(parts),
            ),
        )
        rows.append(
            outbox_row(
                topic=topic,
                key=licensee_id,
                event_id=event_id,
                event_type="license_samples_withdrawn",
                message=event,
                created_at=now,
            )
        )
    return rows
