"""The registry's holders lookup over HTTP: who holds which of these samples (its `licenses` view)."""

from __future__ import annotations

import datetime as dt

import httpx

from rescind_common.auth import ServiceScope
from rescind_common.service_token import ServiceToken
from revocation_worker.context import AppContext
from revocation_worker.intake.holdings import Holdings, HoldingsMerger

# Sample ids per lookup request (the registry's default `registry_max_holder_samples`).
HOLDERS_BATCH = 10_000
# Longer than the registry takes to answer the largest batch.
TIMEOUT = 30.0


class RegistryClient:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        s = ctx.settings
        self._client = httpx.Client(base_url=s.worker_registry_url, timeout=TIMEOUT)
        # A `service` token with scope `holders`: this lookup (view licenses) and nothing else.
        self._token = ServiceToken(
            s,
            subject="revocation-worker",
            scope=ServiceScope.HOLDERS,
            static=s.worker_registry_token,
            ttl=dt.timedelta(hours=1),
        )

    def holders(self, sample_ids: list[str]) -> Holdings:
        """The registry's `licenses` view for every batch, merged: per license a count, sample lists
        only for licenses holding part of a batch, each sample's ref once."""
        merger = HoldingsMerger()
        for i in range(0, len(sample_ids), HOLDERS_BATCH):
            batch = sample_ids[i : i + HOLDERS_BATCH]
            r = self._client.post(
                "/v1/holders", json={"sample_ids": batch, "view": "licenses"}, headers=self._token.headers()
            )
            r.raise_for_status()
            merger.add(batch, r.json())
        return merger.result()

    def close(self) -> None:
        self._client.close()
