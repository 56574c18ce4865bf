"""The deployment files, checked without a cluster or a Docker engine (neither runs here):

- every Kubernetes overlay (and the base) renders with `kubectl kustomize`, and every object it
  yields validates, strictly, against the Kubernetes schemas of `KUBERNETES_VERSION`, offline
  (`kubernetes-validate` ships the schemas);
- what the docs promise holds in the rendered objects: the backend on loopback with no port, the
  broker non-root with a read-only root filesystem, probes, resources, a PodDisruptionBudget, a
  NetworkPolicy, an autoscaler, secrets only from Secrets, prod on a Redis Cluster over TLS with 3
  replicas and the alerting rules (deploy/prometheus/) as a ConfigMap, a config file whose every key
  the broker documents;
- the compose stack keeps Redis's data and restarts what stops.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kubernetes"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
KUBERNETES_VERSION = "1.30.0"


def render(path: str) -> list[dict]:
    kubectl = shutil.which("kubectl") or pytest.fail("kubectl is missing: scripts/lib.sh ensure_kubectl installs it")
    proc = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE / path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(objects: list[dict], kind: str, name: str) -> dict:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name} in {[(o['kind'], o['metadata']['name']) for o in objects]}")


def containers(objects: list[dict]) -> dict[str, dict]:
    spec = find(objects, "Deployment", "mcp-server")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


@pytest.mark.parametrize("path", OVERLAYS)
def test_renders_and_every_object_validates_offline(path: str) -> None:
    objects = render(path)
    assert objects, f"{path} rendered nothing"
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path}: {obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler"} <= kinds


def test_a_broken_object_is_refused() -> None:
    """Control: the validation really looks (an unknown field fails it)."""
    deployment = find(render("base"), "Deployment", "mcp-server")
    deployment["spec"]["template"]["spec"]["containers"][0]["bogus"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", OVERLAYS)
def test_the_sidecar_promises(path: str) -> None:
    objects = render(path)
    pod = find(objects, "Deployment", "mcp-server")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    both = containers(objects)
    backend, broker = both["mcp-server"], both["session-broker"]
    assert "ports" not in backend and "127.0.0.1" in backend["args"], "the backend listens on loopback only"
    for container in (backend, broker):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])
    assert broker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert broker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in broker["env"]}
    assert env["BROKER_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url", "the Redis URL comes from a Secret"
    service = find(objects, "Service", "mcp-server")
    assert [p["port"] for p in service["spec"]["ports"]] == [8080], "only the broker's port"
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("session-broker-config"))
    settings = tomllib.loads(config["data"]["broker.toml"])
    assert settings["upstream"].startswith("http://127.0.0.1:"), settings
    assert not {"signing-key", "redis-url"} & set(settings), "no secret in the ConfigMap"


def test_every_config_key_is_a_documented_flag() -> None:
    documented = set(re.findall(r"^#? ?([a-z][a-z0-9-]*) = ", (REPO / "docs" / "broker.example.toml").read_text(), re.M))
    keys = set(tomllib.loads((KUSTOMIZE / "base" / "broker.toml").read_text()))
    assert keys <= documented, f"keys the broker does not document: {sorted(keys - documented)}"


def test_prod_runs_three_replicas_on_a_redis_cluster_over_tls() -> None:
    objects = render("overlays/prod")
    assert find(objects, "Deployment", "mcp-server")["spec"]["replicas"] == 3
    assert find(objects, "HorizontalPodAutoscaler", "mcp-server")["spec"]["minReplicas"] == 3
    broker = containers(objects)["session-broker"]
    env = {e["name"]: e.get("value") for e in broker["env"]}
    ca = env["BROKER_REDIS_CA_FILE"]
    mounts = {m["name"]: m["mountPath"] for m in broker["volumeMounts"]}
    assert ca.startswith(mounts["redis-tls"] + "/"), (ca, mounts)
    assert not broker["image"].endswith(":latest"), "prod pins the broker's image"
    policy = find(objects, "NetworkPolicy", "mcp-server")["spec"]["ingress"][0]
    assert policy.get("from"), "prod narrows who reaches the broker"
    assert all(o["metadata"].get("namespace") == "mcp-session-broker" for o in objects)


def test_prod_ships_the_alerting_rules_from_their_one_source() -> None:
    """The ConfigMap holds deploy/prometheus/session-broker-rules.yaml unchanged, under a stable name
    (the Prometheus that mounts it is deployed elsewhere); scripts/check-monitoring checks the rules."""
    rules = find(render("overlays/prod"), "ConfigMap", "session-broker-prometheus-rules")
    source = (REPO / "deploy" / "prometheus" / "session-broker-rules.yaml").read_text()
    assert rules["data"] == {"session-broker-rules.yaml": source}
    assert rules["metadata"]["namespace"] == "mcp-session-broker"


def test_dev_runs_its_own_persistent_redis() -> None:
    objects = render("overlays/dev")
    redis = find(objects, "Deployment", "redis")["spec"]["template"]["spec"]["containers"][0]
    assert "--appendonly" in redis["args"] and redis["args"][redis["args"].index("--appendonly") + 1] == "yes"
    url = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith("session-broker-redis"))
    assert url["metadata"]["name"] in str(find(objects, "Deployment", "mcp-server"))


def test_compose_keeps_redis_data_and_restarts_services() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always"), f"{name} has no restart policy"
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes", command
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), redis
    assert "redis-data" in compose.get("volumes", {}), compose.get("volumes")
