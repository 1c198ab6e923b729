"""The worker's batch paths give what the one-at-a-time paths give.

- intake: a poll of ConsentRevoked events applied together makes each revocation ready exactly
  when its last part is in, whatever the order, across polls, with repeats;
- webhook bodies: built for many notices at once, each is the very body `webhook_body` builds
  for that notice alone (the bytes are what receivers verify signatures over).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import func, select

from rescind_common.ids import new_id
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb
from revocation_worker.intake import handler as intake
from revocation_worker.intake.models import Revocation, RevocationPart
from revocation_worker.notices import repository as notices_repo
from revocation_worker.notices import service as notices
from revocation_worker.notices.models import Notice
from revocation_worker.notices.service import RevocationSamples

from support.worker import WorkerHarness, add_revocation, create_notices, holder_notice, revocation_part


def _states(w: WorkerHarness, ids: list[str]) -> dict[str, tuple[str, dt.datetime | None, int]]:
    """(state, next_resolve_at, number of parts) of each revocation."""
    with w.ctx.session_factory() as session:
        parts = dict(
            session.execute(
                select(RevocationPart.revocation_id, func.count())
                .where(RevocationPart.revocation_id.in_(ids))
                .group_by(RevocationPart.revocation_id)
            ).all()
        )
        return {
            r.id: (r.state, r.next_resolve_at, int(parts.get(r.id, 0)))
            for r in session.scalars(select(Revocation).where(Revocation.id.in_(ids)))
        }


def test_revocations_turn_ready_exactly_when_their_last_part_arrives_across_batches(
    worker: Any,
) -> None:
    w: WorkerHarness = worker()
    subject = new_id("sub")
    r1, r2, r3 = new_id("rev"), new_id("rev"), new_id("rev")
    c1a, c1b, c2, c3a, c3b = (new_id("cns") for _ in range(5))
    # r1: two consents, the first in two chunks (3 parts); r2: one consent in two chunks;
    # r3: two consents of one chunk each.
    r1_a0 = revocation_part(subject, r1, c1a, 0, 2, 2)
    r1_a1 = revocation_part(subject, r1, c1a, 1, 2, 2)
    r1_b0 = revocation_part(subject, r1, c1b, 0, 1, 2)
    r2_0 = revocation_part(subject, r2, c2, 0, 2, 1)
    r2_1 = revocation_part(subject, r2, c2, 1, 2, 1)
    r3_a = revocation_part(subject, r3, c3a, 0, 1, 2)
    r3_b = revocation_part(subject, r3, c3b, 0, 1, 2)
    r1_a0_again = pb.ConsentEvent()  # the same part under another event id (a re-published row)
    r1_a0_again.CopyFrom(r1_a0)
    r1_a0_again.event_id = new_id("evt")

    first = [r1_a0, r2_0, r1_b0, r3_a, r2_1, r2_0, r1_a0_again]
    with w.ctx.session_factory() as session, session.begin():
        applied = intake.apply_events(session, first)
    # The repeat of an event id is not applied; the same part under a new id is applied (and ignored).
    assert applied == [True, True, True, True, True, False, True]
    after_first = _states(w, [r1, r2, r3])
    assert {k: (s, n) for k, (s, _, n) in after_first.items()} == {
        r1: ("collecting", 2),
        r2: ("ready", 2),
        r3: ("collecting", 1),
    }
    assert after_first[r1][1] is None and after_first[r3][1] is None
    r2_ready_at = after_first[r2][1]
    assert r2_ready_at is not None

    second = [r3_a, r1_a1, r2_1, r3_b, r3_b]
    with w.ctx.session_factory() as session, session.begin():
        applied = intake.apply_events(session, second)
    assert applied == [False, True, False, True, False]
    after_second = _states(w, [r1, r2, r3])
    assert {k: (s, n) for k, (s, _, n) in after_second.items()} == {
        r1: ("ready", 3),
        r2: ("ready", 2),
        r3: ("ready", 2),
    }
    assert after_second[r2][1] == r2_ready_at  # already ready: not touched again
    assert after_second[r1][1] is not None and after_second[r3][1] is not None

    # The same events one at a time, in the same order, under fresh revocation ids, end the same.
    ids = {r1: new_id("rev"), r2: new_id("rev"), r3: new_id("rev")}
    seen: set[str] = set()
    steps: list[dict[str, str]] = []
    for event in first + second:
        again = pb.ConsentEvent()
        again.CopyFrom(event)
        again.consent_revoked.revocation_id = ids[event.consent_revoked.revocation_id]
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        again.event_id = new_id("evt")
        with w.ctx.session_factory() as session, session.begin():
            assert intake.apply(session, again)
        steps.append({k: s for k, (s, _, _) in _states(w, list(ids.values())).items()})
    # One at a time, each turns ready at its last part: r2 at step 4, r1 at 6, r3 at 7.
    ready_from = {r: next(i for i, step in enumerate(steps) if step.get(ids[r]) == "ready") for r in ids}
    assert ready_from == {r2: 4, r1: 6, r3: 7}
    assert {k: (s, n) for k, (s, _, n) in _states(w, list(ids.values())).items()} == {
        ids[r]: (s, n) for r, (s, _, n) in after_second.items()
    }


def test_batch_bodies_are_the_bodies_built_one_notice_at_a_time(worker: Any) -> None:
    w: WorkerHarness = worker(worker_inline_samples=3)

    def refs_of(n: int) -> dict[str, tuple[str, str]]:
        return {f"smp_{i:02d}_{uuid.uuid4().hex[:6]}": (f"{i:064x}", "face_image") for i in range(n)}

    def lic() -> str:
        return f"lic_{uuid.uuid4().hex[:12]}"

    refs = refs_of(5)
    shared = RevocationSamples(set(refs), refs)
    some = set(sorted(refs)[:2])
    # Another revocation whose licensees each hold only part of it: notices with rows of their own.
    partial_refs = refs_of(8)
    partial = RevocationSamples(set(partial_refs), partial_refs)
    seven, one = set(sorted(partial_refs)[:7]), set(sorted(partial_refs)[7:])

    model = {"model_id": "mdl_b", "name": "faces", "version": "2", "shard_ids": ["s1", "s2"]}
    other = {"model_id": "mdl_a", "name": "voices", "version": "1", "shard_ids": []}
    faces = {"model_id": f"mdl_{uuid.uuid4().hex[:12]}", "name": "faces", "version": "3"}
    with w.ctx.session_factory() as session, session.begin():
        rev = add_revocation(session)
        # two notices covering the revocation's whole set (5 > 3 inline), one with part of it
        create_notices(
            session,
            w.ctx,
            rev,
            [
                holder_notice(lic(), shared, models=[model, other]),
                holder_notice(lic(), shared),
                holder_notice(lic(), shared, some, models=[model]),
            ],
        )
        own_many, own_few = create_notices(
            session,
            w.ctx,
            add_revocation(session),
            [holder_notice(lic(), partial, seven, models=[faces]), holder_notice(lic(), partial, one)],
        )

    with w.ctx.session_factory() as session:
        made = list(session.scalars(select(Notice).where(Notice.revocation_id == rev.id)))
        made += [n for n in (notices_repo.get(session, own_many), notices_repo.get(session, own_few)) if n]
        assert sorted(n.covers_revocation_samples for n in made) == [False, False, False, True, True]
        one_by_one = {n.id: notices.webhook_body(session, w.ctx, n) for n in made}
    with w.ctx.session_factory() as session:
        batch = notices.webhook_bodies(session, w.ctx, made + made[:2])  # repeats are built once

    assert set(batch) == set(one_by_one)
    for nid, body in one_by_one.items():
        assert json.dumps(batch[nid], separators=(",", ":")) == json.dumps(body, separators=(",", ":"))
    # What a receiver sees: the first 3 samples by id, the rest behind samples_url.
    by_count = {b["data"]["sample_count"]: b["data"] for b in batch.values() if b["data"]["models"]}
    whole = by_count[5]
    assert [s["sample_id"] for s in whole["samples"]] == sorted(refs)[:3]
    assert whole["samples_truncated"] is True
    assert [m["model_id"] for m in whole["models"]] == ["mdl_a", "mdl_b"]
    assert [s["sample_id"] for s in by_count[2]["samples"]] == sorted(some)
    assert by_count[2]["samples_truncated"] is False
    assert len(by_count[7]["samples"]) == 3 and by_count[7]["samples_truncated"] is True
