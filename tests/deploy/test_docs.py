"""docs/operations.md (with docs/security.md, its security procedures) names only things that exist:
every `adp` command parses with the real CLI parser, every HTTP path is a route of the gateway or of the
services' admin server, every metric is defined in the code, every variable is documented in .env.example,
every file, compose service, Kubernetes deployment, dashboard panel and alert rule it names is real, and
it covers every procedure of the runbook."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

from adp_cli.main import build_parser
from adp_common.catalog import KV_BREAKERS, KV_BUDGET, KV_LEASES, STREAMS, Catalog
from adp_testing.gateway import gateway_paths

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/operations.md"
SECURITY_DOC = REPO / "docs/security.md"
SOURCES = [*REPO.glob("services/*/src/**/*.py"), *REPO.glob("libs/*/src/**/*.py")]


def doc() -> str:
    return DOC.read_text() + "\n" + SECURITY_DOC.read_text()


def code_and_prose(text: str) -> tuple[list[str], str]:
    """Lines inside fenced code blocks, and the prose with fenced blocks removed."""
    code: list[str] = []
    prose: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return code, "\n".join(prose)


def inline_code(prose: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose)


def command_texts() -> list[str]:
    code, prose = code_and_prose(doc())
    code = [re.sub(r"(^|\s)#\s.*$", "", line) for line in code]  # shell comments
    return code + inline_code(prose)


def slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\s-]", "", s)
    return re.sub(r"\s", "-", s)


def headings(path: Path) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", path.read_text(), re.M)]


# ---------------------------------------------------------------------------------------------- commands
ADP_CMD = re.compile(r"(?<!-n )(?<![\w./-])adp\s+([a-z][a-z-]*(?:[^`#|\n]*))")


def adp_commands() -> list[str]:
    found = []
    for text in command_texts():
        for m in ADP_CMD.finditer(text):
            found.append(m.group(1).strip())
    return found


def test_every_adp_command_parses_with_the_cli() -> None:
    commands = adp_commands()
    subs = {c.split()[0] for c in commands}
    assert {"status", "breakers", "cost", "alerts", "backup", "restore"} <= subs, subs
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"`adp {command}` does not parse")
        assert callable(args.func)


def test_the_command_check_catches_a_wrong_command() -> None:
    parser = build_parser()
    for bad in (["breakers", "--reset"], ["budget", "--set"], ["cost", "budget", "--set"], ["cost"], ["statuss"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_console_scripts_named_exist() -> None:
    import tomllib

    scripts: set[str] = set()
    for pyproject in [*REPO.glob("services/*/pyproject.toml"), *REPO.glob("libs/*/pyproject.toml")]:
        scripts |= set(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    code, _ = code_and_prose(doc())
    named = {m.group(1) for line in code for m in re.finditer(r"(?:^|&&\s*|;\s*)(adp-[a-z-]+)\b", line.strip())}
    assert named, "expected console scripts such as adp-cost-report"
    assert named <= scripts, named - scripts


def test_scripts_named_are_executable_files() -> None:
    for text in command_texts():
        for path in re.findall(r"(?<![\w/.-])(scripts/[\w./-]+\.sh)", text):
            assert (REPO / path).is_file(), path
            assert (REPO / path).stat().st_mode & 0o111, f"{path} is not executable"


# ---------------------------------------------------------------------------------------------- HTTP


def admin_paths() -> set[str]:
    from adp_common.health import HealthChecks, build_admin_app
    from adp_common.telemetry import Metrics

    return {r.path for r in build_admin_app(HealthChecks("x", "x"), Metrics()).routes}


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/") or "/")


def test_every_http_endpoint_named_exists() -> None:
    text = doc()
    served = {_norm(p) for p in gateway_paths() | admin_paths()}
    named = set(re.findall(r"\b(?:GET|POST|PUT|DELETE|PATCH) (/[\w./{}-]*)", text))
    named |= set(re.findall(r"https?://(?:127\.0\.0\.1|localhost):8080(/[\w./{}-]*)", text))
    named |= {p for p in re.findall(r"`(/[a-z][\w/{}-]*)`", text) if not p.startswith(("/var", "/backups", "/tmp"))}
    assert {"/api/health", "/health", "/ready", "/live", "/metrics", "/api/costs"} <= named
    missing = {p for p in named if _norm(p) not in served}
    assert not missing, f"endpoints named in docs/operations.md that nothing serves: {missing}"


# ---------------------------------------------------------------------------------------------- metrics, names
def _defined_metrics() -> set[str]:
    names: set[str] = set()
    for path in SOURCES:
        for m in re.finditer(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(adp_[a-z0-9_]+)\"", path.read_text()):
            names.add(m.group(1))
    return names


def test_every_metric_and_adp_name_exists() -> None:
    metrics = _defined_metrics()
    assert metrics, "no metrics found in the code"
    buckets = {Catalog("adp").bucket(b) for b in (KV_BREAKERS, KV_BUDGET, KV_LEASES)}
    unknown = []
    for token in set(re.findall(r"\badp_[a-z0-9_]+\b", doc())):
        if token in buckets or importlib.util.find_spec(token) is not None:
            continue
        base = re.sub(r"_(total|bucket|sum|count|created)$", "", token)
        if token in metrics or base in metrics or f"{base}_total" in metrics:
            continue
        unknown.append(token)
    assert not unknown, f"named in docs/operations.md but not defined in the code: {unknown}"
    rules = yaml.safe_load((REPO / "deploy/prometheus/rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    named = set(re.findall(r"\b(Adp[A-Z]\w+)\b", doc()))
    assert named and named <= alerts, named - alerts


def test_every_variable_named_is_documented() -> None:
    documented = set(re.findall(r"^\s*(?:#\s*)?([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M))
    streams = {Catalog("adp").stream_name(s.name) for s in STREAMS}
    unknown = []
    for var in set(re.findall(r"\bADP_[A-Z0-9_]+", doc())):
        if var in documented or var in streams:
            continue
        if var.endswith("_") and any(d.startswith(var) for d in documented):
            continue  # a family, e.g. ADP_RATE_LIMIT_*
        unknown.append(var)
    assert not unknown, f"not in .env.example: {unknown}"


def test_every_file_named_exists() -> None:
    named = set(re.findall(r"(?<![\w/.-])((?:deploy|scripts|docs|tests|libs|services)/[\w./-]*[\w/])", doc()))
    assert "deploy/prometheus/rules.yml" in named
    for path in named:
        if re.fullmatch(r"deploy/[a-z-]+", path) and not (REPO / path).exists():
            continue  # `kubectl ... deploy/<name>`: a Deployment, checked below
        assert (REPO / path).exists(), path
    for name in (".env.example", "docker-compose.yml"):
        assert name in doc() and (REPO / name).exists()


def test_compose_services_and_k8s_deployments_named_exist() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = set(compose["services"])
    verbs_all = {"restart", "stop", "start", "logs", "ps", "up", "pull", "top", "build"}
    checked = 0
    for text in command_texts():
        for m in re.finditer(r"docker compose ((?:[^`|#\n&])*)", text):
            try:
                argv = shlex.split(m.group(1).replace("<", "").replace(">", ""))
            except ValueError:
                argv = m.group(1).split()
            if not argv:
                continue
            verb, rest = argv[0], argv[1:]
            args: list[str] = []
            skip = False
            for i, tok in enumerate(rest):
                if skip:
                    skip = False
                    continue
                if tok in ("--tail", "--since", "--scale") and i + 1 < len(rest):
                    if tok == "--scale":
                        assert rest[i + 1].split("=")[0] in services, rest[i + 1]
                    skip = True
                    continue
                if tok.startswith("-"):
                    if tok.startswith("--scale="):
                        assert tok.split("=", 2)[1] in services, tok
                    continue
                args.append(tok)
            if verb in ("exec", "run"):
                assert args and args[0] in services, f"docker compose {m.group(1)}"
                checked += 1
            elif verb in verbs_all:
                for name in args:
                    assert name in services, f"docker compose {verb}: unknown service {name}"
                    checked += 1
    assert checked > 10
    k8s = yaml.safe_load_all((REPO / "deploy/k8s/base/dialogue.yaml").read_text())
    assert k8s
    deployments = {p.stem for p in (REPO / "deploy/k8s/base").glob("*.yaml")} | {"nats-box"}
    for name in re.findall(r"deploy/([a-z][a-z-]*)\b(?!/)", " ".join(command_texts())):
        if name in ("k8s",):
            continue
        assert name in deployments, f"kubectl deploy/{name}"


def test_dashboard_panels_alert_rules_and_sections_named_exist() -> None:
    import json

    from adp_alerts.rules import default_rules

    dashboard = json.loads((REPO / "deploy/grafana/dashboards/adp-overview.json").read_text())
    panels = {p["title"] for p in dashboard["panels"]}
    sections = set(headings(DOC)) | set(headings(REPO / "deploy/k8s/README.md"))
    _, prose = code_and_prose(doc())
    prose = re.sub(r"`[^`\n]*`", "", prose)
    prose = re.sub(r"\s+", " ", prose)  # a quoted name may be wrapped over two lines
    quoted = set(re.findall(r"\"([^\"]+)\"", prose))
    unknown = quoted - panels - sections - {dashboard["title"]}
    assert not unknown, f"quoted names that are neither a panel nor a section: {unknown}"
    assert len(quoted & panels) >= 15
    rules = {r.name for r in default_rules()}
    named: set[str] = set()
    for m in re.finditer(r"alert rules? ((?:`\w+`(?:,\s*|\s+then\s+|\s+and\s+|\s*\([^)]*\)\s*(?:then\s+)?)?)+)", doc()):
        named |= set(re.findall(r"`(\w+)`", m.group(1)))
    assert named == rules, f"rules named {named} vs defined {rules}"
    # runbook links from the Prometheus rules land on a section
    text = (REPO / "deploy/prometheus/rules.yml").read_text()
    slugs = {slug(h) for h in headings(DOC)}
    for anchor in re.findall(r"docs/operations\.md#([\w-]+)", text):
        assert anchor in slugs, anchor


def test_the_runbook_covers_every_procedure() -> None:
    sections = {h.lower() for h in headings(DOC)}
    for needed in (
        "monitoring and thresholds",
        "health checks",
        "log review",
        "service does not start or is unhealthy",
        "connection problems",
        "database problems",
        "provider errors and circuit breakers",
        "high error rate",
        "slow responses",
        "memory",
        "cost budget exceeded",
        "backups",
        "database and data recovery",
        "scaling",
        "updates",
        "emergencies",
        "fault rehearsal",
        "maintenance",
        "capacity planning",
    ):
        assert needed in sections, needed
    text = doc()
    for fact in (
        "below 5 %",
        "below 2 s",
        "error.log",
        "combined.log",
        "ADP_LOG_DIR",
        "**Horizontal**",
        "**Vertical**",
    ):
        assert fact in text, fact
