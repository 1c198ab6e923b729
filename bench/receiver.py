"""Fast local webhook receivers for the benchmarks: one aiohttp process, one path per licensee.

Every delivery is verified with the `standardwebhooks` library (the secret of that path) before it
is accepted (204) and recorded with its receive time (`time.monotonic()`: CLOCK_MONOTONIC, the same
clock in every process on this machine, so the harness can subtract its own send times).

  POST /hook/{key}        a webhook; 401 when the signature does not verify
  POST /_secrets          {"<key>": "whsec_...", ...}: add or replace secrets
  GET  /_count            {"verified": n, "rejected": n}
  GET  /_events?after=i   recorded deliveries from index i on: [t, key, revocation_id, notice_id,
                          webhook_id, body bytes], at most 50,000 a page, and "next"

  .venv/bin/python bench/receiver.py PORT
"""

from __future__ import annotations

import sys
import time
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PAGE = 50_000


def make_app() -> web.Application:
    secrets: dict[str, Webhook] = {}
    events: list[list[Any]] = []
    counts = {"verified": 0, "rejected": 0}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        wh = secrets.get(request.match_info["key"])
        try:
            if wh is None:
                raise WebhookVerificationError("unknown endpoint")
            payload = wh.verify(body, dict(request.headers))
        except (WebhookVerificationError, ValueError):
            counts["rejected"] += 1
            return web.Response(status=401)
        now = time.monotonic()
        data = (payload.get("data") or {}) if isinstance(payload, dict) else {}
        events.append(
            [
                now,
                request.match_info["key"],
                data.get("revocation_id"),
                data.get("notice_id"),
                request.headers.get("webhook-id"),
                len(body),
            ]
        )
        counts["verified"] += 1
        return web.Response(status=204)

    async def add_secrets(request: web.Request) -> web.Response:
        for key, secret in (await request.json()).items():
            secrets[key] = Webhook(secret)
        return web.json_response({"keys": len(secrets)})

    async def count(request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def list_events(request: web.Request) -> web.Response:
        after = int(request.query.get("after", "0"))
        page = events[after : after + PAGE]
        return web.json_response({"events": page, "next": after + len(page)})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook/{key}", hook)
    app.router.add_post("/_secrets", add_secrets)
    app.router.add_get("/_count", count)
    app.router.add_get("/_events", list_events)
    return app


def main() -> None:
    port = int(sys.argv[1])
    web.run_app(make_app(), host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


if __name__ == "__main__":
    main()
