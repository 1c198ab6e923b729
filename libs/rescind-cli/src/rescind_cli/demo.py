"""`rescind demo`: the whole story against a running stack (`make run`), with local receivers.

A seller grants consent for two purposes; the operator records licenses for two buyers: Acme
trains one model on two of its licenses, Bolt trains a sharded model (shard s1 on a training
license, s2 on an evaluation license). The seller withdraws one purpose (model training). Both
receivers verify their webhooks: Acme must act on its whole model, Bolt only on shard s1. Acme
answers `deleted` + `retrained`, Bolt answers only for its samples (partially acknowledged). The
seller's view names both holders with statuses, actions and evidence digests, and the signed proof
of propagation is saved with the JWKS that verifies it offline (`rescind proof verify`).

`story()` is the same journey for the end-to-end test, which checks what it returns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from rescind_cli.errors import CliError
from rescind_cli.tokens import dev_token, load_settings

WAIT = 90.0


class Receiver:
    """A buyer's webhook receiver on 127.0.0.1 that verifies signatures before accepting."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.secret: str | None = None
        self.verified: list[dict[str, Any]] = []
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    if receiver.secret is None:
                        raise WebhookVerificationError("no secret yet")
                    payload = Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.verified.append({"webhook_id": headers["webhook-id"], "payload": payload})
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/rescind"

    def notices(self) -> list[dict[str, Any]]:
        """The `data` of every verified `revocation.notice` webhook received so far."""
        return [
            v["payload"]["data"] for v in self.verified if v["payload"].get("type") == "revocation.notice"
        ]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _check(r: httpx.Response, what: str) -> dict[str, Any]:
    if r.status_code >= 400:
        raise CliError(f"{what} failed: {r.status_code} {r.text[:500]}")
    return dict(r.json())


def _wait(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise CliError(f"timed out after {WAIT:.0f}s waiting for {what}")
        time.sleep(0.2)


def say(step: str) -> None:
    print(f"==> {step}", flush=True)


@dataclass
class Urls:
    consent: str
    registry: str
    worker: str


@dataclass
class Outcome:
    """What the story left behind, for the end-to-end test to check."""

    revocation_id: str
    acme_id: str
    bolt_id: str
    acme_model: str
    bolt_model: str
    acme_notice: dict[str, Any]
    bolt_notice: dict[str, Any]
    view: dict[str, Any]
    proof_file: Path
    jwks_file: Path


def story(urls: Urls, auth: Callable[[str, str], dict[str, str]], out_dir: Path) -> Outcome:
    """Play the journey; raise CliError at the first thing a user would see go wrong."""
    run_id = uuid.uuid4().hex[:6]
    seller = auth("subject", f"demo-seller-{run_id}")
    ops = auth("operator", "demo-ops")
    with (
        httpx.Client(timeout=30) as http,
        Receiver("Acme Vision") as acme_rx,
        Receiver("Bolt Voice") as bolt_rx,
    ):
        say("seller registers four samples (fingerprints only) and grants training and evaluation")
        kinds = ("face_image", "voice_recording", "handwriting", "face_image")
        samples = _check(
            http.post(
                f"{urls.consent}/v1/samples/batch",
                headers=seller,
                json={
                    "samples": [
                        {"kind": kind, "sha256": hashlib.sha256(f"{run_id}-{i}".encode()).hexdigest()}
                        for i, kind in enumerate(kinds)
                    ]
                },
            ),
            "registering samples",
        )["items"]
        ids = [s["id"] for s in samples]
        # Two consents (the face and voice first, the handwriting later), both for both purposes.
        consents = [
            _check(
                http.post(
                    f"{urls.consent}/v1/consents",
                    headers=seller,
                    json={"sample_ids": group, "purposes": ["model_training", "evaluation"]},
                ),
                "granting consent",
            )
            for group in ([ids[0], ids[1], ids[3]], [ids[2]])
        ]
        print(f"    consents {consents[0]['id']} and {consents[1]['id']}")

        say("operator creates two licensees and records four licenses")
        acme = _check(
            http.post(f"{urls.registry}/v1/licensees", headers=ops, json={"name": "Acme Vision"}), "licensee"
        )
        bolt = _check(
            http.post(f"{urls.registry}/v1/licensees", headers=ops, json={"name": "Bolt Voice"}), "licensee"
        )

        def license_(licensee: str, consent: dict[str, Any], purpose: str, sample_ids: list[str]) -> str:
            body = {
                "licensee_id": licensee,
                "consent_id": consent["id"],
                "purpose": purpose,
                "sample_ids": sample_ids,
            }
            # 409 until the registry has projected the consent from the bus: a moment after the grant.
            last: httpx.Response | None = None

            def recorded() -> bool:
                nonlocal last
                last = http.post(f"{urls.registry}/v1/licenses", headers=ops, json=body)
                return last.status_code != 409

            _wait("the registry to know the consent", recorded)
            assert last is not None
            return _check(last, "recording a license")["id"]

        acme_l1 = license_(acme["id"], consents[0], "model_training", ids[0:2])
        acme_l2 = license_(acme["id"], consents[1], "model_training", ids[2:3])
        bolt_train = license_(bolt["id"], consents[0], "model_training", ids[1:2])
        bolt_eval = license_(bolt["id"], consents[0], "evaluation", ids[3:4])
        acme_auth, bolt_auth = auth("licensee", acme["id"]), auth("licensee", bolt["id"])

        say("Acme declares a model trained on both its licenses; Bolt a sharded one (s1 training, s2 eval)")
        acme_model = _check(
            http.post(
                f"{urls.registry}/v1/models",
                headers=acme_auth,
                json={"name": "acme-face-embedder", "version": "2026.12", "license_ids": [acme_l1, acme_l2]},
            ),
            "declaring Acme's model",
        )
        bolt_model = _check(
            http.post(
                f"{urls.registry}/v1/models",
                headers=bolt_auth,
                json={
                    "name": "bolt-voice-clone",
                    "version": "7",
                    "shards": [
                        {"shard_id": "s1", "license_ids": [bolt_train]},
                        {"shard_id": "s2", "license_ids": [bolt_eval]},
                    ],
                },
            ),
            "declaring Bolt's model",
        )

        say("both licensees register webhook endpoints (local receivers)")
        for rx, who in ((acme_rx, acme_auth), (bolt_rx, bolt_auth)):
            ep = _check(
                http.post(f"{urls.worker}/v1/endpoints", headers=who, json={"url": rx.url}), "endpoint"
            )
            rx.secret = ep["secret"]

        say("seller withdraws one purpose: model training (evaluation stays granted)")
        revocation = _check(
            http.post(
                f"{urls.consent}/v1/revocations",
                headers=seller,
                json={"scope": "purpose", "purpose": "model_training"},
            ),
            "withdrawing the purpose",
        )
        started = time.monotonic()
        print(f"    revocation {revocation['id']}")

        _wait("both verified webhooks", lambda: bool(acme_rx.notices()) and bool(bolt_rx.notices()))
        print(f"    both buyers told {time.monotonic() - started:.1f}s after the withdrawal")
        acme_notice, bolt_notice = acme_rx.notices()[0], bolt_rx.notices()[0]
        for rx, data in ((acme_rx, acme_notice), (bolt_rx, bolt_notice)):
            acts = [
                f"{m['name']}@{m['version']} {m.get('scope')} {m.get('shard_ids') or ''}"
                for m in data["models"]
            ]
            licenses = [
                f"{lic['license_id']} {lic['trigger']} {lic['purposes']}" for lic in data.get("licenses", [])
            ]
            print(f"    {rx.name}: delete {len(data['samples'])} samples; act on {acts}; licenses {licenses}")
        acme_acts = {m["model_id"]: m for m in acme_notice["models"]}
        bolt_acts = {m["model_id"]: m for m in bolt_notice["models"]}
        if acme_acts.get(acme_model["id"], {}).get("scope") != "whole":
            raise CliError(f"Acme's webhook does not name its whole model: {acme_notice['models']}")
        if bolt_acts.get(bolt_model["id"], {}).get("shard_ids") != ["s1"]:
            raise CliError(f"Bolt's webhook does not name exactly shard s1: {bolt_notice['models']}")

        say("Acme answers: samples deleted, model retrained (with evidence)")
        _check(
            http.post(
                f"{urls.worker}/v1/notices/{acme_notice['notice_id']}/ack",
                headers=acme_auth,
                json={
                    "outcome": "deleted",
                    "models": [{"model_id": acme_model["id"], "action": "retrained"}],
                    "evidence": {"job_ids": ["acme-delete-42"], "run_ids": ["acme-train-2026-12-04"]},
                },
            ),
            "Acme's answer",
        )
        say("Bolt answers for its samples only (its model is not answered yet)")
        _check(
            http.post(
                f"{urls.worker}/v1/notices/{bolt_notice['notice_id']}/ack",
                headers=bolt_auth,
                json={"outcome": "deleted", "evidence": {"job_ids": ["bolt-purge-7"]}},
            ),
            "Bolt's answer",
        )

        say("seller reads the revocation: who was told, what each did")
        expected = {acme["id"]: "acknowledged", bolt["id"]: "partially_acknowledged"}
        view: dict[str, Any] = {}

        def settled() -> bool:
            nonlocal view
            view = _check(
                http.get(f"{urls.consent}/v1/revocations/{revocation['id']}", headers=seller), "read"
            )
            return {n["licensee_id"]: n["status"] for n in view["notices"]} == expected

        _wait("the seller to see one acknowledged and one partially acknowledged", settled)
        for n in view["notices"]:
            actions = [f"{m.get('name')}: {m.get('action') or 'unanswered'}" for m in n.get("models", [])]
            print(
                f"    {n.get('licensee_name')}: {n['status']}, final {n.get('final_status')}, "
                f"models {actions}, evidence {n.get('evidence_digest')}, deadline {n.get('deadline')}"
            )

        say("seller fetches the signed proof of propagation and the JWKS that verifies it")
        proof = http.get(
            f"{urls.consent}/v1/revocations/{revocation['id']}/proof",
            headers={**seller, "Accept": "application/jose"},
        )
        if proof.status_code != 200:
            raise CliError(f"the proof failed: {proof.status_code} {proof.text[:500]}")
        jwks = _check(http.get(f"{urls.consent}/.well-known/jwks.json"), "the JWKS")
        out_dir.mkdir(parents=True, exist_ok=True)
        proof_file = out_dir / f"{revocation['id']}.jws"
        jwks_file = out_dir / f"{revocation['id']}.jwks.json"
        proof_file.write_text(proof.text.strip() + "\n")
        jwks_file.write_text(json.dumps(jwks, indent=2) + "\n")
        print(f"    saved {proof_file} and {jwks_file}")
    return Outcome(
        revocation_id=revocation["id"],
        acme_id=acme["id"],
        bolt_id=bolt["id"],
        acme_model=acme_model["id"],
        bolt_model=bolt_model["id"],
        acme_notice=acme_notice,
        bolt_notice=bolt_notice,
        view=view,
        proof_file=proof_file,
        jwks_file=jwks_file,
    )


def run(consent_url: str, registry_url: str, worker_url: str) -> int:
    settings = load_settings()

    def auth(role: str, sub: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {dev_token(settings, role=role, sub=sub, ttl=dt.timedelta(hours=1))}"
        }

    outcome = story(Urls(consent_url, registry_url, worker_url), auth, Path(settings.state_dir) / "proofs")
    say("verify the proof offline, as a regulator would:")
    print(f"    rescind proof verify {outcome.proof_file} --jwks {outcome.jwks_file}")
    say("done")
    return 0
