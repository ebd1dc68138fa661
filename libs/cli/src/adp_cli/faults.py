"""`adp faults`: inject faults into simulated providers to rehearse failure procedures on an offline platform.

Faults live in the KV bucket `faults` (one entry per simulated provider name); every router copy watches it,
so a change applies to the next call on every copy. `--fake-provider URL` sends the same fault to the test
kit's fake provider server instead (its `PUT /_provider_fault`).

    adp faults                                  # faults in force (exit 1 when any)
    adp faults simulated --outage               # every call fails with 503
    adp faults simulated --error-rate 0.3 --rate-limit-rate 0.2 --retry-after 2 --latency-ms 800
    adp faults simulated --stall-rate 1 --stall-s 20
    adp faults simulated --clear                # back to normal (--clear alone: every provider)
"""

from __future__ import annotations

import argparse
import contextlib

import httpx
from nats.js.errors import KeyNotFoundError
from pydantic import ValidationError

from adp_cli.cli_common import command, connect_bus, connection_options, print_json, read_kv
from adp_cli.tables import table
from adp_common.catalog import KV_FAULTS
from adp_common.schemas.faults import ProviderFault, ProviderFaultEntry, ProviderFaultList

FAULT_FIELDS = ("outage", "error_rate", "rate_limit_rate", "retry_after_s", "latency_ms", "stall_rate", "stall_s")


def fault_from_args(args: argparse.Namespace) -> ProviderFault | None:
    """The fault the options describe, or None when no fault option was given."""
    given = {f: getattr(args, f) for f in FAULT_FIELDS if getattr(args, f) not in (None, False)}
    return ProviderFault.model_validate(given) if given else None


def describe(fault: ProviderFault) -> str:
    parts = ["outage"] if fault.outage else []
    if fault.error_rate:
        parts.append(f"errors {fault.error_rate:.0%}")
    if fault.rate_limit_rate:
        parts.append(f"429 {fault.rate_limit_rate:.0%} (Retry-After {fault.retry_after_s:g}s)")
    if fault.latency_ms:
        parts.append(f"+{fault.latency_ms:g} ms")
    if fault.stall_rate:
        parts.append(f"stalls {fault.stall_rate:.0%} ({fault.stall_s:g}s)")
    return ", ".join(parts) or "none"


def render(faults: ProviderFaultList) -> str:
    if not faults.faults:
        return "no faults injected"
    return table(["PROVIDER", "FAULT"], [[e.provider, describe(e.fault)] for e in faults.faults])


async def _on_fake_provider(args: argparse.Namespace, fault: ProviderFault | None) -> ProviderFaultList:
    url = args.fake_provider.rstrip("/") + "/_provider_fault"
    async with httpx.AsyncClient(timeout=args.timeout) as client:
        if args.clear:
            resp = await client.delete(url)
        elif fault is not None:
            resp = await client.put(url, json=fault.model_dump())
        else:
            resp = await client.get(url)
        resp.raise_for_status()
    current = ProviderFault.model_validate(resp.json())
    name = args.provider or "fake"
    return ProviderFaultList(faults=[ProviderFaultEntry(provider=name, fault=current)] if current.active else [])


async def _in_kv(args: argparse.Namespace, fault: ProviderFault | None) -> ProviderFaultList:
    bus = await connect_bus(args)
    try:
        kv = await bus.kv(KV_FAULTS)
        if args.clear:
            names = [args.provider] if args.provider else list(await read_kv(bus, KV_FAULTS))
            for name in names:
                with contextlib.suppress(KeyNotFoundError):
                    await kv.delete(name)
        elif fault is not None:
            await kv.put(args.provider, fault.model_dump_json().encode())
        entries = []
        for name, raw in sorted((await read_kv(bus, KV_FAULTS)).items()):
            with contextlib.suppress(ValueError):
                entries.append(ProviderFaultEntry(provider=name, fault=ProviderFault.model_validate_json(raw)))
        return ProviderFaultList(faults=entries)
    finally:
        await bus.close(grace=1)


async def _faults(args: argparse.Namespace) -> int:
    try:
        fault = fault_from_args(args)
    except ValidationError as err:
        print(f"error: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}")
        return 2
    if fault is not None and not args.provider and not args.fake_provider:
        print("error: name the simulated provider to inject the fault into, e.g. `adp faults simulated --outage`")
        return 2
    if args.clear and fault is not None:
        print("error: --clear takes no fault options")
        return 2
    result = await (_on_fake_provider(args, fault) if args.fake_provider else _in_kv(args, fault))
    if args.json:
        print_json(result.model_dump(mode="json"))
    else:
        print(render(result))
    changed = args.clear or fault is not None
    return 0 if changed or not result.faults else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faults", help="inject faults into simulated providers (rehearse failure procedures)")
    connection_options(p)
    p.add_argument("provider", nargs="?", help="simulated provider name (e.g. simulated)")
    p.add_argument("--outage", action="store_true", help="every call fails with 503")
    p.add_argument("--error-rate", dest="error_rate", type=float, metavar="R", help="share of calls failing with 500")
    p.add_argument("--rate-limit-rate", dest="rate_limit_rate", type=float, metavar="R", help="share answered 429")
    p.add_argument("--retry-after", dest="retry_after_s", type=float, metavar="S", help="Retry-After of each 429")
    p.add_argument("--latency-ms", dest="latency_ms", type=float, metavar="MS", help="added before the first token")
    p.add_argument("--stall-rate", dest="stall_rate", type=float, metavar="R", help="share of calls that stall")
    p.add_argument("--stall-s", dest="stall_s", type=float, metavar="S", help="how long a stalled call hangs")
    p.add_argument("--clear", action="store_true", help="remove the provider's fault (every fault without a name)")
    p.add_argument("--fake-provider", metavar="URL", help="the test kit's fake provider server instead of the KV")
    p.set_defaults(func=command(_faults))
