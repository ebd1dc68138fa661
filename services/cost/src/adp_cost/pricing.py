"""Prices per provider and model, and exact costing of a usage record (pure, no I/O except reading a file).

Money is integer nano-USD (1 USD = 10**9 nUSD). A price is USD per 1M tokens, so one token at price P costs
P * 1000 nUSD: exact for any price with up to three decimals (the usual granularity of provider price lists);
finer prices are rounded half-even to the nano-dollar per record.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

NANOS_PER_USD = 10**9
_NANO = Decimal("0.000000001")

PriceSource = Literal["model", "provider_default", "unknown_provider"]


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: Decimal
    output: Decimal

    def __post_init__(self) -> None:
        if self.input < 0 or self.output < 0:
            raise ValueError("prices must be >= 0")


@dataclass(frozen=True)
class ProviderPrices:
    default: Price
    models: dict[str, Price] = field(default_factory=dict)


# Defaults (USD per 1M input / output tokens). `simulated` costs nothing; its tokens are still recorded.
DEFAULT_PRICES: dict[str, ProviderPrices] = {
    "groq": ProviderPrices(Price(Decimal("0.27"), Decimal("0.27"))),
    "mistral": ProviderPrices(Price(Decimal("2.50"), Decimal("7.50"))),
    "openrouter": ProviderPrices(Price(Decimal("1.00"), Decimal("3.00"))),
    "simulated": ProviderPrices(Price(Decimal(0), Decimal(0))),
    "openai": ProviderPrices(
        Price(Decimal("2.50"), Decimal("10.00")),
        {
            "gpt-4o": Price(Decimal("2.50"), Decimal("10.00")),
            "gpt-4o-mini": Price(Decimal("0.15"), Decimal("0.60")),
            "gpt-4.1": Price(Decimal("2.00"), Decimal("8.00")),
            "gpt-4.1-mini": Price(Decimal("0.40"), Decimal("1.60")),
        },
    ),
    "anthropic": ProviderPrices(
        Price(Decimal("3.00"), Decimal("15.00")),
        {
            "claude-3-5-haiku-latest": Price(Decimal("0.80"), Decimal("4.00")),
            "claude-3-5-sonnet-latest": Price(Decimal("3.00"), Decimal("15.00")),
            "claude-sonnet-4-0": Price(Decimal("3.00"), Decimal("15.00")),
            "claude-opus-4-0": Price(Decimal("15.00"), Decimal("75.00")),
        },
    ),
    # Self-hosted OpenAI-compatible servers (Ollama, vLLM) cost nothing per token by default.
    "ollama": ProviderPrices(Price(Decimal(0), Decimal(0))),
    "vllm": ProviderPrices(Price(Decimal(0), Decimal(0))),
}


@dataclass(frozen=True)
class Priced:
    cost_nusd: int
    input_price: Decimal
    output_price: Decimal
    source: PriceSource


def cost_nusd(input_tokens: int, output_tokens: int, price: Price) -> int:
    """Exact cost in nano-USD (rounded half-even only for prices finer than 0.001 USD per 1M tokens)."""
    exact = (Decimal(input_tokens) * price.input + Decimal(output_tokens) * price.output) * 1000
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def nusd_to_usd(nusd: int) -> Decimal:
    return (Decimal(nusd) / NANOS_PER_USD).quantize(_NANO)


def usd_to_nusd(usd: Decimal) -> int:
    return int((usd * NANOS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


class PriceTable:
    """Lookup: exact model price, else the provider's default (flagged), else `*` or zero (flagged)."""

    def __init__(self, providers: Mapping[str, ProviderPrices], fallback: Price | None = None) -> None:
        self.providers = {k.lower(): v for k, v in providers.items()}
        self.fallback = fallback
        # (provider, model) -> (price, source, integer nUSD per input/output token or None when fractional)
        self._cache: dict[tuple[str, str], tuple[Price, PriceSource, int | None, int | None]] = {}

    def lookup(self, provider: str, model: str) -> tuple[Price, PriceSource]:
        pp = self.providers.get(provider.lower())
        if pp is None:
            return (self.fallback or Price(Decimal(0), Decimal(0))), "unknown_provider"
        price = pp.models.get(model)
        if price is None and "/" in model:  # "provider/model" routes: try the bare model name
            price = pp.models.get(model.split("/", 1)[1])
        if price is not None:
            return price, "model"
        return pp.default, "provider_default"

    def price(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> Priced:
        hit = self._cache.get((provider, model))
        if hit is None:
            price, source = self.lookup(provider, model)
            hit = (price, source, _per_token(price.input), _per_token(price.output))
            if len(self._cache) < 10_000:
                self._cache[(provider, model)] = hit
        price, source, per_in, per_out = hit
        tin, tout = max(input_tokens, 0), max(output_tokens, 0)
        if per_in is not None and per_out is not None:  # integer fast path, same result as cost_nusd()
            return Priced(tin * per_in + tout * per_out, price.input, price.output, source)
        return Priced(cost_nusd(tin, tout, price), price.input, price.output, source)


def _per_token(usd_per_m: Decimal) -> int | None:
    """nUSD per token when that is a whole number (prices with up to 3 decimals), else None."""
    per = usd_per_m * 1000
    return int(per) if per == per.to_integral_value() else None


# ---- configuration --------------------------------------------------------------------------------------


class PriceConfigError(ValueError):
    pass


def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        value = repr(value)  # "0.27", not the binary expansion
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise PriceConfigError(f"{where}: not a number: {value!r}") from None
    if not d.is_finite() or d < 0:
        raise PriceConfigError(f"{where}: must be a finite number >= 0: {value!r}")
    return d


def _price(obj: Any, where: str, base: Price | None = None) -> Price:
    if not isinstance(obj, Mapping):
        raise PriceConfigError(f"{where}: expected a table with 'input' and 'output'")
    if base is None and ("input" not in obj or "output" not in obj):
        raise PriceConfigError(f"{where}: needs both 'input' and 'output'")
    # without a base both are present (checked above)
    inp = _dec(obj["input"], f"{where}.input") if "input" in obj or base is None else base.input
    out = _dec(obj["output"], f"{where}.output") if "output" in obj or base is None else base.output
    return Price(inp, out)


def merge_config(
    base: Mapping[str, ProviderPrices], cfg: Mapping[str, Any], where: str
) -> tuple[dict[str, ProviderPrices], Price | None]:
    """Merge a parsed config ({"providers": {name: {input, output, models: {m: {input, output}}}}, "fallback"})."""
    out = dict(base)
    providers = cfg.get("providers", {})
    if not isinstance(providers, Mapping):
        raise PriceConfigError(f"{where}: 'providers' must be a table")
    for name, entry in providers.items():
        key = str(name).lower()
        at = f"{where}: providers.{name}"
        if not isinstance(entry, Mapping):
            raise PriceConfigError(f"{at}: expected a table")
        old = out.get(key)
        default_src = {k: entry[k] for k in ("input", "output") if k in entry}
        if default_src:
            default = _price(default_src, at, old.default if old else None)
        elif old is not None:
            default = old.default
        else:
            raise PriceConfigError(f"{at}: a new provider needs 'input' and 'output'")
        models = dict(old.models) if old else {}
        raw_models = entry.get("models", {})
        if not isinstance(raw_models, Mapping):
            raise PriceConfigError(f"{at}.models: expected a table")
        for model, mp in raw_models.items():
            models[str(model)] = _price(mp, f"{at}.models.{model}", models.get(str(model)))
        out[key] = ProviderPrices(default, models)
    fallback = _price(cfg["fallback"], f"{where}: fallback") if "fallback" in cfg else None
    return out, fallback


def parse_config_text(text: str, fmt: Literal["json", "toml"], where: str) -> dict[str, Any]:
    try:
        return json.loads(text) if fmt == "json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise PriceConfigError(f"{where}: cannot parse {fmt.upper()}: {err}") from None


def load_price_table(
    file: str | None = None, override_json: str | None = None, environ: Mapping[str, str] | None = None
) -> PriceTable:
    """Defaults, then the config file (JSON or TOML by extension), then `ADP_COST_PRICES` (JSON), then
    `ADP_COST_PRICE_<PROVIDER>=<input>,<output>` variables (provider default prices)."""
    env = os.environ if environ is None else environ
    providers: dict[str, ProviderPrices] = dict(DEFAULT_PRICES)
    fallback: Price | None = None
    if file:
        path = Path(file)
        if not path.is_file():
            raise PriceConfigError(f"ADP_COST_PRICES_FILE: no such file {file}")
        fmt: Literal["json", "toml"] = "toml" if path.suffix.lower() == ".toml" else "json"
        providers, fb = merge_config(providers, parse_config_text(path.read_text(), fmt, str(path)), str(path))
        fallback = fb or fallback
    if override_json:
        providers, fb = merge_config(
            providers, parse_config_text(override_json, "json", "ADP_COST_PRICES"), "ADP_COST_PRICES"
        )
        fallback = fb or fallback
    for var, value in env.items():
        if not var.startswith("ADP_COST_PRICE_"):
            continue
        name = var.removeprefix("ADP_COST_PRICE_").lower()
        parts = [p.strip() for p in value.replace("/", ",").split(",")]
        if len(parts) != 2:
            raise PriceConfigError(f"{var}: expected '<input>,<output>' USD per 1M tokens, got {value!r}")
        price = Price(_dec(parts[0], var), _dec(parts[1], var))
        old = providers.get(name)
        providers[name] = ProviderPrices(price, dict(old.models) if old else {})
    return PriceTable(providers, fallback)
