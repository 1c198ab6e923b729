"""Which trigger a revocation's ConsentRevoked events carry (`consent_api.events.event_trigger`):
holders must tell a purpose-only or licensee-only withdrawal from a withdrawal of everything."""

from __future__ import annotations

import pytest

from consent_api.events import event_trigger
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb


@pytest.mark.parametrize(
    ("trigger", "scope", "expected"),
    [
        ("subject", "purpose", pb.REVOCATION_TRIGGER_PURPOSE_WITHDRAWAL),
        ("subject", "licensee", pb.REVOCATION_TRIGGER_LICENSEE_WITHDRAWAL),
        ("subject", "all", pb.REVOCATION_TRIGGER_SUBJECT),
        ("subject", "consent", pb.REVOCATION_TRIGGER_SUBJECT),
        ("subject", "samples", pb.REVOCATION_TRIGGER_SUBJECT),
        ("expiry", "consent", pb.REVOCATION_TRIGGER_EXPIRY),
        ("erasure", "all", pb.REVOCATION_TRIGGER_ERASURE),
    ],
)
def test_event_trigger(trigger: str, scope: str, expected: int) -> None:
    assert event_trigger(trigger, scope) == expected
