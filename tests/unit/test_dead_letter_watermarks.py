"""How far a dead-letter replay may commit: only over records that were replayed."""

from __future__ import annotations

from rescind_cli.kafka_dead_letters import DeadLetter, TopicLog


def test_watermark_moves_only_over_replayed_records() -> None:
    def record(offset: int) -> DeadLetter:
        return DeadLetter("t.dlq", 0, offset, 0, None, b"", ())

    log = TopicLog("t.dlq", [record(o) for o in range(5)], committed={})
    assert log.watermarks({(0, 2)}) == {0: 0}
    assert log.watermarks({(0, 0), (0, 1), (0, 3)}) == {0: 2}
    # Records before the committed offset count as replayed; the log may start past it (retention).
    later = TopicLog("t.dlq", [record(o) for o in range(3, 6)], committed={0: 2})
    assert later.watermarks({(0, 3), (0, 4), (0, 5)}) == {0: 6}
    assert later.watermarks(set()) == {0: 2}
