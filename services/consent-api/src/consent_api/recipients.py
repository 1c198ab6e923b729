"""Which licensees received which of a subject's samples: the registry knows, over HTTP.

Used by the access export (GDPR Art. 15(1)(c): the recipients). Best effort: when the registry
cannot answer, the export says so instead of failing the whole request.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import httpx

from consent_api.config import ConsentSettings
from rescind_common.auth import ServiceScope
from rescind_common.service_token import ServiceToken

log = logging.getLogger(__name__)

BATCH = 10_000


def lookup(settings: ConsentSettings, sample_ids: list[str]) -> dict[str, Any]:
    if not sample_ids:
        return {"status": "ok", "licensees": []}
    merged: dict[str, dict[str, Any]] = {}
    try:
        token = ServiceToken(
            settings,
            subject="consent-api",
            # A `service` token with scope `recipients`: this lookup (view samples) and nothing else.
            scope=ServiceScope.RECIPIENTS,
            static=settings.consent_registry_token,
            ttl=dt.timedelta(minutes=5),
        )
        headers = token.headers()
        with httpx.Client(base_url=settings.consent_registry_url, timeout=10, headers=headers) as client:
            for i in range(0, len(sample_ids), BATCH):
                r = client.post(
                    "/v1/holders", json={"sample_ids": sample_ids[i : i + BATCH], "view": "samples"}
                )
                r.raise_for_status()
                for h in r.json().get("holders", []):
                    entry = merged.setdefault(
                        h["licensee_id"],
                        {
                            "licensee_id": h["licensee_id"],
                            "name": h.get("licensee_name"),
                            "samples": {},
                            "licenses": {},
                            "models": {},
                        },
                    )
                    for s in h.get("samples", []):
                        entry["samples"][s["sample_id"]] = s.get("license_ids", [])
                    for lic in h.get("licenses", []):
                        entry["licenses"][lic["license_id"]] = {
                            k: lic.get(k) for k in ("license_id", "status", "consent_id", "purpose")
                        }
                    for m in h.get("models", []):
                        entry["models"][m["model_id"]] = {
                            k: m.get(k) for k in ("model_id", "name", "version")
                        }
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        log.warning("recipients lookup failed: %s", type(exc).__name__)
        return {"status": "unavailable", "detail": "The registry could not be reached; ask again later."}
    return {
        "status": "ok",
        "licensees": [
            {
                "licensee_id": e["licensee_id"],
                "name": e["name"],
                "sample_ids": sorted(e["samples"]),
                "licenses": list(e["licenses"].values()),
                "models": list(e["models"].values()),
            }
            for e in merged.values()
        ],
    }
