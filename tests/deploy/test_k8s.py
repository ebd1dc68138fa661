"""Kubernetes manifests: kustomize-rendered (base and production overlay), validated against the Kubernetes
1.32 schemas (kubernetes-validate, strict), then checked for probes, resources, autoscaling, disruption
budgets, selectors and network isolation. No cluster needed.

`render()` is a small kustomize-compatible renderer covering what these kustomizations use (resources,
namespace, images, replicas, strategic-merge patches); when `kubectl` is installed its built-in kustomize
renders the same directories and the two outputs must be identical.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from adp_cli.procs import SERVICES
from adp_testing.gateway import gateway_paths

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy/k8s"
K8S_VERSION = "1.32.0"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
# strategic-merge keys of the lists these manifests patch
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}

Doc = dict[str, Any]


# ---------------------------------------------------------------------------------------------- renderer
def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            for i, existing in enumerate(out):
                if existing.get(mk) == item.get(mk):
                    out[i] = strategic_merge(existing, item, None)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def _ident(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def render(folder: Path) -> list[Doc]:
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    allowed = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
    unknown = set(kust) - allowed
    assert not unknown, f"{folder}: the test renderer does not implement {unknown}"
    docs: list[Doc] = []
    for res in kust.get("resources", []):
        path = (folder / res).resolve()
        docs += render(path) if path.is_dir() else _load(path)
    for patch_ref in kust.get("patches", []):
        for patch in _load(folder / patch_ref["path"]):
            matches = [i for i, d in enumerate(docs) if _ident(d) == _ident(patch)]
            assert len(matches) == 1, f"patch {patch_ref['path']} {_ident(patch)} matches {len(matches)} objects"
            docs[matches[0]] = strategic_merge(docs[matches[0]], patch)
    if "namespace" in kust:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = kust["namespace"]
    for image in kust.get("images", []):
        for d in docs:
            pod = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for rep in kust.get("replicas", []):
        for d in docs:
            if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == rep["name"]:
                d["spec"]["replicas"] = rep["count"]
    ids = [(_ident(d), d["metadata"].get("namespace")) for d in docs]
    assert len(ids) == len(set(ids)), f"duplicate objects in {folder}"
    return docs


TARGETS = {"base": K8S / "base", "production": K8S / "overlays/production"}


@pytest.fixture(scope="module", params=list(TARGETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(TARGETS[request.param])


def admin_paths() -> set[str]:
    """Paths of the admin HTTP server every service but the gateway runs (adp_common.health)."""
    from adp_common.health import HealthChecks, build_admin_app
    from adp_common.telemetry import Metrics

    app = build_admin_app(HealthChecks("x", "x"), Metrics())
    return {r.path for r in app.routes}


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# ---------------------------------------------------------------------------------------------- schemas
def test_every_manifest_matches_the_kubernetes_schemas(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    assert len(docs) > 20
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{_ident(doc)}: {err.message} at {'/'.join(map(str, err.path))}")


def test_the_schema_check_catches_mistakes() -> None:
    deploy = copy.deepcopy(by_kind(render(K8S / "base"), "Deployment")["gateway"])
    deploy["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, K8S_VERSION, strict=True)
    deploy = copy.deepcopy(by_kind(render(K8S / "base"), "Deployment")["gateway"])
    deploy["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, K8S_VERSION, strict=True)


def _kubectl_ok() -> bool:
    if shutil.which("kubectl") is None:
        return False
    try:
        return subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _kubectl_ok(), reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("target", list(TARGETS))
def test_renderer_agrees_with_kubectl_kustomize(target: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = {(_ident(d), d["metadata"].get("namespace")): d for d in yaml.safe_load_all(out.stdout) if d}
    ours = {(_ident(d), d["metadata"].get("namespace")): d for d in render(TARGETS[target])}
    assert set(theirs) == set(ours)
    for key, doc in ours.items():
        assert doc == theirs[key], key


# ---------------------------------------------------------------------------------------------- workloads
def test_deployments_probe_health_endpoints_and_set_resources(rendered: tuple[str, list[Doc]]) -> None:
    target, docs = rendered
    deployments = by_kind(docs, "Deployment")
    config = by_kind(docs, "ConfigMap")["adp-config"]["data"]
    assert set(SERVICES) <= set(deployments)
    for name in SERVICES:
        pod = deployments[name]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["command"] == [f"adp-{name}"]
        port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
        assert str(port) == config["ADP_HTTP_PORT"] == "8080"
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        served = gateway_paths() if name == "gateway" else admin_paths()
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = c[probe]
            if "httpGet" in spec:
                assert spec["httpGet"]["path"] in served, f"{name} {probe}: {spec['httpGet']['path']} not served"
                if probe == "livenessProbe":  # liveness must not depend on NATS/PostgreSQL being up
                    assert spec["httpGet"]["path"] == "/live"
            else:
                assert spec["tcpSocket"] == {"port": "http"} and name == "gateway"
        for kind in ("requests", "limits"):
            assert c["resources"][kind]["cpu"] and c["resources"][kind]["memory"]
        assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
        refs = [e.get("configMapRef", e.get("secretRef"))["name"] for e in c["envFrom"]]
        assert refs == ["adp-config", "adp-secrets"]
        # grace period longer than the drain the service does on SIGTERM
        assert pod["terminationGracePeriodSeconds"] > float(config.get("ADP_SHUTDOWN_GRACE_S", 20))
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert config["ADP_LOG_DIR"] in mounts  # logs writable with a read-only root
        if target == "production":
            assert c["image"] == "registry.example.com/adp/adp:0.1.0"
    assert by_kind(docs, "Secret")["adp-secrets"]["stringData"]["ADP_DATABASE_URL"].startswith("postgresql://")


def test_every_deployment_has_service_hpa_and_pdb_that_match(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    deployments = by_kind(docs, "Deployment")
    services, hpas, pdbs = (
        by_kind(docs, "Service"),
        by_kind(docs, "HorizontalPodAutoscaler"),
        by_kind(docs, "PodDisruptionBudget"),
    )
    for name in SERVICES:
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        selector = deployments[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert services[name]["spec"]["selector"].items() <= pod_labels.items()
        assert services[name]["spec"]["ports"][0]["targetPort"] == "http"
        hpa = hpas[name]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 < hpa["minReplicas"] <= hpa["maxReplicas"]
        assert hpa["minReplicas"] <= deployments[name]["spec"]["replicas"] <= hpa["maxReplicas"]
        pdb = pdbs[name]["spec"]
        assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
        # a node drain can always evict one copy
        assert pdb["minAvailable"] < hpa["minReplicas"]


def test_configmap_variables_are_documented(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    documented = set(re.findall(r"^\s*(?:#\s*)?([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M))
    data = by_kind(docs, "ConfigMap")["adp-config"]["data"]
    secret = by_kind(docs, "Secret")["adp-secrets"]["stringData"]
    missing = (set(data) | set(secret)) - documented - {"OTEL_RESOURCE_ATTRIBUTES"}
    assert not missing, missing


# ---------------------------------------------------------------------------------------------- network
def _selects(policy: Doc, labels: dict[str, str]) -> bool:
    sel = policy["spec"]["podSelector"].get("matchLabels", {})
    return sel.items() <= labels.items()


def _ingress_sources(docs: list[Doc], labels: dict[str, str]) -> list[tuple[str, Any]]:
    """Where ingress to pods with `labels` may come from: ('any', ports) | ('namespace', ns) | ('same-ns', sel)."""
    out: list[tuple[str, Any]] = []
    for pol in by_kind(docs, "NetworkPolicy").values():
        if not _selects(pol, labels) or "Ingress" not in pol["spec"]["policyTypes"]:
            continue
        for rule in pol["spec"].get("ingress", []):
            if not rule.get("from"):
                out.append(("any", rule.get("ports")))
            for peer in rule.get("from", []):
                if "ipBlock" in peer:
                    out.append(("any", rule.get("ports")))
                elif "namespaceSelector" in peer:
                    ns = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    assert ns, f"{pol['metadata']['name']}: a namespaceSelector must name one namespace"
                    out.append(("namespace", (ns, rule.get("ports"))))
                else:
                    out.append(("same-ns", peer["podSelector"]))
    return out


def test_only_the_gateway_is_reachable_from_outside(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    deployments = by_kind(docs, "Deployment")
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        sources = _ingress_sources(docs, labels)
        external = [s for s in sources if s[0] == "any"]
        if name == "gateway":
            assert external and all(p == [{"protocol": "TCP", "port": 8080}] for _, p in external)
        else:
            assert not external, f"{name} is reachable from outside the namespace"
            for kind, value in sources:
                if kind == "namespace":
                    assert value == ("monitoring", [{"protocol": "TCP", "port": 8080}]), value
        assert any(kind == "same-ns" for kind, _ in sources), f"{name} unreachable inside the namespace"


def test_egress_is_limited_and_only_the_router_reaches_providers(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    deployments = by_kind(docs, "Deployment")
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        public = []
        for pol in by_kind(docs, "NetworkPolicy").values():
            if not _selects(pol, labels) or "Egress" not in pol["spec"]["policyTypes"]:
                continue
            for rule in pol["spec"].get("egress", []):
                assert rule.get("to"), f"{pol['metadata']['name']}: egress anywhere"
                for peer in rule["to"]:
                    if "ipBlock" in peer:
                        public.append((peer["ipBlock"], rule.get("ports")))
        if name == "llm-router":
            assert public and all(p == [{"protocol": "TCP", "port": 443}] for _, p in public)
            assert all("10.0.0.0/8" in b.get("except", []) for b, _ in public)
        else:
            assert not public, f"{name} may reach the internet"


# ---------------------------------------------------------------------------------------------- helm values
def test_helm_values_cluster_jetstream_and_create_the_databases() -> None:
    nats = yaml.safe_load((K8S / "helm/nats-values.yaml").read_text())
    assert nats["config"]["cluster"] == {"enabled": True, "replicas": 3}
    js = nats["config"]["jetstream"]
    assert js["enabled"] and js["fileStore"]["enabled"] and js["fileStore"]["pvc"]["enabled"]
    pg = yaml.safe_load((K8S / "helm/postgresql-values.yaml").read_text())
    script = "\n".join(pg["primary"]["initdb"]["scripts"].values())
    assert set(re.findall(r"CREATE DATABASE (\w+)", script)) == {"gateway", "dialogue", "cost", "alerts"}
    assert pg["auth"]["existingSecret"] and pg["primary"]["persistence"]["enabled"]
    readme = (K8S / "README.md").read_text()
    assert "helm upgrade --install nats nats/nats" in readme and "helm upgrade --install postgresql" in readme
    assert "kubectl kustomize deploy/k8s/overlays/production" in readme


def test_production_replicates_every_stream_and_bucket_across_the_nats_cluster() -> None:
    """The overlay's ADP_STREAM_REPLICAS is the NATS cluster's size, so no manual nats-box step is needed."""
    nats = yaml.safe_load((K8S / "helm/nats-values.yaml").read_text())
    config = by_kind(render(TARGETS["production"]), "ConfigMap")["adp-config"]["data"]
    assert int(config["ADP_STREAM_REPLICAS"]) == nats["config"]["cluster"]["replicas"] == 3
    assert nats["config"]["merge"]["ping_interval"] and nats["config"]["merge"]["ping_max"]
    readme = (K8S / "README.md").read_text()
    assert "nats stream edit" not in readme and "ADP_STREAM_REPLICAS" in readme
