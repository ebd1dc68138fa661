"""docker-compose.yml, Dockerfile and .env.example checked without a Docker engine.

The compose file is interpolated the way `docker compose` does (with the values of .env.example), validated
against the Compose specification's JSON schema (vendored from the compose-spec project, see
LICENSE.compose-spec), and then checked for what the schema cannot see: builds, commands, health checks and
dependencies resolve; scalable services publish no fixed host ports; every file mounted exists; every
variable the services' settings classes read is documented in .env.example.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from adp_cli.procs import SERVICES
from adp_common.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APP_SERVICES = list(SERVICES)  # gateway, dialogue, llm-router, cost, alerts
SCALABLE = ["llm-router", "dialogue", "cost", "alerts"]
MAY_PUBLISH = {"gateway", "grafana", "jaeger", "prometheus"}
DB_SERVICES = {"gateway", "dialogue", "cost", "alerts"}
SETTINGS_MODULES = {
    "gateway": "adp_gateway.settings",
    "dialogue": "adp_dialogue.settings",
    "llm-router": "adp_router.settings",
    "cost": "adp_cost.settings",
    "alerts": "adp_alerts.settings",
}


# ---------------------------------------------------------------------------------------------- helpers
def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        values[key.strip()] = value.strip()
    return values


def documented_vars(path: Path) -> set[str]:
    """Variables set or shown (commented `# NAME=default`) in an env file."""
    return set(re.findall(r"^\s*(?:#\s*)?([A-Z][A-Z0-9_]*)=", path.read_text(), re.M))


_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")


class InterpolationError(ValueError):
    pass


def interpolate_str(text: str, env: dict[str, str]) -> str:
    """Compose interpolation: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$."""

    def repl(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        if m.group("plain"):
            return env.get(m.group("plain"), "")
        body = m.group("braced")
        op = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$", body, re.S)
        if not op:
            raise InterpolationError(f"invalid interpolation ${{{body}}}")
        name, kind, arg = op.group(1), op.group(2), op.group(3) or ""
        value = env.get(name)
        if kind is None:
            return value or ""
        if kind == ":-":
            return value if value else interpolate_str(arg, env)
        if kind == "-":
            return value if value is not None else interpolate_str(arg, env)
        if kind == ":?":
            if not value:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value
        if kind == "?":
            if value is None:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value
        if kind == ":+":
            return interpolate_str(arg, env) if value else ""
        return interpolate_str(arg, env) if value is not None else ""

    return _VAR.sub(repl, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_str(node, env)
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    return node


def env_example() -> dict[str, str]:
    return parse_env_file(REPO / ".env.example")


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw, env_example())


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def settings_classes() -> dict[str, type[ServiceSettings]]:
    found = {}
    for service, module_name in SETTINGS_MODULES.items():
        module = importlib.import_module(module_name)
        classes = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, ServiceSettings) and obj.__module__ == module.__name__
        ]
        assert len(classes) == 1, f"{module_name}: expected one ServiceSettings subclass, found {classes}"
        found[service] = classes[0]
    return found


# ---------------------------------------------------------------------------------------------- the spec
def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((HERE / "compose-spec.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:20])


def test_the_schema_check_catches_mistakes(compose: dict[str, Any]) -> None:
    """The validation above can fail: a misspelt key or a wrong type is reported."""
    schema = json.loads((HERE / "compose-spec.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    broken = json.loads(json.dumps(compose))
    broken["services"]["cost"]["healthcheck"]["retrys"] = 3
    broken["services"]["gateway"]["depends_on"]["nats"]["condition"] = "service_ready"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_interpolation_needs_the_secrets(raw: dict[str, Any]) -> None:
    env = env_example()
    env.pop("POSTGRES_PASSWORD")
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        interpolate(raw, env)


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose plugin not installed",
)
def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((REPO / ".env.example").read_text())
    result = subprocess.run(
        ["docker", "compose", "--env-file", str(env), "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------- services
def test_every_platform_service_is_defined_with_its_entry_point(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scripts: dict[str, str] = {}
    for pyproject in [*REPO.glob("services/*/pyproject.toml"), *REPO.glob("libs/*/pyproject.toml")]:
        scripts.update(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    for name in APP_SERVICES:
        assert name in services, f"{name} missing from docker-compose.yml"
        svc = services[name]
        command = svc["command"]
        assert command[0] in scripts, f"{name}: command {command[0]} is not a console script"
        module = scripts[command[0]].split(":")[0]
        assert module == SERVICES[name], f"{name}: {command[0]} runs {module}, expected {SERVICES[name]}"
        assert svc["build"]["context"] == "."
        assert (REPO / svc["build"].get("dockerfile", "Dockerfile")).is_file()
        assert svc["restart"] in ("unless-stopped", "always", "on-failure")
        limits = svc["deploy"]["resources"]["limits"]
        assert limits.get("memory") and limits.get("cpus")
        env = _environment(svc)
        assert env["ADP_NATS_URL"] == "nats://nats:4222"
        assert env["ADP_HTTP_HOST"] == "0.0.0.0"
        if name in DB_SERVICES:
            assert (
                env["ADP_DATABASE_URL"].startswith("postgresql://adp:") and "@postgres:5432/" in env["ADP_DATABASE_URL"]
            )
            assert env["ADP_DATABASE_NAME"] == name
        env_files = svc["env_file"]
        assert any((e["path"] if isinstance(e, dict) else e) == ".env" for e in env_files)


def test_health_checks_hit_the_admin_port(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        svc = compose["services"][name]
        port = _environment(svc)["ADP_HTTP_PORT"]
        test = " ".join(svc["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/health" in test, name
    for name in ("nats", "postgres", "redis"):
        assert compose["services"][name]["healthcheck"]["test"], name


def test_dependencies_resolve_and_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        graph[name] = set(deps)
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                hc = services[dep].get("healthcheck")
                assert hc and not hc.get("disable"), f"{name} waits for {dep} to be healthy, but it has no health check"
    # no cycles
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 1:
            raise AssertionError(f"dependency cycle: {' -> '.join([*path, n])}")
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in graph[n]:
            visit(d, [*path, n])
        state[n] = 2

    for n in graph:
        visit(n, [])
    # the platform services wait for healthy NATS (and PostgreSQL when they have a database)
    for name in APP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["nats"]["condition"] == "service_healthy", name
        if name in DB_SERVICES:
            assert deps["postgres"]["condition"] == "service_healthy", name


def test_scaled_services_publish_no_fixed_ports(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if svc.get("ports"):
            assert name in MAY_PUBLISH, f"{name} publishes ports: it could not run as several copies"
        assert "container_name" not in svc, f"{name}: container_name prevents --scale"
    for name in SCALABLE:
        assert not compose["services"][name].get("ports")
        assert not compose["services"][name].get("container_name")


def test_mounted_files_exist_and_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol["source"]
            if source.startswith("."):
                if source == "./backups":
                    continue  # created by the operator's first backup
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    nats = compose["services"]["nats"]
    assert nats["command"] == ["--config", "/etc/nats/single.conf"]
    assert "jetstream" in (REPO / "deploy/nats/single.conf").read_text()
    assert any(v.endswith(":/data") for v in nats["volumes"]) and "./deploy/nats:/etc/nats:ro" in nats["volumes"]
    assert "8222" in [str(p) for p in nats["expose"]]


# ---------------------------------------------------------------------------------------------- NATS cluster
CLUSTER_ENV = {
    "COMPOSE_PROFILES": "nats-cluster",
    "NATS_CONFIG": "cluster",
    "NATS_CLIENT_URLS": "nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222",
    "ADP_STREAM_REPLICAS": "3",
}


def test_env_example_shows_the_three_server_settings() -> None:
    text = (REPO / ".env.example").read_text()
    for key, value in CLUSTER_ENV.items():
        assert f"# {key}={value}" in text, key


@pytest.mark.parametrize("config", ["single", "cluster"])
def test_nats_config_files_are_valid_for_nats_server(config: str) -> None:
    from adp_cli.servers import nats_server_binary

    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server binary not found")
    path = REPO / "deploy/nats" / f"{config}.conf"
    env = {"NATS_SERVER_NAME": "nats-1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([binary, "-t", "-c", str(path)], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr


def test_three_server_nats_profile(raw: dict[str, Any]) -> None:
    """With the four .env lines the compose file still matches the specification, and the three servers route to
    each other, keep separate stores, and every service is given all three."""
    from adp_common.bus import server_urls

    compose = interpolate(raw, {**env_example(), **CLUSTER_ENV})
    schema = json.loads((HERE / "compose-spec.schema.json").read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(compose))
    assert not errors, errors[:5]
    servers = {name: compose["services"][name] for name in ("nats", "nats-2", "nats-3")}
    assert {tuple(s["command"]) for s in servers.values()} == {("--config", "/etc/nats/cluster.conf")}
    assert "profiles" not in servers["nats"]
    assert servers["nats-2"]["profiles"] == servers["nats-3"]["profiles"] == ["nats-cluster"]
    names = {s["environment"]["NATS_SERVER_NAME"] for s in servers.values()}
    stores = {v for s in servers.values() for v in s["volumes"] if v.endswith(":/data")}
    assert len(names) == len(stores) == 3
    assert all(v.split(":")[0] in compose["volumes"] for v in stores)
    conf = (REPO / "deploy/nats/cluster.conf").read_text()
    assert set(re.findall(r"nats://([\w-]+):6222", conf)) == set(servers)
    assert "include ./single.conf" in conf
    for name in APP_SERVICES:
        urls = server_urls(_environment(compose["services"][name])["ADP_NATS_URL"])
        assert {u.split("//")[1].split(":")[0] for u in urls} == set(servers), name
    assert CLUSTER_ENV["NATS_CLIENT_URLS"] == compose["services"]["nats-box"]["environment"]["NATS_URL"]


def test_postgres_init_creates_one_database_per_service() -> None:
    sql = (REPO / "deploy/postgres/init-databases.sql").read_text()
    names = set(re.findall(r"'(\w+)'", sql.split("FROM unnest")[1].split(")")[0]))
    assert names == DB_SERVICES


async def test_postgres_init_script_runs(pg_dsn: str, tmp_path: Path) -> None:
    """The init script is valid SQL for psql and idempotent (run against a scratch copy of it)."""
    if shutil.which("psql") is None:
        pytest.skip("psql not installed")
    from adp_common import db

    tag = tmp_path.name.replace("-", "_").lower()[-12:]
    names = [f"{base}_init_{tag}" for base in sorted(DB_SERVICES)]
    sql = (REPO / "deploy/postgres/init-databases.sql").read_text()
    for base, name in zip(sorted(DB_SERVICES), names, strict=True):
        sql = sql.replace(f"'{base}'", f"'{name}'")
    script = tmp_path / "init.sql"
    script.write_text(sql)
    try:
        for _ in range(2):
            result = subprocess.run(
                [
                    "psql",
                    "--no-psqlrc",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                    "-f",
                    str(script),
                    db.with_database(pg_dsn, "postgres"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
        import asyncpg

        conn = await asyncpg.connect(db.with_database(pg_dsn, "postgres"))
        try:
            found = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()
        assert set(names) <= found
    finally:
        for name in names:
            await db.drop_database(pg_dsn, name)


# ---------------------------------------------------------------------------------------------- observability
def test_prometheus_scrapes_every_copy_of_every_service(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "adp-services")
    sd = job["dns_sd_configs"][0]
    assert set(sd["names"]) == set(APP_SERVICES)
    assert sd["type"] == "A"
    ports = {_environment(compose["services"][s])["ADP_HTTP_PORT"] for s in APP_SERVICES}
    assert ports == {str(sd["port"])}
    targets = {t for j in prom["scrape_configs"] for c in j.get("static_configs", []) for t in c["targets"]}
    for target in targets:
        host = target.split(":")[0]
        assert host == "localhost" or host in compose["services"], f"scrape target {target} is not a service"
    rules = yaml.safe_load((REPO / "deploy/prometheus/rules.yml").read_text())
    exprs = {r.get("alert") or r.get("record"): r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert "> 0.05" in exprs["AdpHighErrorRate"] and "> 2" in exprs["AdpSlowResponses"]


def test_otel_collector_exports_to_jaeger(compose: dict[str, Any]) -> None:
    cfg = yaml.safe_load((REPO / "deploy/otel/collector.yaml").read_text())
    pipeline = cfg["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"]
    exporter = pipeline["exporters"][0]
    assert cfg["exporters"][exporter]["endpoint"].split(":")[0] == "jaeger"
    for name in pipeline["processors"]:
        assert name in cfg["processors"]
    for name in APP_SERVICES:
        endpoint = _environment(compose["services"][name])["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "http://otel-collector:4318"
    assert compose["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    prov = REPO / "deploy/grafana/provisioning"
    sources = yaml.safe_load((prov / "datasources/datasources.yaml").read_text())["datasources"]
    uids = {s["uid"] for s in sources}
    providers = yaml.safe_load((prov / "dashboards/dashboards.yaml").read_text())["providers"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.endswith(":" + providers[0]["options"]["path"] + ":ro") for m in mounts)
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/adp-overview.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    for needed in (
        "Request rate",
        "Error rate (5xx %)",
        "p95 latency",
        "Active discussions",
        "Tokens by provider (selected range)",
        "Cost by provider (USD, selected range)",
        "Circuit breakers",
        "Alerts firing",
    ):
        assert needed in titles, needed
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]


# ---------------------------------------------------------------------------------------------- .env.example
def test_env_example_documents_every_setting() -> None:
    documented = documented_vars(REPO / ".env.example")
    missing = []
    for service, cls in settings_classes().items():
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            var = f"{prefix}{name}".upper()
            alias = field.validation_alias
            if isinstance(alias, str):
                var = alias.upper()
            if var not in documented:
                missing.append(f"{var} ({service})")
    assert not missing, "not in .env.example (run deploy/gen_env_example.py): " + ", ".join(missing)


def test_env_example_documents_provider_keys_and_compose_variables(raw: dict[str, Any]) -> None:
    documented = documented_vars(REPO / ".env.example")
    from adp_router.config import BUILTIN_PROVIDERS

    for provider in BUILTIN_PROVIDERS:
        if provider != "simulated":
            assert f"ADP_{provider.upper().replace('-', '_')}_API_KEY" in documented
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (REPO / "docker-compose.yml").read_text()))
    assert used - documented == set(), f"compose variables not in .env.example: {used - documented}"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in documented


def test_env_example_is_a_valid_env_file() -> None:
    values = env_example()
    assert values["POSTGRES_PASSWORD"] and values["GRAFANA_ADMIN_PASSWORD"]
    # every line is a comment, blank, or KEY=VALUE (parse_env_file asserts it); secrets are placeholders
    assert all(v.startswith("change-me") for k, v in values.items() if "PASSWORD" in k or k.endswith("_API_KEY"))


# ---------------------------------------------------------------------------------------------- image
def test_dockerfile_is_multi_stage_pinned_locked_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    froms = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.M)
    assert len(froms) >= 2, "multi-stage build expected"
    for image, _ in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert ":" in resolved and not resolved.endswith(":latest"), f"unpinned base {resolved}"
        assert re.search(r":\d+\.\d+\.\d+", resolved), f"base image not pinned to a patch version: {resolved}"
    assert re.search(r"uv==\$\{UV_VERSION\}", text) and re.fullmatch(r"\d+\.\d+\.\d+", args["UV_VERSION"])
    assert "uv sync --frozen --no-dev --all-packages" in text
    assert re.search(r"^USER 10001", text, re.M)
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY --from=build" in runtime and "uv " not in runtime.replace("uv.lock", "")
    # every COPY source exists, every workspace member's pyproject is copied in the dependency layer
    for src in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+(?: \S+)*) \S+$", text, re.M):
        for part in src.split():
            assert (REPO / part).exists(), f"COPY source {part} missing"
    members = {str(p.relative_to(REPO)) for p in REPO.glob("libs/*/pyproject.toml")} | {
        str(p.relative_to(REPO)) for p in REPO.glob("services/*/pyproject.toml")
    }
    copied = set(re.findall(r"^COPY ((?:libs|services)/[\w-]+/pyproject\.toml)", text, re.M))
    assert members == copied, f"pyproject files not copied: {members - copied}"


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    import fnmatch

    def ignored(path: str) -> bool:
        result = False
        for pat in patterns:
            negate = pat.startswith("!")
            pat = pat.lstrip("!").removeprefix("**/")
            parts = path.split("/")
            hit = any(
                fnmatch.fnmatch("/".join(parts[i:j]), pat)
                for i in range(len(parts))
                for j in range(i + 1, len(parts) + 1)
            )
            if hit:
                result = not negate
        return result

    for needed in [
        "pyproject.toml",
        "uv.lock",
        "libs/common/src/adp_common/bus/wire.py",
        "services/cost/pyproject.toml",
    ]:
        assert not ignored(needed), needed
    for migration in REPO.glob("services/*/src/*/migrations/*.sql"):
        assert not ignored(str(migration.relative_to(REPO))), migration
    for junk in [".venv/bin/python", ".git/config", ".env", "libs/common/tests/test_bus.py"]:
        assert ignored(junk), junk
