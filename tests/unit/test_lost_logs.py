"""When a relay judges the broker lost its log (`lost_logs`), from what it recorded and what it reads."""

from __future__ import annotations

from rescind_common.outbox import KnownLog, SeenLog, lost_logs


def test_a_topic_never_recorded_is_adopted_as_it_is() -> None:
    assert lost_logs({}, {"t": SeenLog("id-1", {0: 0})}) == {}


def test_a_missing_topic_is_lost_whatever_was_recorded() -> None:
    assert set(lost_logs({}, {"t": SeenLog(None)})) == {"t"}
    assert set(lost_logs({"t": KnownLog("id-1", {0: 5})}, {"t": SeenLog(None)})) == {"t"}


def test_another_topic_id_means_the_log_was_lost() -> None:
    lost = lost_logs({"t": KnownLog("id-1")}, {"t": SeenLog("id-2")})
    assert "id-1" in lost["t"] and "id-2" in lost["t"]


def test_an_end_below_what_was_published_means_the_log_was_lost() -> None:
    known = {"t": KnownLog("id-1", {0: 10, 1: 3})}
    assert lost_logs(known, {"t": SeenLog("id-1", {0: 10, 1: 7})}) == {}
    assert "partition 0" in lost_logs(known, {"t": SeenLog("id-1", {0: 9, 1: 7})})["t"]
    # A partition recorded and now gone (fewer partitions) ends at nothing.
    assert "partition 1" in lost_logs(known, {"t": SeenLog("id-1", {0: 11})})["t"]


def test_a_broker_without_topic_ids_is_judged_by_offsets_alone() -> None:
    known = {"t": KnownLog("", {0: 4})}
    assert lost_logs(known, {"t": SeenLog("", {0: 4})}) == {}
    assert set(lost_logs(known, {"t": SeenLog("", {0: 0})})) == {"t"}
