"""Chaos (issue 11): a burst of revocations, one process SIGKILLed mid-delivery, then what `make run`
does — the rest of the stack stopped (SIGTERM), and everything started again from the same
databases with a new, empty broker (Tansu is memory-only). Real processes, a real broker, SQLite and
PostgreSQL; the worker as one process (`make run`) or as its `intake` and `delivery` roles.

The kill point is deterministic: a third of the revocations have reached the buyer, whose receiver
then holds the next webhooks while the seller revokes the other two thirds; the kill follows the
last revocation at once, so their events are everywhere on the way (outbox, broker, consumers,
deliveries in flight).

What must hold afterwards, as the buyer and the seller see it:
- the buyer's receiver verified a webhook for every revocation;
- one notice per revocation, and each notice keeps one `webhook-id` across its deliveries (no two
  notices share one);
- the seller reads every revocation with the buyer `delivered`;
- the registry (asked by an operator) shows every license on a revoked consent `revoked`.

One stack per database for the whole module; each test has its own seller, buyer and receiver.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from rescind_cli.demo import Receiver

from support.stack import Stack, running, sqlite_urls
from support.wait import WaitTimeout, wait_until
from test_e2e import World, ok

BURST = 60  # revocations per test: enough for events to be in flight at the kill
# Seconds: the bound for "eventually" after the restart, never a speed claim. Deliveries a killed
# worker had leased wait out their lease (120 s at least) before they go again.
CONVERGE = 300.0
THREADS = 6  # concurrent seller/operator requests while setting up and revoking

# The process SIGKILLed mid-delivery; the worker split into its roles for the last two.
KILLED = [
    "consent-api",
    "consent-relay",
    "consent-consumer",
    "registry",
    "registry-relay",
    "registry-consumer",
    "worker",
    "worker-intake",
    "worker-delivery",
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"chaos-{request.param}")
    if request.param == "postgresql":
        pg_database = request.getfixturevalue("pg_database")
        db_urls = {name: pg_database(f"chaos_{name}") for name in ("consent", "registry", "worker")}
    else:
        db_urls = sqlite_urls(tmp / "db")
    with running(tmp, db_urls) as s:
        yield s


class HeldReceiver(Receiver):
    """A buyer's receiver (signature-verifying, `rescind_cli.demo.Receiver`) that can hold webhooks
    unanswered for a moment (`open` cleared), like a buyer slow to answer: what it has seen stays
    put while the rest of the burst is revoked, so that the kill lands at a third delivered."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.open = threading.Event()
        self.open.set()
        base: Any = self.server.RequestHandlerClass
        gate = self.open

        class Held(base):
            def do_POST(self) -> None:
                gate.wait(timeout=30)  # the worker's POST times out after 10 s: it retries then
                super().do_POST()

        self.server.RequestHandlerClass = Held


def fan_out(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(fn, items))


def license_when_known(w: World, buyer: str, consent_id: str, sample_id: str) -> str:
    """Record the license once the registry's projection knows the consent (409 until then)."""
    deadline = time.monotonic() + 60
    while True:
        r = w.post_license(buyer, consent_id, [sample_id])
        if r.status_code in (200, 201) or r.status_code != 409 or time.monotonic() > deadline:
            return str(ok(r)["id"])
        time.sleep(0.2)


def delivered(rx: Receiver) -> set[str]:
    return {v["payload"]["data"]["revocation_id"] for v in list(rx.verified)}


def eventually(check: Callable[[], bool], timeout: float = CONVERGE, interval: float = 0.5) -> bool:
    """Whether `check` turns true in time (the caller fails with its own diagnostics if not)."""
    try:
        wait_until(check, timeout=timeout, what="convergence", interval=interval)
    except WaitTimeout:
        return False
    return True


def grouped(pairs: list[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key, value in pairs:
        out.setdefault(key, set()).add(value)
    return out


def listening(rx: Receiver) -> bool:
    try:
        socket.create_connection(("127.0.0.1", rx.server.server_address[1]), timeout=2).close()
        return True
    except OSError:
        return False


def notice_statuses(w: World, buyer_auth: dict[str, str], revocations: set[str]) -> dict[str, str]:
    """What the buyer reads from the worker's API about these revocations' notices."""
    page = ok(w.http.get(f"{w.stack.url('worker')}/v1/notices", headers=buyer_auth, params={"limit": 100}))
    got = {n["revocation_id"]: n["status"] for n in page["items"] if n["revocation_id"] in revocations}
    return {rid: got.get(rid, "no notice") for rid in sorted(revocations)}


def since_last_start(stack: Stack, name: str) -> list[str]:
    if name not in stack.procs:
        return []
    log = stack.procs[name].log
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    starts = [i for i, line in enumerate(lines) if line.startswith("===== ")]
    return lines[starts[-1] :] if starts else lines


def diagnostics(stack: Stack, killed: str, at_kill: int, **facts: Any) -> str:
    replays = [
        f"{name}: {line.strip()}"
        for name in stack.names
        for line in since_last_start(stack, name)
        if "re-publishing" in line or "recreated behind" in line
    ]
    lines = [
        f"killed {killed} once {at_kill}/{BURST} revocations had reached the buyer; "
        f"restarted on an empty broker; not running now: {stack.dead()}",
        *(f"{k}: {v}" for k, v in facts.items()),
        "relay replays after the restart: " + ("; ".join(replays) or "none"),
        stack.logs(lines=30),
    ]
    return "\n".join(lines)


def sample(items: set[str], n: int = 10) -> str:
    return f"{len(items)} {sorted(items)[:n]}{' ...' if len(items) > n else ''}"


@pytest.mark.timeout(CONVERGE + 300)  # our own deadline fails first, with the diagnostics
@pytest.mark.parametrize("killed", KILLED)
def test_sigkill_mid_delivery_then_restart_on_an_empty_broker_loses_no_revocation(
    stack: Stack, killed: str
) -> None:
    started = time.monotonic()

    def phase(what: str) -> None:  # for the reader of a failure; never asserted
        print(f"[chaos {killed}] +{time.monotonic() - started:.1f}s {what}", flush=True)

    stack.use_worker("split" if killed in ("worker-intake", "worker-delivery") else "all")
    stack.start_dead()  # a process an earlier test left dead
    w = World(stack)
    buyer, buyer_auth = w.licensee(f"Chaos Buyer ({killed})")
    # The receiver stays up to the end: a webhook the buyer got but the killed worker never recorded
    # is delivered again (same webhook-id), and only then does the seller read it delivered.
    with HeldReceiver(f"chaos-{killed}") as rx:
        w.endpoint(buyer_auth, rx)
        phase("stack up, buyer and endpoint ready")
        sample_ids = [s["id"] for s in w.samples(BURST)]
        consents = fan_out(lambda sid: w.grant([sid])["id"], sample_ids)
        licenses = fan_out(
            lambda pair: license_when_known(w, buyer, *pair), list(zip(consents, sample_ids, strict=True))
        )
        phase(f"{BURST} consents granted and licensed")

        def revoke(cid: str) -> str:
            url = f"{stack.url('consent')}/v1/consents/{cid}/revoke"
            return str(ok(w.http.post(url, headers=w.seller))["id"])

        # The seller revokes all of them. A third reach the buyer; the buyer is slow to answer the
        # next webhooks while the other two thirds are revoked; then the kill, mid-delivery: the
        # last revocations' events are in the outbox, on the broker, in the consumers, in flight.
        third = BURST // 3
        revocations: list[str] = fan_out(revoke, consents[:third])
        if not eventually(lambda: set(revocations) <= delivered(rx), interval=0.05):
            pytest.fail(diagnostics(stack, killed, len(delivered(rx)), note="the first third never arrived"))
        rx.open.clear()
        revocations += fan_out(revoke, consents[third:])
        stack.kill(killed)
        at_kill = len(delivered(rx))
        rx.open.set()
        phase(f"all {BURST} revoked; killed {killed} at {at_kill}/{BURST} delivered")
        # `make run` sees a child die and stops the rest; the user runs `make run` again: a new broker.
        stack.restart_all(fresh_broker=True)
        phase(f"restarted on an empty broker; {len(delivered(rx))} delivered so far")

        # What the buyer, the seller and an operator (registry) see converges.
        missing = set(revocations)  # no verified webhook at the buyer yet
        pending = set(revocations)  # the seller does not read the buyer `delivered` yet
        active = set(licenses)  # the registry does not read the license `revoked` yet

        def converged() -> bool:
            missing.difference_update(delivered(rx))
            for rid in sorted(pending):
                rev = ok(w.http.get(f"{stack.url('consent')}/v1/revocations/{rid}", headers=w.seller))
                if [(n["licensee_id"], n["status"]) for n in rev["notices"]] == [(buyer, "delivered")]:
                    pending.discard(rid)
            for lid in sorted(active):
                lic = ok(w.http.get(f"{stack.url('registry')}/v1/licenses/{lid}", headers=w.ops))
                if lic["status"] == "revoked":
                    active.discard(lid)
            return not (missing or pending or active)

        if not eventually(converged, interval=1.0):
            seller_view = {
                rid: ok(w.http.get(f"{stack.url('consent')}/v1/revocations/{rid}", headers=w.seller))[
                    "notices"
                ]
                for rid in sorted(pending)[:3]
            }
            pytest.fail(
                "after the restart, not every revocation got through:\n"
                f"- revocations never delivered to the buyer: {sample(missing)}\n"
                f"- revocations the seller never reads delivered: {sample(pending)}\n"
                f"- licenses the registry never reads revoked: {sample(active)}\n"
                + diagnostics(
                    stack,
                    killed,
                    at_kill,
                    webhooks_verified=len(rx.verified),
                    webhooks_rejected=rx.rejected,
                    receiver_listening=listening(rx),
                    buyer_reads=notice_statuses(w, buyer_auth, missing | pending),
                    seller_reads=seller_view,
                )
            )
        phase("converged: buyer told, seller sees delivered, registry shows revoked")

        assert rx.rejected == 0, "the buyer rejected deliveries (bad signature)"
        seen = list(rx.verified)
        data = [v["payload"]["data"] for v in seen]
        assert {d["licensee_id"] for d in data} == {buyer}
        by_notice = grouped([(d["notice_id"], v["webhook_id"]) for d, v in zip(data, seen, strict=True)])
        by_webhook_id = grouped([(v["webhook_id"], d["notice_id"]) for d, v in zip(data, seen, strict=True)])
        by_revocation = grouped([(d["revocation_id"], d["notice_id"]) for d in data])
        assert {n: i for n, i in by_notice.items() if len(i) > 1} == {}, "a notice changed webhook-id"
        assert {i: n for i, n in by_webhook_id.items() if len(n) > 1} == {}, "notices share a webhook-id"
        assert {r: n for r, n in by_revocation.items() if len(n) > 1} == {}, "a revocation got two notices"
