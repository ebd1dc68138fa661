"""Provider catalogue and routes (pure: built from settings and an environment mapping, no I/O but the
optional config file read in `load_config`).

A route is an ordered fallback chain of `provider/model` entries. Requests name a route (persona such as
'analyzer', a route name, a model name, or an explicit 'provider/model').
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError

from adp_common.settings import ConfigError

SIMULATED = "simulated"
SIMULATED_PERSONAS = ("analyzer", "solver", "moderator", "default")

ProviderKind = Literal["openai", "anthropic", "simulated"]


class ProviderConfig(BaseModel):
    name: str
    kind: ProviderKind = "openai"
    base_url: str = ""
    api_key: SecretStr | None = Field(default=None, description="prefer api_key_env; never logged")
    api_key_env: str | None = Field(default=None, description="env var with the key (default ADP_<NAME>_API_KEY)")
    requires_key: bool = True
    timeout_s: float = Field(default=60.0, gt=0)
    models: list[str] = Field(default_factory=list)
    free: bool = Field(default=False, description="costs nothing (local/simulated): allowed over budget")
    headers: dict[str, str] = Field(default_factory=dict)
    enabled: bool | None = Field(default=None, description="None: enabled when its key is set")


BUILTIN_PROVIDERS: dict[str, dict[str, Any]] = {
    "groq": {
        "kind": "openai",
        "base_url": "https://api.groq.com/openai/v1",
        "timeout_s": 60,
        "models": ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"],
    },
    "mistral": {
        "kind": "openai",
        "base_url": "https://api.mistral.ai/v1",
        "timeout_s": 90,
        "models": ["mistral-large-latest", "mistral-small-latest"],
    },
    "openrouter": {
        "kind": "openai",
        "base_url": "https://openrouter.ai/api/v1",
        "timeout_s": 120,
        "models": ["meta-llama/llama-3.3-70b-instruct", "mistralai/mistral-small-3.1-24b-instruct"],
    },
    "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "timeout_s": 60, "models": ["gpt-4o-mini"]},
    "anthropic": {
        "kind": "anthropic",
        "base_url": "https://api.anthropic.com",
        "timeout_s": 90,
        "models": ["claude-3-5-haiku-latest", "claude-sonnet-4-20250514"],
    },
}

# The original platform's cast: Solver -> Groq, Analyzer -> Mistral, everyone falls back to OpenRouter.
DEFAULT_ROUTES: dict[str, list[str]] = {
    "analyzer": ["mistral/mistral-large-latest", "openrouter/meta-llama/llama-3.3-70b-instruct"],
    "solver": ["groq/llama-3.3-70b-versatile", "openrouter/meta-llama/llama-3.3-70b-instruct"],
    "moderator": [
        "groq/llama-3.3-70b-versatile",
        "mistral/mistral-large-latest",
        "openrouter/meta-llama/llama-3.3-70b-instruct",
    ],
    "default": [
        "groq/llama-3.3-70b-versatile",
        "mistral/mistral-large-latest",
        "openrouter/meta-llama/llama-3.3-70b-instruct",
        "openai/gpt-4o-mini",
        "anthropic/claude-3-5-haiku-latest",
    ],
}


@dataclass(frozen=True)
class RouteEntry:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class ResolvedProvider:
    config: ProviderConfig
    api_key: str | None

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class RouterConfig:
    providers: dict[str, ResolvedProvider]  # enabled providers only (simulated included when in use)
    routes: dict[str, list[RouteEntry]]  # filtered to enabled providers
    simulated_only: bool

    @property
    def real_providers(self) -> list[str]:
        return [n for n, p in self.providers.items() if p.config.kind != "simulated"]

    def resolve(self, route: str, persona: str | None = None) -> list[RouteEntry]:
        """The fallback chain for a request (see module docstring for the lookup order)."""
        key = (route or "default").strip()
        low = key.lower()
        pers = (persona or "").strip().lower()
        if self.simulated_only:
            return [RouteEntry(SIMULATED, simulated_model(low, pers))]
        # explicit provider/model
        if "/" in key:
            prov, model = key.split("/", 1)
            if prov in self.providers:
                cfg = self.providers[prov].config
                full = key if key in cfg.models else model
                return [RouteEntry(prov, full)]
        if self.routes.get(low):
            return list(self.routes[low])
        for name, p in self.providers.items():
            if key in p.config.models:
                return [RouteEntry(name, key)]
        if pers and self.routes.get(pers):
            return list(self.routes[pers])
        return list(self.routes.get("default", []))

    def accepts(self, route: str) -> bool:
        """Whether `route` names something: a route, `provider/model` of an enabled provider, or a model an
        enabled provider lists (`resolve` serves anything else by the default route)."""
        key = route.strip()
        if key.lower() in self.routes:
            return True
        if "/" in key and key.split("/", 1)[0] in self.providers:
            return True
        return any(key in p.config.models for p in self.providers.values())


def simulated_model(route: str, persona: str = "") -> str:
    route = route.lower()
    if route.startswith("simulated/") and route.split("/", 1)[1] in SIMULATED_PERSONAS:
        return route
    for cand in (route, persona.lower()):
        if cand in SIMULATED_PERSONAS:
            return f"simulated/{cand}"
    return "simulated/default"


def parse_entry(text: str, known: Mapping[str, Any]) -> RouteEntry:
    if "/" not in text:
        raise ValueError(f"route entry {text!r} must be 'provider/model'")
    prov, model = text.split("/", 1)
    if prov not in known:
        raise ValueError(f"route entry {text!r} names unknown provider {prov!r}")
    return RouteEntry(prov, model)


def _key_for(cfg: ProviderConfig, env: Mapping[str, str]) -> str | None:
    if cfg.api_key is not None and cfg.api_key.get_secret_value():
        return cfg.api_key.get_secret_value()
    names = [cfg.api_key_env] if cfg.api_key_env else []
    upper = cfg.name.upper().replace("-", "_")
    names += [f"ADP_{upper}_API_KEY", f"{upper}_API_KEY"]
    for n in names:
        if n and env.get(n):
            return env[n]
    return None


def _provider_configs(providers_json: Mapping[str, Any] | None) -> tuple[dict[str, ProviderConfig], set[str]]:
    """Built-in providers with the user's overrides merged in (the simulated one apart), and the names the
    user configured."""
    raw: dict[str, dict[str, Any]] = {n: dict(v) for n, v in BUILTIN_PROVIDERS.items()}
    user_defined: set[str] = set()
    for name, over in (providers_json or {}).items():
        if not isinstance(over, dict):
            raise ValueError(f"provider {name!r}: config must be an object")
        raw.setdefault(name, {}).update(over)
        user_defined.add(name)
    configs: dict[str, ProviderConfig] = {}
    for name, data in raw.items():
        if name == SIMULATED:
            continue
        try:
            configs[name] = ProviderConfig(name=name, **data)
        except ValidationError as err:
            raise ValueError(f"provider {name!r}: {err.errors()[0]['msg']}") from None
    return configs, user_defined


def _routes(
    routes_json: Mapping[str, list[str]] | None,
    known: Mapping[str, ProviderConfig],
    enabled: Mapping[str, ResolvedProvider],
    simulated_only: bool,
) -> dict[str, list[RouteEntry]]:
    """Default routes with the user's merged in, each kept to enabled providers; an empty route (and a
    missing default) falls back to the first model of every real provider enabled."""
    route_src: dict[str, list[str]] = {k: list(v) for k, v in DEFAULT_ROUTES.items()}
    for name, chain in (routes_json or {}).items():
        if not isinstance(chain, list) or not all(isinstance(x, str) for x in chain):
            raise ValueError(f"route {name!r}: must be a list of 'provider/model' strings")
        route_src[name.lower()] = chain
    routes: dict[str, list[RouteEntry]] = {}
    for name, chain in route_src.items():
        entries = [parse_entry(e, known) for e in chain]
        routes[name] = [e for e in entries if e.provider in enabled]
    if not routes.get("default") and not simulated_only:
        routes["default"] = [
            RouteEntry(n, p.config.models[0])
            for n, p in enabled.items()
            if p.config.kind != "simulated" and p.config.models
        ]
    for name in list(routes):
        if not routes[name]:
            routes[name] = list(routes.get("default", []))
    return routes


def build_config(
    *,
    providers_json: Mapping[str, Any] | None = None,
    routes_json: Mapping[str, list[str]] | None = None,
    env: Mapping[str, str] | None = None,
    simulated: str = "auto",
) -> RouterConfig:
    """Merge built-ins with user provider/route config, resolve keys from `env`, drop disabled providers."""
    env = env or {}
    all_cfgs, user_defined = _provider_configs(providers_json)
    enabled: dict[str, ResolvedProvider] = {}
    for name, cfg in all_cfgs.items():
        key = _key_for(cfg, env)
        keyless = not cfg.requires_key or cfg.kind == SIMULATED  # further simulated providers need no key
        on = cfg.enabled if cfg.enabled is not None else (key is not None or (keyless and name in user_defined))
        if on and simulated != "always":
            enabled[name] = ResolvedProvider(cfg, key)
    sim_cfg = ProviderConfig(
        name=SIMULATED,
        kind="simulated",
        requires_key=False,
        free=True,
        timeout_s=600,
        models=[f"simulated/{p}" for p in SIMULATED_PERSONAS],
    )
    simulated_only = simulated == "always" or (simulated == "auto" and not enabled)
    if simulated != "never":
        enabled[SIMULATED] = ResolvedProvider(sim_cfg, None)
    known = {**all_cfgs, SIMULATED: sim_cfg}
    routes = _routes(routes_json, known, enabled, simulated_only)
    return RouterConfig(providers=enabled, routes=routes, simulated_only=simulated_only)


def load_config(settings: Any, env: Mapping[str, str]) -> RouterConfig:
    """Build the RouterConfig from RouterSettings; a bad config stops the service naming the variable."""
    providers: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    var = "ADP_ROUTER_CONFIG_FILE"
    try:
        if settings.router_config_file:
            data = json.loads(Path(settings.router_config_file).read_text())
            providers.update(data.get("providers", {}))
            routes.update(data.get("routes", {}))
        var = "ADP_ROUTER_PROVIDERS"
        if settings.router_providers.strip():
            for name, over in json.loads(settings.router_providers).items():
                providers.setdefault(name, {}).update(over)
        var = "ADP_ROUTER_ROUTES"
        if settings.router_routes.strip():
            routes.update(json.loads(settings.router_routes))
        var = "ADP_ROUTER_PROVIDERS/ADP_ROUTER_ROUTES"
        return build_config(providers_json=providers, routes_json=routes, env=env, simulated=settings.router_simulated)
    except (OSError, ValueError, AttributeError, TypeError) as err:
        raise ConfigError(f"Invalid configuration {var}: {err}") from None
