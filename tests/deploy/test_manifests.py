"""deploy/ checked offline (no cluster, no Docker, nothing fetched).

- Every workload meets the security settings; scaling, Kafka ACLs, network policies and the
  services' environment agree with the code (the settings classes read exactly these variables).
- revocation-worker runs as three Deployments from one image: `serve` (the only HTTP server, what the
  Service selects), `worker --role intake` (Kafka, KEDA on lag) and `worker --role delivery` (webhooks,
  HPA on CPU); every process is scraped by a ServiceMonitor or PodMonitor.

Rendering and validation: test_kustomize.py; metrics: test_monitoring.py, test_processes.py; images:
test_dockerfiles.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any
from unittest import mock

import pytest

from consent_api.config import ConsentSettings
from registry.config import RegistrySettings
from rescind_common.consumer import dead_letter_topic
from rescind_common.health import CHECK_TIMEOUT
from rescind_common.kafka import KafkaSecurity
from revocation_worker.config import WorkerSettings

from support.k8s import (
    ARGS,
    DEPLOY,
    KAFKA_COMPONENTS,
    METRICS_PORT_COMPONENTS,
    OPERATOR_SECRETS,
    OVERLAYS,
    SERVICES,
    SETTING_PREFIX,
    SETTINGS,
    containers,
    ident,
    kustomize,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    workloads,
)

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
        if svc in ("registry", "revocation-worker") and comp == "api":
            # The key that signs audit checkpoints (production refuses to serve without it).
            key_file = getattr(settings, f"{prefix}_audit_signing_key_file")
            assert key_file is not None and mounted(d, str(key_file)), where
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
