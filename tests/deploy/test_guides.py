"""The guides match the repository: no document points at a file outside it, and the Kubernetes guide's
probe claims are what the manifests configure."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from adp_testing.gateway import gateway_paths

REPO = Path(__file__).resolve().parents[2]
GUIDES = [
    REPO / "README.md",
    *REPO.glob("docs/**/*.md"),
    *REPO.glob("deploy/**/*.md"),
    *REPO.glob("bench/**/*.md"),
    *REPO.glob("services/*/README.md"),
    *REPO.glob("libs/*/README.md"),
]
LINK = re.compile(r"\]\(([^)#\s]+)")  # a Markdown link's target
PATH = re.compile(r"`(\.\./[^`\s]+)`")  # a relative path in code quotes that climbs up


def outside_targets(doc: Path) -> list[str]:
    text = doc.read_text()
    targets = [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]
    targets += PATH.findall(text)
    out = []
    for target in targets:
        resolved = (doc.parent / target).resolve()
        if not resolved.is_relative_to(REPO):
            out.append(target)
    return out


def test_no_document_points_outside_the_repository() -> None:
    bad = {str(d.relative_to(REPO)): outside_targets(d) for d in GUIDES}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_outside_check_catches_a_path_that_climbs_out(tmp_path: Path) -> None:
    doc = REPO / "docs" / "architecture.md"
    probe = tmp_path / "probe.md"
    probe.write_text("see [the notes](../../outside/notes.md) and `../../elsewhere.md`")
    assert outside_targets(probe) == ["../../outside/notes.md", "../../elsewhere.md"]
    assert outside_targets(doc) == []


def deployment_probes() -> dict[str, dict[str, str]]:
    """Per Deployment in deploy/k8s/base: probe kind -> HTTP path (or 'tcp')."""
    out: dict[str, dict[str, str]] = {}
    for manifest in (REPO / "deploy/k8s/base").glob("*.yaml"):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if not doc or doc.get("kind") != "Deployment":
                continue
            container = doc["spec"]["template"]["spec"]["containers"][0]
            probes = {}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if probe is not None:
                    probes[kind] = probe["httpGet"]["path"] if "httpGet" in probe else "tcp"
            out[doc["metadata"]["name"]] = probes
    return out


def test_the_kubernetes_guide_names_the_probes_every_service_has() -> None:
    guide = (REPO / "deploy/k8s/README.md").read_text()
    row = next(line for line in guide.splitlines() if line.startswith("| Deployments |"))
    claimed = {
        kind: path
        for kinds, path in re.findall(r"((?:`\w+Probe`/?)+) on `(/\w+)`", row)
        for kind in re.findall(r"`(\w+Probe)`", kinds)
    }
    services = deployment_probes()
    services = {name: probes for name, probes in services.items() if name not in ("redis", "nats", "postgresql")}
    assert services, "no service Deployments found"
    for name, probes in services.items():
        for kind, path in probes.items():
            assert claimed.get(kind) == path, f"{name}: {kind} on {path}, the guide says {claimed.get(kind)}"


def gateway_claims(guide: str) -> tuple[set[str], set[str]]:
    """The paths the Kubernetes guide says the gateway serves on its port, and those it says it lacks."""
    row = next(line for line in guide.splitlines() if line.startswith("| Deployments |"))
    serves = re.search(r"the gateway serves ([^.;]*)", row)
    served = set(re.findall(r"`(/\w+)`", serves.group(1))) if serves else set()
    return served, set(re.findall(r"no `(/\w+)` route", row))


def test_the_kubernetes_guide_says_what_the_gateway_serves() -> None:
    served, lacking = gateway_claims((REPO / "deploy/k8s/README.md").read_text())
    paths = gateway_paths()
    assert served and served <= paths
    assert not lacking & paths


def test_the_gateway_check_catches_a_route_the_guide_denies() -> None:
    row = "| Deployments | the gateway serves its API and `/health`. It has no `/live` route yet. |"
    assert gateway_claims(row) == ({"/health"}, {"/live"})


def test_the_architecture_guide_gives_the_bus_size_as_it_is() -> None:
    text = " ".join((REPO / "docs/architecture.md").read_text().split())
    claim = re.search(r"`adp_common\.bus`, about ([\d,]+) lines in (\d+) modules", text)
    assert claim, "docs/architecture.md no longer states the bus's size"
    modules = list((REPO / "libs/common/src/adp_common/bus").glob("*.py"))
    lines = sum(len(m.read_text().splitlines()) for m in modules)
    assert int(claim.group(2)) == len(modules)
    assert abs(int(claim.group(1).replace(",", "")) - lines) <= 0.15 * lines, f"the bus has {lines} lines"
