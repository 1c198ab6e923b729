"""The ingress lets through the bodies the services accept (issue 13, finding 5): ingress-nginx
refuses bodies over 1 MiB unless an Ingress says otherwise, which broke the 16 MiB batch endpoints.
Each path's `proxy-body-size` must sit just above the service's own limit (the settings' defaults),
so the service, not nginx, answers an oversized body with its 413 problem JSON."""

from __future__ import annotations

import re
from typing import Any

import pytest

from consent_api.main import BATCH_PATHS as CONSENT_BATCH
from registry.main import BATCH_PATHS as REGISTRY_BATCH
from rescind_common.settings import RescindSettings

from support.k8s import OVERLAYS, of_kind

ANNOTATION = "nginx.ingress.kubernetes.io/proxy-body-size"
MIB = 1024 * 1024
BATCH = {"consent-api": set(CONSENT_BATCH), "registry": set(REGISTRY_BATCH), "revocation-worker": set()}
UNITS = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}


def nginx_size(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)", value.strip().lower())
    assert m, f"not an nginx size: {value!r}"
    return int(m[1]) * UNITS[m[2]]


def routes(docs: list[dict[str, Any]]) -> list[tuple[str, str, str, str, int]]:
    """(service, host, path, pathType, allowed body bytes) of every path of every Ingress."""
    out = []
    for ing in of_kind(docs, "Ingress"):
        annotation = ing["metadata"].get("annotations", {}).get(ANNOTATION)
        assert annotation, f"{ing['metadata']['name']}: no {ANNOTATION} (ingress-nginx would allow 1 MiB)"
        size = nginx_size(annotation)
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                out.append((p["backend"]["service"]["name"], rule["host"], p["path"], p["pathType"], size))
    return out


def within(size: int, limit: int) -> bool:
    return limit < size <= limit + MIB


@pytest.mark.parametrize("env", OVERLAYS)
def test_ingress_body_sizes_match_the_service_limits(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    defaults = RescindSettings()
    table = routes(rendered[env])
    for service, host, path, kind, size in table:
        if kind == "Exact" and path in BATCH[service]:
            assert within(size, defaults.max_batch_body_bytes), (env, service, path, size)
        else:
            assert kind == "Prefix", (env, service, path, kind)
            assert within(size, defaults.max_body_bytes), (env, service, path, size)
    # Every batch path is routed on its service's host(s) with the batch size.
    for service, paths in BATCH.items():
        hosts = {h for s, h, _, kind, _ in table if s == service and kind == "Prefix"}
        for host in hosts:
            for path in paths:
                assert any((s, h, p, kind) == (service, host, path, "Exact") for s, h, p, kind, _ in table), (
                    f"{env}: {service} {host}{path} not routed with the batch body size"
                )
