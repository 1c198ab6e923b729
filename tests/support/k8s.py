"""deploy/ rendered and read: the overlays through `kubectl kustomize`, the objects in them, and the
metric names their alerts and dashboard query (PromQL selectors, Prometheus exposition)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from prometheus_client.parser import text_string_to_metric_families

from consent_api.config import ConsentSettings
from registry.config import RegistrySettings
from rescind_common.settings import RescindSettings
from revocation_worker.config import WorkerSettings

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
