"""Each pod gets only the secrets its process reads. What a process reads is the code's own table
(`PROCESS_SECRETS` of each service's settings class, which production also enforces at start); a
secret reaches a pod as an environment variable from a Secret (envFrom, secretKeyRef) or as a mounted
Secret volume that one of its settings points into. The worker's internet-facing API has no registry
token; consent-api's relay and consumer have no master key."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from support.k8s import OVERLAYS, SETTINGS, containers, ident, of_kind, pod_labels, pod_spec, workloads

Docs = list[dict[str, Any]]


def secret_keys(docs: Docs) -> dict[str, dict[str, str]]:
    """Secret name -> {key: its External Secrets template ('' when not templated)}."""
    out: dict[str, dict[str, str]] = {}
    for es in of_kind(docs, "ExternalSecret"):
        target = es["spec"]["target"]
        template = target.get("template", {}).get("data")
        keys = template or {d["secretKey"]: "" for d in es["spec"].get("data", [])}
        out[target.get("name", es["metadata"]["name"])] = {k: str(v) for k, v in keys.items()}
    return out


def setting(var: str) -> str:
    assert var.startswith("RESCIND_"), var
    return var.removeprefix("RESCIND_").lower()


def violations(docs: Docs) -> list[str]:
    """Every secret that reaches a pod whose process does not read it, and every secret a process
    needs in production that does not reach its pod."""
    configmaps = {m["metadata"]["name"]: m.get("data", {}) for m in of_kind(docs, "ConfigMap")}
    secrets = secret_keys(docs)
    out: list[str] = []
    for d in workloads(docs):
        service = pod_labels(d).get("app.kubernetes.io/name")
        if service not in SETTINGS:
            continue
        cls = SETTINGS[service]
        every_secret = frozenset().union(*cls.PROCESS_SECRETS.values())
        for c in containers(d):
            process = " ".join(c.get("args", []))
            where = f"{ident(d)} ({service} {process})"
            if process not in cls.PROCESS_SECRETS:
                out.append(f"{where}: a process the code does not know")
                continue
            uses = cls.PROCESS_SECRETS[process]
            env: dict[str, str] = {}  # every variable, whatever its source (to resolve mounted paths)
            from_secrets: set[str] = set()
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    env.update(configmaps.get(src["configMapRef"]["name"], {}))
                else:
                    keys = secrets.get(src["secretRef"]["name"], {})
                    env.update(keys)
                    from_secrets |= set(keys)
            for e in c.get("env", []):
                env[e["name"]] = str(e.get("value", ""))
                if "secretKeyRef" in e.get("valueFrom", {}):
                    from_secrets.add(e["name"])
            for var in sorted(from_secrets):
                if setting(var) not in uses:
                    out.append(f"{where}: gets {var}, which it never reads")
            # Secret volumes: each must be what one of its settings points into, and a setting the
            # process reads if that setting is a secret one (a key file).
            volumes = {v["name"]: v for v in pod_spec(d).get("volumes", [])}
            for m in c.get("volumeMounts", []):
                volume = volumes[m["name"]]
                if "secret" not in volume:
                    continue
                prefix = m["mountPath"].rstrip("/") + "/"
                pointing = {setting(k) for k, v in env.items() if k.startswith("RESCIND_") and prefix in v}
                if not pointing:
                    out.append(
                        f"{where}: mounts Secret {volume['secret']['secretName']}, which no setting reads"
                    )
                for name in sorted(pointing & every_secret - uses):
                    out.append(f"{where}: mounts {prefix} for {name}, which it never reads")
            # And what production refuses to start without is there.
            for name in sorted(uses & cls.PRODUCTION_SECRETS):
                var = f"RESCIND_{name.upper()}"
                if var not in env:
                    out.append(f"{where}: needs {var}")
                elif name.endswith("_file") and not any(
                    env[var].startswith(m["mountPath"].rstrip("/") + "/") for m in c.get("volumeMounts", [])
                ):
                    out.append(f"{where}: {var} points at nothing mounted")
            for group in cls.PRODUCTION_ANY_OF:
                names = sorted(f"RESCIND_{name.upper()}" for name in group & uses)
                if names and not any(var in env for var in names):
                    out.append(f"{where}: needs {' or '.join(names)}")
    return out


@pytest.mark.parametrize("env", OVERLAYS)
def test_each_pod_gets_only_the_secrets_its_process_reads(rendered: dict[str, Docs], env: str) -> None:
    assert violations(rendered[env]) == []


def test_a_secret_given_to_the_wrong_pod_is_caught(rendered: dict[str, Docs]) -> None:
    """The control: the layout before (the registry token in the worker API's pod, consent-api's
    master key in its relay's) is what the check above refuses."""
    docs = copy.deepcopy(rendered["prod"])
    by_name = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for deployment, secret in (
        ("revocation-worker", "revocation-worker-registry-token"),
        ("consent-api-relay", "consent-api-serve-env"),
    ):
        (c,) = pod_spec(by_name[deployment])["containers"]
        c["envFrom"].append({"secretRef": {"name": secret}})
    found = violations(docs)
    assert any("Deployment/revocation-worker (" in v and "RESCIND_WORKER_REGISTRY_TOKEN" in v for v in found)
    assert any("consent-api-relay" in v and "RESCIND_CONSENT_MASTER_KEY" in v for v in found)
    # And a process without a secret it needs.
    (c,) = pod_spec(by_name["revocation-worker-delivery"])["containers"]
    c["envFrom"] = [
        s for s in c["envFrom"] if s.get("secretRef", {}).get("name") != "revocation-worker-secret-key"
    ]
    assert any(
        "revocation-worker-delivery" in v and "needs RESCIND_WORKER_SECRET_KEY" in v for v in violations(docs)
    )
