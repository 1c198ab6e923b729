"""Who is told about a revocation: only holders of what it withdrew (pure logic of the resolver,
over the registry's `licenses` view of the holders lookup); resolving in batches against a real
registry; and licensees the registry reports later (licenses recorded while its projection lagged
behind the revocation), told through rechecks."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from registry.config import RegistrySettings
from registry.db import Outbox as RegistryOutbox
from registry.main import create_app as create_registry_app
from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.db import make_engine, make_session_factory, utcnow
from rescind_common.embedded_broker import free_port
from rescind_common.ids import new_id
from rescind_common.proto.rescind.v1 import consent_events_pb2 as pb_consent
from rescind_common.proto.rescind.v1 import license_events_pb2 as pb_license
from revocation_worker.intake import handler as intake
from revocation_worker.intake.holdings import Holdings, HoldingsMerger
from revocation_worker.intake.models import Revocation, RevocationRecheck
from revocation_worker.intake.resolver import (
    Rechecked,
    RegistryClient,
    Withdrawal,
    affected,
    recheck_due,
    resolve_due,
)

from support.helpers import walk
from support.registry import Projection, make_registry_settings, new_registry_db
from support.wait import wait_until
from support.worker import WorkerHarness, outbox_events

TRAINING = frozenset({"model_training"})


def answer(
    requested: Sequence[str],
    licenses: list[tuple[str, str, str, str, list[str]]],
    models: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The registry's licenses view for `requested`; licenses: (license_id, licensee_id,
    consent_id, purpose, sample_ids held)."""
    asked = set(requested)
    out = []
    for lid, licensee, consent, purpose, sids in licenses:
        holds = set(sids)
        held = [s for s in requested if s in holds]
        if not held:
            continue
        every = set(held) == asked
        out.append(
            {
                "license_id": lid,
                "licensee_id": licensee,
                "licensee_name": licensee,
                "status": "active",
                "consent_id": consent,
                "purpose": purpose,
                "dataset": None,
                "sample_count": len(held),
                "all_requested": every,
                "sample_ids": [] if every else held,
            }
        )
    return {
        "licenses": out,
        "samples": [{"sample_id": s, "sha256": "0" * 64, "kind": "face_image"} for s in requested],
        "models": list(models),
        "unknown_sample_ids": [],
    }


def holdings(
    requested: Sequence[str],
    licenses: list[tuple[str, str, str, str, list[str]]],
    models: Sequence[dict[str, Any]] = (),
    batch: int = 10_000,
) -> Holdings:
    merger = HoldingsMerger()
    for i in range(0, len(requested), batch):
        part = requested[i : i + batch]
        merger.add(part, answer(part, licenses, [m for m in models if i == 0]))
    return merger.result()


def told(out: list[Any]) -> dict[str, list[str]]:
    return {h["licensee_id"]: sorted(h["sample_ids"]) for h in out}


def test_a_holder_under_another_consent_is_not_told() -> None:
    h = holdings(
        ["smp_1"],
        [
            ("lcs_1", "lic_a", "cns_1", "model_training", ["smp_1"]),
            ("lcs_2", "lic_b", "cns_2", "model_training", ["smp_1"]),
        ],
    )
    out = affected(h, [Withdrawal("cns_1", frozenset({"smp_1"}), TRAINING, None)])
    assert [x["licensee_id"] for x in out] == ["lic_a"]


def test_a_purpose_still_consented_is_not_told() -> None:
    h = holdings(
        ["smp_1"],
        [
            ("lcs_1", "lic_a", "cns_1", "evaluation", ["smp_1"]),
            ("lcs_2", "lic_b", "cns_1", "model_training", ["smp_1"]),
        ],
    )
    out = affected(h, [Withdrawal("cns_1", frozenset({"smp_1"}), TRAINING, None)])
    assert [x["licensee_id"] for x in out] == ["lic_b"]


def test_only_the_withdrawn_licensee_of_an_open_consent_is_told() -> None:
    h = holdings(
        ["smp_1"],
        [
            ("lcs_1", "lic_a", "cns_1", "model_training", ["smp_1"]),
            ("lcs_2", "lic_b", "cns_1", "model_training", ["smp_1"]),
        ],
    )
    out = affected(h, [Withdrawal("cns_1", frozenset({"smp_1"}), TRAINING, "lic_b")])
    assert [x["licensee_id"] for x in out] == ["lic_b"]


def test_samples_and_models_are_narrowed_to_what_was_withdrawn() -> None:
    model_hit = {
        "model_id": "mdl_1",
        "licensee_id": "lic_a",
        "name": "m",
        "version": "1",
        "shard_ids": ["s1"],
        "license_ids": ["lcs_1"],
    }
    model_other = {
        "model_id": "mdl_2",
        "licensee_id": "lic_a",
        "name": "n",
        "version": "1",
        "shard_ids": [],
        "license_ids": ["lcs_9"],
    }
    h = holdings(
        ["smp_2", "smp_3"],
        [
            ("lcs_1", "lic_a", "cns_1", "model_training", ["smp_1", "smp_2"]),
            ("lcs_9", "lic_a", "cns_9", "model_training", ["smp_3"]),
        ],
        [model_hit, model_other],
    )
    out = affected(h, [Withdrawal("cns_1", frozenset({"smp_2", "smp_3"}), TRAINING, None)])
    assert told(out) == {"lic_a": ["smp_2"]}
    # An answer without links (an older registry): the shards it names, for the licenses hit.
    assert out[0]["models"] == [
        {
            "model_id": "mdl_1",
            "name": "m",
            "version": "1",
            "shard_ids": ["s1"],
            "scope": "shards",
            "license_ids": ["lcs_1"],
        }
    ]
    assert sorted(out[0]["revocation_samples"].ids) == ["smp_2"]


def test_a_fan_out_shares_one_sample_set_and_lists_only_partial_holders() -> None:
    samples = [f"smp_{i:05d}" for i in range(2500)]
    licenses = [(f"lcs_{n}", f"lic_{n:03d}", "cns_1", "model_training", samples) for n in range(100)]
    licenses.append(("lcs_part", "lic_part", "cns_1", "model_training", samples[100:1100]))
    licenses.append(("lcs_other", "lic_other", "cns_2", "model_training", samples))
    licenses.append(("lcs_eval", "lic_000", "cns_1", "evaluation", samples[:10]))  # purpose kept
    # Three lookup batches of 1,000, merged.
    h = holdings(samples, licenses, batch=1000)
    assert h.licenses["lcs_0"].sample_ids is None and len(h.licenses["lcs_part"].sample_ids or ()) == 1000
    assert len(h) == 102

    w = Withdrawal("cns_1", frozenset(samples), TRAINING, None)
    out = affected(h, [w])
    assert [x["licensee_id"] for x in out] == [f"lic_{n:03d}" for n in range(100)] + ["lic_part"]
    full = [x for x in out if x["licensee_id"] != "lic_part"]
    # One set object for the 100 full holders and the revocation: no per-(licensee x sample) copy.
    shared = full[0]["revocation_samples"]
    assert all(x["sample_ids"] is w.samples and x["revocation_samples"] is shared for x in full)
    assert shared.ids is w.samples and len(shared) == 2500
    assert sorted(out[-1]["sample_ids"]) == samples[100:1100]
    assert shared.ref(samples[0]) == ("0" * 64, "face_image")


def test_two_withdrawn_consents_union_and_a_license_under_each() -> None:
    s1, s2 = ["smp_a1", "smp_a2"], ["smp_b1"]
    h = holdings(
        s1 + s2,
        [
            ("lcs_1", "lic_a", "cns_1", "model_training", s1),
            ("lcs_2", "lic_a", "cns_2", "model_training", s2),
            ("lcs_3", "lic_b", "cns_2", "model_training", s2),
        ],
    )
    out = affected(
        h,
        [
            Withdrawal("cns_1", frozenset(s1), TRAINING, None),
            Withdrawal("cns_2", frozenset(s2), TRAINING, None),
        ],
    )
    assert told(out) == {"lic_a": sorted(s1 + s2), "lic_b": s2}
    assert sorted(out[0]["revocation_samples"].ids) == sorted(s1 + s2)
    assert out[0]["license_ids"] == ["lcs_1", "lcs_2"]


def test_nothing_held_tells_nobody() -> None:
    assert affected(Holdings(), [Withdrawal("cns_1", frozenset({"smp_1"}), TRAINING, None)]) == []


# -- resolving in batches, against a real registry over HTTP -----------------------------------


class RegistryServer:
    """The registry app under uvicorn in a thread, on a fixed port: stop() is an outage that
    start() ends (same URL)."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RegistryServer:
        config = uvicorn.Config(
            create_registry_app(self.settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="registry", daemon=True)
        self._thread.start()
        wait_until(lambda: self._server is not None and self._server.started, 20, "the registry to start")
        return self

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(20)
        assert not self._thread.is_alive(), "the registry did not stop"


@dataclass
class Revoked:
    """One revocation fed to the worker, and what each licensee must be told about it."""

    subject_id: str
    consent_id: str
    sample_id: str
    told: dict[str, set[str]]  # licensee id -> model ids
    id: str = ""  # the revocation's id, once fed to the worker


class Market:
    """Licensees, sellers' samples and consents (through the registry's projection handler),
    licenses and models (through the registry API): the registry the worker asks."""

    def __init__(self, settings: RegistrySettings, projection: Projection, api: TestClient) -> None:
        self.projection = projection
        self.api = api
        key = ensure_dev_key(settings.dev_auth_key_file)
        self._mint = lambda role, sub: {
            "Authorization": "Bearer "
            + mint_token(
                key, sub=sub, role=role, issuer=settings.auth_issuer, audience=settings.token_audiences
            )
        }
        self.ops = self._mint("operator", "ops-resolver-test")

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        r = self.api.post(path, json=body, headers=headers)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def licensees(self, n: int) -> list[str]:
        return [self.post("/v1/licensees", {"name": f"Buyer {i}"}, self.ops)["id"] for i in range(n)]

    def seller(self, n_samples: int, holders: list[str]) -> tuple[str, str, list[str], dict[str, str]]:
        """A subject with samples, one consent over them, licensed whole to each of `holders`:
        (subject id, consent id, sample ids, license id per licensee)."""
        subject_id, samples = self.projection.samples(n_samples)
        consent_id = self.projection.grant(subject_id, samples)
        licenses = {
            lic: self.post(
                "/v1/licenses",
                {
                    "licensee_id": lic,
                    "consent_id": consent_id,
                    "purpose": "model_training",
                    "sample_ids": samples,
                },
                self.ops,
            )["id"]
            for lic in holders
        }
        return subject_id, consent_id, samples, licenses

    def model(
        self, licensee_id: str, name: str, license_ids: list[str], shards: dict[str, list[str]] | None = None
    ) -> str:
        body: dict[str, Any] = {"name": name, "version": "1", "license_ids": license_ids}
        if shards:
            body["shards"] = [{"shard_id": s, "license_ids": lids} for s, lids in shards.items()]
        return str(self.post("/v1/models", body, self._mint("licensee", licensee_id))["id"])


@dataclass
class ResolverWorld:
    registry: RegistryServer
    market: Market


@pytest.fixture(scope="module")
def resolver_world(
    worker_db_url: str, pg_database: Any, state_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ResolverWorld]:
    """A registry on the worker's backend, served over HTTP, with its own database."""
    backend = "postgresql" if worker_db_url.startswith("postgresql") else "sqlite"
    url = new_registry_db(backend, pg_database, tmp_path_factory.mktemp("resolver-registry"))
    settings = make_registry_settings(url, state_dir)
    engine = make_engine(url, pool_size=2)
    server = RegistryServer(settings).start()
    with TestClient(create_registry_app(settings)) as api:
        yield ResolverWorld(server, Market(settings, Projection(make_session_factory(engine)), api))
    server.stop()
    engine.dispose()


def scenario(world: ResolverWorld, n: int, licensees: list[str]) -> list[Revoked]:
    """`n` sellers, each with 2 samples under one consent licensed to 2 or 3 of `licensees`; each
    licensee trained an 'even' and an 'odd' model on the licenses of even / odd sellers, and the
    first licensee a sharded model with one shard per seller. Each revocation withdraws the first
    sample of one seller: its holders are told about that sample only, and about the models
    trained on that seller's license (the sharded one naming only that seller's shard)."""
    m = world.market
    sellers = []
    for i in range(n):
        holders = [licensees[(i + k) % len(licensees)] for k in range(2 + i % 2)]
        sellers.append(m.seller(2, holders))
    models: dict[tuple[str, int], str] = {}
    for lic in licensees:
        for parity in (0, 1):
            held = [
                licenses[lic]
                for i, (_, _, _, licenses) in enumerate(sellers)
                if i % 2 == parity and lic in licenses
            ]
            if held:
                models[(lic, parity)] = m.model(lic, f"faces-{parity}", held)
    sharded_lic = licensees[0]
    shards = {f"shard-{i}": [ls[sharded_lic]] for i, (_, _, _, ls) in enumerate(sellers) if sharded_lic in ls}
    sharded = m.model(sharded_lic, "sharded", [], shards)
    out = []
    for i, (subject_id, consent_id, samples, licenses) in enumerate(sellers):
        told = {lic: {models[(lic, i % 2)]} for lic in licenses}
        if sharded_lic in licenses:
            told[sharded_lic].add(sharded)
        out.append(Revoked(subject_id, consent_id, samples[0], told))
    return out


def revoke(w: WorkerHarness, revoked: list[Revoked]) -> list[Revoked]:
    """Feed each withdrawal to the worker as its consent consumer would (the revocation turns ready)."""
    for r in revoked:
        event = Projection.revoke_event(
            r.subject_id, r.consent_id, [r.sample_id], ["model_training"], ended=False
        )
        with w.ctx.session_factory() as session, session.begin():
            assert intake.apply(session, event)
        r.id = event.consent_revoked.revocation_id
    return revoked


def states(w: WorkerHarness, ids: list[str]) -> dict[str, Revocation]:
    with w.ctx.session_factory() as session:
        rows = {r.id: r for r in session.scalars(select(Revocation).where(Revocation.id.in_(ids)))}
        session.expunge_all()
    return rows


def notices_of(w: WorkerHarness, licensees: list[str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every notice each licensee sees, by (revocation id, licensee id)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for lic in licensees:
        for n in walk(w.client, "/v1/notices", w.headers("licensee", lic), 100):
            out.setdefault((n["revocation_id"], lic), []).append(n)
    return out


def assert_told_exactly(
    w: WorkerHarness, revoked: list[Revoked], licensees: list[str], shards: bool = True
) -> None:
    seen = notices_of(w, licensees)
    for r in revoked:
        for lic in licensees:
            got = seen.get((r.id, lic), [])
            if lic not in r.told:
                assert got == [], (r.id, lic)
                continue
            assert len(got) == 1, (r.id, lic, got)
            assert [s["sample_id"] for s in got[0]["samples"]] == [r.sample_id]
            assert {m["model_id"] for m in got[0]["models"]} == r.told[lic]
            (license,) = got[0]["licenses"]  # this seller's license to this licensee, and no other
            assert license["consent_id"] == r.consent_id and license["sample_count"] == 1
            for m in got[0]["models"]:
                assert m["license_ids"] == [license["license_id"]], m
                if m["name"] == "sharded":
                    # The sharded model names exactly the shard of this seller's license.
                    assert m["scope"] == "shards" and len(m["shard_ids"]) == 1, m
                else:
                    assert m["scope"] == "whole" and m["shard_ids"] == [], m
        resolved = [
            e for _, e in outbox_events(w.ctx, r.id) if e.WhichOneof("payload") == "revocation_resolved"
        ]
        assert len(resolved) == 1, (r.id, resolved)
        assert list(resolved[0].revocation_resolved.licensee_ids) == sorted(r.told)
    made = {n["id"] for (rid, _), ns in seen.items() for n in ns if rid in {r.id for r in revoked}}
    created = [
        e.notice_id
        for lic in licensees
        for _, e in outbox_events(w.ctx, lic)
        if e.WhichOneof("payload") == "notice_created" and e.notice_id in made
    ]
    assert sorted(created) == sorted(made), "one NoticeCreated per notice"


def settle(w: WorkerHarness, ids: list[str]) -> None:
    """Leave nothing of this test due for the next one (they share the worker database)."""
    with w.ctx.session_factory() as session, session.begin():
        session.execute(
            update(Revocation)
            .where(Revocation.id.in_(ids), Revocation.state == "ready")
            .values(state="abandoned")
        )


def test_many_revocations_resolved_in_one_pass_tell_exactly_their_holders(
    worker: Any, resolver_world: ResolverWorld
) -> None:
    w = worker(worker_registry_url=resolver_world.registry.url)
    licensees = resolver_world.market.licensees(5)
    # An endpoint for one licensee: its notices get a delivery each.
    w.register(w.headers("licensee", licensees[1]), "http://127.0.0.1:9/hook")
    revoked = revoke(w, scenario(resolver_world, 24, licensees))
    registry = RegistryClient(w.ctx)
    calls: list[int] = []
    real = registry.holders
    registry.holders = lambda ids: calls.append(len(ids)) or real(ids)  # type: ignore[method-assign]
    try:
        assert resolve_due(w.ctx, registry) == 24
    finally:
        registry.close()
    # One lookup for the batch: the registry's links say which shard is whose, so the shared
    # answer names each revocation's own shard without asking again.
    assert calls == [24], calls
    assert {s.state for s in states(w, [r.id for r in revoked]).values()} == {"resolved"}
    assert_told_exactly(w, revoked, licensees)
    ops = walk(w.client, "/v1/operator/notices", w.operator, 100, licensee_id=licensees[1])
    assert ops and all(n["licensee_id"] == licensees[1] for n in ops)
    for n in ops:
        assert len(w.notice(w.headers("licensee", licensees[1]), n["id"])["deliveries"]) == 1


def test_registry_outage_loses_nothing(worker: Any, resolver_world: ResolverWorld) -> None:
    w = worker(worker_registry_url=resolver_world.registry.url)
    licensees = resolver_world.market.licensees(4)
    revoked = scenario(resolver_world, 12, licensees)
    resolver_world.registry.stop()
    try:
        revoke(w, revoked)
        registry = RegistryClient(w.ctx)
        assert resolve_due(w.ctx, registry) == 0
        down = states(w, [r.id for r in revoked])
        assert all(s.state == "ready" and s.resolve_attempts == 1 and s.last_error for s in down.values())
        assert notices_of(w, licensees) == {}
    finally:
        resolver_world.registry.start()
    done = 0

    def resolved() -> bool:
        nonlocal done
        done += resolve_due(w.ctx, registry)
        return done == len(revoked)

    wait_until(resolved, 20, "every revocation resolved once the registry is back")
    registry.close()
    assert_told_exactly(w, revoked, licensees)


def test_a_malformed_revocation_does_not_hold_back_the_batch(
    worker: Any, resolver_world: ResolverWorld
) -> None:
    w = worker(worker_registry_url=resolver_world.registry.url)
    licensees = resolver_world.market.licensees(3)
    revoked = revoke(w, scenario(resolver_world, 9, licensees))
    # A withdrawal naming a sample id the registry refuses outright (422 for the whole lookup).
    bad = Projection.revoke_event("sub_bad", "cns_bad", ["not-a-sample-id"], ["model_training"], ended=True)
    with w.ctx.session_factory() as session, session.begin():
        intake.apply(session, bad)
    bad_id = bad.consent_revoked.revocation_id
    registry = RegistryClient(w.ctx)
    try:
        assert resolve_due(w.ctx, registry) == 9
    finally:
        registry.close()
    assert_told_exactly(w, revoked, licensees)
    left = states(w, [bad_id])[bad_id]
    assert left.state == "ready" and left.resolve_attempts == 1 and "422" in (left.last_error or "")
    settle(w, [bad_id])


# Several resolvers run on PostgreSQL only (SQLite is the one-process embedded default).
@pytest.mark.parametrize("worker_db_url", ["postgresql"], indirect=True)
def test_racing_resolvers_never_tell_twice(
    worker: Any, resolver_world: ResolverWorld, worker_db_url: str
) -> None:
    w = worker(worker_registry_url=resolver_world.registry.url, worker_db_pool_size=8)
    licensees = resolver_world.market.licensees(4)
    revoked = scenario(resolver_world, 30, licensees)
    # Withdrawals of samples nobody holds: resolving one twice would show as a second
    # RevocationResolved (there is no notice whose uniqueness would catch it).
    for _ in range(10):
        subject_id, samples = resolver_world.market.projection.samples(1)
        consent_id = resolver_world.market.projection.grant(subject_id, samples)
        revoked.append(Revoked(subject_id, consent_id, samples[0], {}))
    revoke(w, revoked)
    start = threading.Barrier(2)
    totals: list[int] = []
    errors: list[BaseException] = []

    def resolver() -> None:
        registry = RegistryClient(w.ctx)
        total = 0
        try:
            start.wait(10)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                # No lease: both resolvers claim the same revocations and race to make notices.
                total += resolve_due(w.ctx, registry, limit=len(revoked), lease=dt.timedelta(0))
                if all(s.state == "resolved" for s in states(w, [r.id for r in revoked]).values()):
                    break
        except BaseException as exc:
            errors.append(exc)
        finally:
            registry.close()
            totals.append(total)

    threads = [threading.Thread(target=resolver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(totals) == len(revoked), totals  # what REVOCATIONS_RESOLVED counts
    assert_told_exactly(w, revoked, licensees)


# -- a license recorded while the registry's projection lagged: rechecks ---------------------------


@dataclass
class LagWindow:
    """One consent licensed to `told`, revoked (the worker resolved it, telling `told`), then
    licensed to `late` as the registry accepts it while its projection has not applied the
    revocation yet; `late` declared a model on that license."""

    revocation: pb_consent.ConsentEvent
    samples: list[str]
    told: str
    late: str
    late_license: str
    late_model: str

    @property
    def id(self) -> str:
        return str(self.revocation.consent_revoked.revocation_id)


def lag_window(w: WorkerHarness, world: ResolverWorld, *, resolve_first: bool = True) -> LagWindow:
    m = world.market
    told, late = m.licensees(2)
    subject_id, consent_id, samples, _ = m.seller(3, [told])
    event = Projection.revoke_event(subject_id, consent_id, samples, ["model_training"], ended=True)
    if resolve_first:
        with w.ctx.session_factory() as session, session.begin():
            assert intake.apply(session, event)
        registry = RegistryClient(w.ctx)
        try:
            assert resolve_due(w.ctx, registry) == 1
        finally:
            registry.close()
    late_license = m.post(
        "/v1/licenses",
        {"licensee_id": late, "consent_id": consent_id, "purpose": "model_training", "sample_ids": samples},
        m.ops,
    )["id"]
    late_model = m.model(late, "late-faces", [late_license])
    return LagWindow(event, samples, told, late, late_license, late_model)


def projection_catches_up(world: ResolverWorld, lag: LagWindow) -> list[pb_license.LicenseEvent]:
    """The registry's projection applies the revocation: the license events it wrote to its outbox
    for the two licensees (what `registry relay` publishes), oldest first."""
    assert world.market.projection.apply(lag.revocation)
    with world.market.projection.sessions() as session:
        rows = session.scalars(
            select(RegistryOutbox)
            .where(RegistryOutbox.key.in_([lag.told, lag.late]))
            .order_by(RegistryOutbox.id)
        ).all()
        return [pb_license.LicenseEvent.FromString(r.payload) for r in rows]


def consume(w: WorkerHarness, events: Sequence[Any]) -> list[bool]:
    """Events applied by the worker's intake as its consumer applies a poll."""
    with w.ctx.session_factory() as session, session.begin():
        return intake.apply_events(session, list(events))


def recheck(w: WorkerHarness, **kwargs: Any) -> Rechecked:
    registry = RegistryClient(w.ctx)
    try:
        return recheck_due(w.ctx, registry, **kwargs)
    finally:
        registry.close()


def waiting_rechecks(w: WorkerHarness, revocation_id: str) -> list[RevocationRecheck]:
    with w.ctx.session_factory() as session:
        rows = list(
            session.scalars(select(RevocationRecheck).where(RevocationRecheck.revocation_id == revocation_id))
        )
        session.expunge_all()
    return rows


def test_a_license_recorded_in_the_lag_window_gets_one_notice_with_its_samples_and_models_delivered(
    worker: Any, receiver: Any, resolver_world: ResolverWorld
) -> None:
    w = worker(worker_registry_url=resolver_world.registry.url)
    lag = lag_window(w, resolver_world)
    rx = receiver()
    _, secret = w.register(w.headers("licensee", lag.late), rx.url)
    # The resolution told the first licensee only: the late license was not there yet.
    assert set(notices_of(w, [lag.told, lag.late])) == {(lag.id, lag.told)}

    events = projection_catches_up(resolver_world, lag)
    assert {e.licensee_id for e in events} == {lag.told, lag.late}
    assert all(e.license_samples_withdrawn.revocation_id == lag.id for e in events)
    assert consume(w, events) == [True, True]
    assert recheck(w) == Rechecked(claimed=2, notices=1)

    seen = notices_of(w, [lag.told, lag.late])
    assert {k: len(v) for k, v in seen.items()} == {(lag.id, lag.told): 1, (lag.id, lag.late): 1}
    late = seen[(lag.id, lag.late)][0]
    assert sorted(s["sample_id"] for s in late["samples"]) == sorted(lag.samples)
    assert [m["model_id"] for m in late["models"]] == [lag.late_model]
    assert late["deadline"] == seen[(lag.id, lag.told)][0]["deadline"]  # same revocation, same deadline
    created = [e for _, e in outbox_events(w.ctx, lag.late) if e.WhichOneof("payload") == "notice_created"]
    assert [e.notice_id for e in created] == [late["id"]] and created[0].revocation_id == lag.id
    assert created[0].notice_created.sample_count == 3 and created[0].notice_created.model_count == 1
    # Still one resolution of the revocation (consent-api keeps its first one).
    resolved = [
        e for _, e in outbox_events(w.ctx, lag.id) if e.WhichOneof("payload") == "revocation_resolved"
    ]
    assert len(resolved) == 1 and list(resolved[0].revocation_resolved.licensee_ids) == [lag.told]
    assert waiting_rechecks(w, lag.id) == []

    # The late licensee's endpoint gets the webhook, verifiable with its secret.
    w.deliver()
    body = rx.wait_for(1)[0].verify(secret)
    assert body["data"]["notice_id"] == late["id"] and body["data"]["revocation_id"] == lag.id
    assert {s["sample_id"] for s in body["data"]["samples"]} == set(lag.samples)

    # The same events again (a redelivery), or another event for the same pair (a second chunk):
    # never a second notice.
    assert consume(w, events) == [False, False]
    again = pb_license.LicenseEvent()
    again.CopyFrom(events[-1])
    again.event_id = new_id("evt")
    assert consume(w, [again]) == [True]
    assert recheck(w) == Rechecked(claimed=1, notices=0)
    assert {k: len(v) for k, v in notices_of(w, [lag.told, lag.late]).items()} == {
        (lag.id, lag.told): 1,
        (lag.id, lag.late): 1,
    }
    assert waiting_rechecks(w, lag.id) == []


def test_a_recheck_before_its_revocation_is_resolved_waits_and_the_resolution_tells_once(
    worker: Any, resolver_world: ResolverWorld
) -> None:
    w = worker(worker_registry_url=resolver_world.registry.url)
    # The license events overtake the revocation's own consent events (another topic).
    lag = lag_window(w, resolver_world, resolve_first=False)
    assert consume(w, projection_catches_up(resolver_world, lag)) == [True, True]
    assert recheck(w) == Rechecked(claimed=0, notices=0)
    assert len(waiting_rechecks(w, lag.id)) == 2

    assert consume(w, [lag.revocation]) == [True]
    registry = RegistryClient(w.ctx)
    try:
        assert resolve_due(w.ctx, registry) == 1  # its lookup finds both licenses
    finally:
        registry.close()
    assert recheck(w) == Rechecked(claimed=2, notices=0)
    seen = notices_of(w, [lag.told, lag.late])
    assert {k: len(v) for k, v in seen.items()} == {(lag.id, lag.told): 1, (lag.id, lag.late): 1}
    assert waiting_rechecks(w, lag.id) == []


def test_a_recheck_survives_registry_errors_and_tells_once_the_registry_answers(
    worker: Any, resolver_world: ResolverWorld
) -> None:
    w = worker(worker_registry_url=resolver_world.registry.url)
    lag = lag_window(w, resolver_world)
    consume(w, projection_catches_up(resolver_world, lag))
    # A registry nobody answers: the told licensee's recheck is dropped, the late one's is kept.
    down = RegistryClient(w.ctx)
    down._client.close()
    down._client = httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        assert recheck_due(w.ctx, down) == Rechecked(claimed=2, notices=0)
    finally:
        down.close()
    (left,) = waiting_rechecks(w, lag.id)
    assert (left.licensee_id, left.attempts) == (lag.late, 1) and "ConnectError" in (left.last_error or "")
    assert (lag.id, lag.late) not in notices_of(w, [lag.late])

    # Its backoff over, the registry answering again: told once.
    with w.ctx.session_factory() as session, session.begin():
        session.execute(update(RevocationRecheck).values(next_check_at=utcnow()))
    assert recheck(w) == Rechecked(claimed=1, notices=1)
    assert len(notices_of(w, [lag.late])[(lag.id, lag.late)]) == 1
    assert waiting_rechecks(w, lag.id) == []


# Several resolvers run on PostgreSQL only (SQLite is the one-process embedded default).
@pytest.mark.parametrize("worker_db_url", ["postgresql"], indirect=True)
def test_racing_rechecks_never_tell_twice(
    worker: Any, resolver_world: ResolverWorld, worker_db_url: str
) -> None:
    w = worker(worker_registry_url=resolver_world.registry.url, worker_db_pool_size=8)
    lag = lag_window(w, resolver_world)
    consume(w, projection_catches_up(resolver_world, lag))
    start = threading.Barrier(2)
    results: list[Rechecked] = []
    errors: list[BaseException] = []

    def rechecker() -> None:
        registry = RegistryClient(w.ctx)
        try:
            start.wait(10)
            # No lease: both may claim the same rechecks and race to make the notice.
            results.append(recheck_due(w.ctx, registry, lease=dt.timedelta(0)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            registry.close()

    threads = [threading.Thread(target=rechecker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(r.notices for r in results) == 1, results
    seen = notices_of(w, [lag.told, lag.late])
    assert {k: len(v) for k, v in seen.items()} == {(lag.id, lag.told): 1, (lag.id, lag.late): 1}
    assert waiting_rechecks(w, lag.id) == []


def test_the_intake_reads_each_topic_with_its_own_schema_and_refuses_license_events_it_cannot_apply(
    worker: Any,
) -> None:
    from rescind_common.consumer import PoisonMessage

    w = worker()
    handler = intake.IntakeHandler(w.ctx.session_factory, license_topic="t.license")
    event = pb_license.LicenseEvent(
        event_id=new_id("evt"),
        licensee_id=new_id("lic"),
        license_id=new_id("lcs"),
        license_samples_withdrawn=pb_license.LicenseSamplesWithdrawn(revocation_id=new_id("rev")),
    )
    assert handler.decode_record("t.license", event.SerializeToString()) == event
    consent = Projection.revoke_event(new_id("sub"), new_id("cns"), [new_id("smp")], ["x"], ended=True)
    assert handler.decode_record("t.consent", consent.SerializeToString()) == consent
    for bad in (
        pb_license.LicenseEvent(event_id=new_id("evt"), licensee_id="lic_x", license_samples_withdrawn={}),
        pb_license.LicenseEvent(event_id=new_id("evt"), license_samples_withdrawn={"revocation_id": "rev_x"}),
        pb_license.LicenseEvent(
            event_id=new_id("evt"), licensee_id="l" * 65, license_samples_withdrawn={"revocation_id": "rev_x"}
        ),
    ):
        with pytest.raises(PoisonMessage):
            handler.decode_record("t.license", bad.SerializeToString())


# -- exact notices: per license hit, and per model whole or by shard, end to end ---------------------


@dataclass
class ExactWorld:
    """One seller's consent (training and evaluation) licensed to two buyers, and the models of
    the first buyer linked every way a model can be linked to a license."""

    subject_id: str
    consent_id: str
    samples: list[str]
    a: str
    b: str
    licenses: dict[str, str]  # name -> license id
    models: dict[str, str]  # name -> model id


def exact_world(world: ResolverWorld) -> ExactWorld:
    m = world.market
    a, b = m.licensees(2)
    subject_id, samples = m.projection.samples(4)
    consent_id = m.projection.grant(subject_id, samples, purposes=("model_training", "evaluation"))
    # A second consent over the same samples, which the withdrawal leaves alone.
    other_consent = m.projection.grant(subject_id, samples)

    def license(
        licensee: str, consent: str, purpose: str, sids: list[str], dataset: str | None = None
    ) -> str:
        body: dict[str, Any] = {
            "licensee_id": licensee,
            "consent_id": consent,
            "purpose": purpose,
            "sample_ids": sids,
        }
        if dataset:
            body["dataset"] = {"name": dataset, "version": "1"}
        return str(m.post("/v1/licenses", body, m.ops)["id"])

    lics = {
        "l1": license(a, consent_id, "model_training", samples[:2]),
        "l2": license(a, consent_id, "model_training", samples[2:3], dataset="voices"),
        "l_eval": license(a, consent_id, "evaluation", samples),  # hit only when evaluation is withdrawn
        "l_other": license(a, other_consent, "model_training", samples),  # never hit
        "l_b": license(b, consent_id, "model_training", samples[3:]),
    }
    models = {
        "whole": m.model(a, "whole", [lics["l1"]]),
        "shard": m.model(a, "shard", [], {"sh1": [lics["l2"]]}),
        "whole_and_shard": m.model(a, "whole-and-shard", [lics["l1"]], {"sh2": [lics["l2"]]}),
        "eval_whole_and_shard": m.model(a, "eval-whole-and-shard", [lics["l_eval"]], {"sh3": [lics["l2"]]}),
        "eval_only": m.model(a, "eval-only", [lics["l_eval"]]),
        "two_shards": m.model(a, "two-shards", [], {"sh4": [lics["l1"]], "sh5": [lics["l2"]]}),
        "other_consent": m.model(a, "other-consent", [lics["l_other"]], {"sh6": [lics["l_other"]]}),
        "b_shard": m.model(b, "b-shard", [], {"shb": [lics["l_b"]]}),
    }
    return ExactWorld(subject_id, consent_id, samples, a, b, lics, models)


@pytest.mark.parametrize("scope", ["purpose", "all", "erasure", "licensee"])
def test_exact_notices_name_each_license_hit_and_each_model_whole_or_by_shard(
    worker: Any, receiver: Any, resolver_world: ResolverWorld, scope: str
) -> None:
    """A purpose-only withdrawal (model_training), a withdrawal of everything, an erasure and a
    withdrawal of one licensee, from the consent event through the worker's intake, the registry's
    holders lookup and the notices, to the signed webhook body, the notice API and the
    NoticeCreated event."""
    w = worker(worker_registry_url=resolver_world.registry.url)
    x = exact_world(resolver_world)
    rcv = {lic: receiver() for lic in (x.a, x.b)}
    secrets = {lic: w.register(w.headers("licensee", lic), rcv[lic].url)[1] for lic in (x.a, x.b)}
    if scope == "purpose":
        event = Projection.revoke_event(
            x.subject_id,
            x.consent_id,
            x.samples,
            ["model_training"],
            ended=False,
            trigger=pb_consent.REVOCATION_TRIGGER_PURPOSE_WITHDRAWAL,
        )
        trigger, purposes = "purpose_withdrawal", ["model_training"]
    elif scope == "licensee":
        event = Projection.revoke_event(
            x.subject_id,
            x.consent_id,
            x.samples,
            ["model_training", "evaluation"],
            ended=False,
            trigger=pb_consent.REVOCATION_TRIGGER_LICENSEE_WITHDRAWAL,
            only_licensee_id=x.b,
        )
        trigger, purposes = "licensee_withdrawal", ["evaluation", "model_training"]
    else:
        pb_trigger = {
            "all": pb_consent.REVOCATION_TRIGGER_SUBJECT,
            "erasure": pb_consent.REVOCATION_TRIGGER_ERASURE,
        }[scope]
        event = Projection.revoke_event(
            x.subject_id,
            x.consent_id,
            x.samples,
            ["model_training", "evaluation"],
            ended=True,
            trigger=pb_trigger,
        )
        trigger, purposes = ("withdrawal" if scope == "all" else "erasure"), ["evaluation", "model_training"]
    with w.ctx.session_factory() as session, session.begin():
        assert intake.apply(session, event)
    registry = RegistryClient(w.ctx)
    try:
        assert resolve_due(w.ctx, registry) == 1
    finally:
        registry.close()
    w.deliver()
    L, M = x.licenses, x.models

    def lic(name: str, count: int) -> dict[str, Any]:
        return {
            "license_id": L[name],
            "consent_id": x.consent_id,
            "purposes": purposes,
            "trigger": trigger,
            "sample_count": count,
        }

    def model(
        name: str, scope_: str, shards: list[str], licenses: list[str]
    ) -> tuple[str, str, list[str], list[str]]:
        return (M[name], scope_, shards, sorted(L[n] for n in licenses))

    if scope == "purpose":
        # l_eval holds the same samples for a purpose still consented: it adds nothing, neither a
        # license, nor a model (eval_only), nor the whole of a model it went into (only sh3).
        a_licenses = [lic("l1", 2), lic("l2", 1)]
        a_models = [
            model("whole", "whole", [], ["l1"]),
            model("shard", "shards", ["sh1"], ["l2"]),
            model("whole_and_shard", "whole", [], ["l1", "l2"]),
            model("eval_whole_and_shard", "shards", ["sh3"], ["l2"]),
            model("two_shards", "shards", ["sh4", "sh5"], ["l1", "l2"]),
        ]
    else:
        a_licenses = [lic("l1", 2), lic("l2", 1), lic("l_eval", 4)]
        a_models = [
            model("whole", "whole", [], ["l1"]),
            model("shard", "shards", ["sh1"], ["l2"]),
            model("whole_and_shard", "whole", [], ["l1", "l2"]),
            model("eval_whole_and_shard", "whole", [], ["l2", "l_eval"]),
            model("eval_only", "whole", [], ["l_eval"]),
            model("two_shards", "shards", ["sh4", "sh5"], ["l1", "l2"]),
        ]
    expected = {
        x.a: (
            "Buyer 0",
            sorted(a_licenses, key=lambda d: d["license_id"]),
            sorted(a_models),
            3 if scope == "purpose" else 4,
        ),
        x.b: ("Buyer 1", [lic("l_b", 1)], [model("b_shard", "shards", ["shb"], ["l_b"])], 1),
    }
    if scope == "licensee":
        # Only b was withdrawn: a, holding the same samples under the same consent, is not told.
        assert w.client.get("/v1/notices", headers=w.headers("licensee", x.a)).json()["items"] == []
        del expected[x.a]
    for licensee, (name, licenses, models, sample_count) in expected.items():
        (got,) = rcv[licensee].wait_for(1)
        data = got.verify(secrets[licensee])["data"]
        assert (data["licensee_name"], data["trigger"], data["sample_count"]) == (name, trigger, sample_count)
        assert data["licenses"] == licenses
        as_told = sorted(
            (m["model_id"], m["scope"], m["shard_ids"], m["license_ids"]) for m in data["models"]
        )
        assert as_told == models
        # The notice API says the same.
        notice = w.notice(w.headers("licensee", licensee), data["notice_id"])
        assert (notice["licensee_name"], notice["trigger"], notice["licenses"]) == (name, trigger, licenses)
        assert (
            sorted((m["model_id"], m["scope"], m["shard_ids"], m["license_ids"]) for m in notice["models"])
            == models
        )
        # And so does NoticeCreated (no sample ids, no PII: ids, names of organisations, counts).
        (created,) = [
            e.notice_created
            for _, e in outbox_events(w.ctx, licensee)
            if e.WhichOneof("payload") == "notice_created"
        ]
        assert created.licensee_name == name and created.webhook_id == f"msg_{data['notice_id']}"
        assert created.webhook_id == got.headers["webhook-id"]
        assert [
            (n.license_id, n.consent_id, list(n.purposes), n.trigger, n.sample_count)
            for n in created.licenses
        ] == [
            (d["license_id"], d["consent_id"], d["purposes"], d["trigger"], d["sample_count"])
            for d in licenses
        ]
        assert (
            sorted(
                (n.model_id, "whole" if n.whole else "shards", list(n.shard_ids), list(n.license_ids))
                for n in created.models
            )
            == models
        )
