"""`rescind demo`: the whole story against a running stack (`make run`), with local receivers.

Seller registers samples and grants; the operator creates two licensees and licenses; a licensee
declares a model; both licensees register webhook endpoints (local receivers that verify every
delivery with the standardwebhooks library); the seller revokes; both receivers get verified
webhooks naming the samples and the model; one acknowledges; the seller's revocation shows one
acknowledged, one delivered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def run(consent_url: str, registry_url: str, worker_url: str) -> int:
    settings = load_settings()
    run_id = uuid.uuid4().hex[:6]

    def auth(role: str, sub: str) -> dict[str, str]:
        token = dev_token(settings, role=role, sub=sub, ttl=dt.timedelta(hours=1))
        return {"Authorization": f"Bearer {token}"}

    seller = auth("subject", f"demo-seller-{run_id}")
    ops = auth("operator", "demo-ops")
    with (
        httpx.Client(timeout=30) as http,
        Receiver("Acme Vision") as acme_rx,
        Receiver("Bolt Voice") as bolt_rx,
    ):
        say("seller registers three samples (fingerprints only) and grants consent for model training")
        samples = _check(
            http.post(
                f"{consent_url}/v1/samples/batch",
                headers=seller,
                json={
                    "samples": [
                        {"kind": kind, "sha256": hashlib.sha256(f"{run_id}-{kind}".encode()).hexdigest()}
                        for kind in ("face_image", "voice_recording", "handwriting")
                    ]
                },
            ),
            "registering samples",
        )["items"]
        ids = [s["id"] for s in samples]
        consent = _check(
            http.post(
                f"{consent_url}/v1/consents",
                headers=seller,
                json={"sample_ids": ids, "purposes": ["model_training"]},
            ),
            "granting consent",
        )
        print(f"    consent {consent['id']} (receipt {consent['receipt_id']})")

        say("operator creates two licensees and records their licenses")
        acme = _check(
            http.post(f"{registry_url}/v1/licensees", headers=ops, json={"name": "Acme Vision"}), "licensee"
        )
        bolt = _check(
            http.post(f"{registry_url}/v1/licensees", headers=ops, json={"name": "Bolt Voice"}), "licensee"
        )
        acme_license = _check(
            http.post(
                f"{registry_url}/v1/licenses",
                headers=ops,
                json={
                    "licensee_id": acme["id"],
                    "consent_id": consent["id"],
                    "purpose": "model_training",
                    "sample_ids": ids[:2],
                },
            ),
            "recording Acme's license",
        )
        _check(
            http.post(
                f"{registry_url}/v1/licenses",
                headers=ops,
                json={
                    "licensee_id": bolt["id"],
                    "consent_id": consent["id"],
                    "purpose": "model_training",
                    "sample_ids": ids[1:],
                },
            ),
            "recording Bolt's license",
        )
        acme_auth, bolt_auth = auth("licensee", acme["id"]), auth("licensee", bolt["id"])

        say("Acme declares a model trained on its license")
        model = _check(
            http.post(
                f"{registry_url}/v1/models",
                headers=acme_auth,
                json={
                    "name": "acme-face-embedder",
                    "version": "2026.11",
                    "license_ids": [acme_license["id"]],
                },
            ),
            "declaring the model",
        )

        say("both licensees register webhook endpoints (local receivers)")
        for rx, who in ((acme_rx, acme_auth), (bolt_rx, bolt_auth)):
            ep = _check(
                http.post(f"{worker_url}/v1/endpoints", headers=who, json={"url": rx.url}), "endpoint"
            )
            rx.secret = ep["secret"]

        say("seller revokes the consent")
        revocation = _check(
            http.post(f"{consent_url}/v1/consents/{consent['id']}/revoke", headers=seller), "revoking"
        )
        started = time.monotonic()
        print(f"    revocation {revocation['id']}")

        _wait("both verified webhooks", lambda: bool(acme_rx.verified) and bool(bolt_rx.verified))
        elapsed = time.monotonic() - started
        for rx in (acme_rx, bolt_rx):
            data = rx.verified[0]["payload"]["data"]
            print(
                f"    {rx.name}: verified webhook {rx.verified[0]['webhook_id']}: delete "
                f"{[s['sample_id'] for s in data['samples']]}, retrain/unlearn "
                f"{[m['name'] + '@' + m['version'] for m in data['models']] or 'no models'}"
            )
        acme_data = acme_rx.verified[0]["payload"]["data"]
        if model["id"] not in {m["model_id"] for m in acme_data["models"]}:
            raise CliError("Acme's webhook does not name its model")
        print(f"    both buyers told {elapsed:.1f}s after the revocation")

        say("Acme acknowledges: samples deleted, model unlearned")
        _check(
            http.post(
                f"{worker_url}/v1/notices/{acme_data['notice_id']}/ack",
                headers=acme_auth,
                json={
                    "status": "completed",
                    "models": [{"model_id": model["id"], "action": "unlearned"}],
                    "evidence": {"deletion_job": "acme-job-42"},
                },
            ),
            "acknowledging",
        )

        say("seller reads the revocation")
        expected = {acme["id"]: "acknowledged", bolt["id"]: "delivered"}
        final: dict[str, Any] = {}

        def settled() -> bool:
            nonlocal final
            final = _check(
                http.get(f"{consent_url}/v1/revocations/{revocation['id']}", headers=seller), "read"
            )
            return {n["licensee_id"]: n["status"] for n in final["notices"]} == expected

        _wait("the seller to see one acknowledged and one delivered", settled)
        print(json.dumps({k: final[k] for k in ("id", "status", "notices")}, indent=2, default=str))
    say("done")
    return 0
