"""Markdown tables and the PNG plot of one load-benchmark run (pure formatting of the result dict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from load.stats import fmt

TARGETS = {"ttfc_p50_ms": 5.0, "ttfc_p99_ms": 25.0, "rest_p95_ms": 50.0, "rss_mb": 200.0}


def _copies(replicas: dict[str, int]) -> str:
    short = {"llm-router": "router"}
    return " ".join(f"{short.get(k, k)}×{v}" for k, v in replicas.items() if v != 1) or "1 each"


def _p50_p99(s: dict[str, Any], *, seconds: bool = False) -> str:
    """A summary's "p50 / p99" cell (milliseconds, or seconds with two decimals)."""
    if seconds:
        return " / ".join(fmt(s.get(q) and s[q] / 1000, 2) for q in ("p50", "p99"))
    return f"{fmt(s.get('p50'))} / {fmt(s.get('p99'))}"


def phase_a_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| discussions | copies | ok | peak live | errors | TTFC p50 / p99 (gateway) | TTFT p50 / p99 (direct) "
        "| added p50 / p99 "
        "| ratio p50 / p99 | chunk latency p50 / p99 (gateway) | (direct) | REST p95 | chunks/s | turns/s "
        "| discussion p50 / p99 (s) | client CPU |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        g, d = r["ttfc"], r["direct_ttft"]
        gl, dl = r["chunk_lat"], r["direct_chunk_lat"]
        rp = r["round_ms"]
        lines.append(
            f"| {r['n']} | {_copies(r['replicas'])} | {r['completed']}/{r['n']} | {r.get('peak_live', '')} "
            f"| {sum(r['errors'].values())} "
            f"| {_p50_p99(g)} | {_p50_p99(d)} "
            f"| {fmt(r['added_ttfc_p50_ms'])} / {fmt(r['added_ttfc_p99_ms'])} "
            f"| {fmt(r['ttfc_ratio_p50'], 2)} / {fmt(r['ttfc_ratio_p99'], 2)} "
            f"| {_p50_p99(gl)} | {_p50_p99(dl)} "
            f"| {fmt(r['rest_p95_ms'])} | {fmt(r['chunks_per_s'], 0)} | {fmt(r['turns_per_s'], 1)} "
            f"| {_p50_p99(rp, seconds=True)} "
            f"| {fmt(r['resources'].get('client', {}).get('cpu_pct'), 0)} % |"
        )
    return head + "\n".join(lines) + "\n"


def ttfc_split_table(rows: list[dict[str, Any]]) -> str:
    """Where TTFC goes, split at the provider's stamps on the first token."""
    head = (
        "TTFC split at the first token's provider stamps: *request* = `message-start` at the client → token "
        "emitted (dialogue sends the call, router, provider TTFT; compare with direct TTFT), itself split where "
        "the provider had the whole request into *to provider* (dialogue, NATS, router, HTTP; less the time "
        "`message-start` took to reach the client) and the provider's *wait* (its TTFT plus its own event-loop "
        "lag: the harness, not the platform); *delivery* = emitted → at the client (router, NATS, gateway, "
        "client).\n\n"
        "| discussions | copies | request p50 / p99 | direct TTFT p50 / p99 | to provider p50 / p99 | "
        "provider wait p50 / p99 | delivery p50 / p99 |\n"
        "|---:|---|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        q, d, dl = r.get("ttfc_request") or {}, r["direct_ttft"], r.get("ttfc_delivery") or {}
        tp, pw = r.get("ttfc_to_provider") or {}, r.get("ttfc_provider_wait") or {}
        lines.append(
            f"| {r['n']} | {_copies(r['replicas'])} | {_p50_p99(q)} | {_p50_p99(d)} | {_p50_p99(tp)} | "
            f"{_p50_p99(pw)} | {_p50_p99(dl)} |"
        )
    return head + "\n".join(lines) + "\n"


def rest_table(rows: list[dict[str, Any]]) -> str:
    """Per call: as the client timed it, and as the gateway logged it (its own `latency_ms`)."""
    head = (
        "| discussions | copies | call | n | p50 | p95 | p99 | max | gateway log: p50 | p95 | p99 |\n"
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        by_route = r.get("rest_gateway") or {}
        for name, s in sorted(r["rest"].items()):
            g = by_route.get(_route_of(name)) or {}
            lines.append(
                f"| {r['n']} | {_copies(r['replicas'])} | `{name}` | {s['n']} | {fmt(s['p50'])} | {fmt(s['p95'])} "
                f"| {fmt(s['p99'])} | {fmt(s['max'])} | {fmt(g.get('p50'))} | {fmt(g.get('p95'))} "
                f"| {fmt(g.get('p99'))} |"
            )
    return head + "\n".join(lines) + "\n"


def _route_of(name: str) -> str:
    """The client's call label as the gateway's `METHOD route` key."""
    return name.replace("{id}", "{discussion_id}").replace("…", "/api/discussions/{discussion_id}")


def resources_table(rows: list[dict[str, Any]]) -> str:
    names: list[str] = []
    for r in rows:
        for k in r["resources"]:
            if k not in names:
                names.append(k)
    head = "| process | " + " | ".join(f"{r['label']}" for r in rows) + " |\n"
    head += "|---|" + "---:|" * len(rows) + "\n"
    lines = []
    for name in names:
        cells = []
        for r in rows:
            x = r["resources"].get(name)
            lag = (r.get("loop_lag") or {}).get(name)
            cell = "—" if x is None else f"{fmt(x['rss_mb'], 0)} MB"
            if x is not None and x.get("rss_start_mb") is not None:
                cell += f" ({fmt(x['rss_start_mb'], 0)} → {fmt(x['rss_end_mb'], 0)})"
            if x is not None:
                cell += f", {fmt(x['cpu_pct'], 0)} %"
            if x is not None and x.get("reads_per_s") is not None:
                cell += f", {x['reads_per_s']:,.0f} / {x['writes_per_s']:,.0f} rd/wr per s"
            if x is not None and lag and lag.get("p99") is not None:
                cell += f", lag p99 ≤ {lag['p99']:g} ms"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def timeline_table(row: dict[str, Any], every_s: int = 2) -> str:
    """One phase second by second (every `every_s`-th second): what its latency tails line up with."""
    tl = [b for b in row.get("timeline") or [] if int(b["t"]) % every_s == 0]
    if not tl:
        return ""
    procs = ("gateway", "dialogue", "llm-router", "fake-provider", "client", "nats-server", "postgres")
    names = [n for n in (row["timeline"][0].get("cpu") or {}) if any(n.startswith(p) for p in procs)]
    head = (
        f"\n#### {row['label']}, second by second\n\n"
        "| s | turns measured | added TTFC p50 / max | request / delivery p50 | REST calls | REST p50 / max | "
        "machine CPU | steal max | router chunk interval / lag (ms) | "
        + " | ".join(names)
        + " |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + "---:|" * len(names)
        + "\n"
    )
    lines = []
    for b in tl:
        t, r = b.get("ttfc") or {}, b.get("rest") or {}
        req, dlv = b.get("request") or {}, b.get("delivery") or {}
        cpu = b.get("cpu") or {}
        lines.append(
            f"| {b['t']:g} | {t.get('n', 0)} | "
            + (f"{fmt(t['p50'])} / {fmt(t['max'])}" if t else "—")
            + " | "
            + (f"{fmt(req['p50'])} / {fmt(dlv['p50'])}" if req and dlv else "—")
            + f" | {r.get('n', 0)} | "
            + (f"{fmt(r['p50'])} / {fmt(r['max'])}" if r else "—")
            + f" | {fmt(b.get('cpu_machine'), 0)} % | {fmt(b.get('steal'), 0)} % | "
            + f"{fmt(b.get('router_interval_ms'), 0)} / {fmt(b.get('router_lag_ms'), 1)} | "
            + " | ".join(f"{fmt(cpu.get(n), 0)}" for n in names)
            + " |"
        )
    return head + "\n".join(lines) + "\n"


def openai_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| concurrency | path | n | errors | TTFT p50 | TTFT p99 | total p50 | total p99 |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        for path in ("direct", "gateway"):
            x = r[path]
            lines.append(
                f"| {r['concurrency']} | {path} | {x['ttft']['n']} | {sum(x['errors'].values())} "
                f"| {fmt(x['ttft']['p50'])} | {fmt(x['ttft']['p99'])} | {fmt(x['total']['p50'])} "
                f"| {fmt(x['total']['p99'])} |"
            )
        o = r["overhead"]
        lines.append(
            f"| {r['concurrency']} | **added** | | | {fmt(o['ttft_p50']['diff'])} | {fmt(o['ttft_p99']['diff'])} "
            f"| {fmt(o['total_p50']['diff'])} | {fmt(o['total_p99']['diff'])} |"
        )
        lines.append(
            f"| {r['concurrency']} | **ratio** | | | {fmt(o['ttft_p50']['ratio'], 2)} "
            f"| {fmt(o['ttft_p99']['ratio'], 2)} "
            f"| {fmt(o['total_p50']['ratio'], 2)} | {fmt(o['total_p99']['ratio'], 2)} |"
        )
    return head + "\n".join(lines) + "\n"


def scaling_table(base: dict[str, Any] | None, scaled: dict[str, Any] | None) -> str:
    if base is None or scaled is None:
        return "(not run)\n"
    head = (
        "| copies | discussions | ok | turns/s | chunks/s | discussion p50 / p99 (s) | TTFC p50 / p99 "
        "| chunk latency p99 | CPU total (services) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in (base, scaled):
        svc_cpu = sum(
            (v.get("cpu_pct") or 0) for k, v in r["resources"].items() if k not in ("client", "fake-provider")
        )
        rp = r["round_ms"]
        lines.append(
            f"| {_copies(r['replicas'])} | {r['n']} | {r['completed']}/{r['n']} | {fmt(r['turns_per_s'], 1)} "
            f"| {fmt(r['chunks_per_s'], 0)} | {_p50_p99(rp, seconds=True)} | {_p50_p99(r['ttfc'])} "
            f"| {fmt(r['chunk_lat']['p99'])} | {fmt(svc_cpu, 0)} % |"
        )
    return head + "\n".join(lines) + "\n"


def full_load_table(rows: list[dict[str, Any]]) -> str:
    """Each phase while every discussion was live (the load the targets name), beside the whole phase."""
    head = (
        "| discussions | copies | window (s) | turns | TTFC p50 / p99 | added vs direct phase (window) "
        "| (whole phase) | same-time direct TTFT p50 / p99 (calls) | added vs same-time direct "
        "| REST calls | REST p95 (window) | (whole phase) | calls in the window |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        f = r.get("full_load")
        if not f:
            continue
        calls = ", ".join(f"{k} {v['n']}" for k, v in sorted(f["rest"].items()))
        lines.append(
            f"| {r['n']} | {_copies(r['replicas'])} | {f['from_s']:.1f} – {f['to_s']:.1f} | {f['ttfc']['n']} "
            f"| {_p50_p99(f['ttfc'])} "
            f"| {fmt(f['added_ttfc_p50_ms'])} / {fmt(f['added_ttfc_p99_ms'])} "
            f"| {fmt(r['added_ttfc_p50_ms'])} / {fmt(r['added_ttfc_p99_ms'])} "
            f"| {_p50_p99(f.get('control_ttft') or {})} ({(f.get('control_ttft') or {}).get('n', 0)}) "
            f"| {fmt(f.get('added_vs_control_p50_ms'))} / {fmt(f.get('added_vs_control_p99_ms'))} "
            f"| {sum(v['n'] for v in f['rest'].values())} | {fmt(f['rest_p95_ms'])} | {fmt(r['rest_p95_ms'])} "
            f"| {calls} |"
        )
    return head + "\n".join(lines) + "\n" if lines else ""


def targets(rows: list[dict[str, Any]]) -> str:
    """Pass/fail per phase. Latency targets are read in the full-load window (every discussion live) when
    the phase had one with measured turns; the whole phase's figures stand beside them."""
    out = []
    for r in rows:
        rss = {
            k: v["rss_mb"]
            for k, v in r["resources"].items()
            if k not in ("client", "fake-provider", "nats-server", "postgres")
        }
        worst = max(rss.items(), key=lambda kv: kv[1] or 0) if rss else ("—", None)
        f = r.get("full_load")
        windowed = bool(f and f["ttfc"]["n"])
        src = f if windowed and f else r
        where = f" while all {r['n']} live" if windowed else ""
        checks = [
            ("zero errors", not r["errors"] and r["completed"] == r["n"], f"{sum(r['errors'].values())}"),
            (
                f"added TTFC p50 < 5 ms{where}",
                (src["added_ttfc_p50_ms"] or 1e9) < TARGETS["ttfc_p50_ms"],
                fmt(src["added_ttfc_p50_ms"]),
            ),
            (
                f"added TTFC p99 < 25 ms{where}",
                (src["added_ttfc_p99_ms"] or 1e9) < TARGETS["ttfc_p99_ms"],
                fmt(src["added_ttfc_p99_ms"]),
            ),
            (f"REST p95 < 50 ms{where}", (src["rest_p95_ms"] or 1e9) < TARGETS["rest_p95_ms"], fmt(src["rest_p95_ms"])),
            ("every service < 200 MB", (worst[1] or 0) < TARGETS["rss_mb"], f"max {worst[0]} {fmt(worst[1], 0)} MB"),
        ]
        if windowed and f and f.get("control_ttft", {}).get("n"):
            # the same targets against the direct calls made during the window (same machine load)
            for q, limit in (("p50", "ttfc_p50_ms"), ("p99", "ttfc_p99_ms")):
                added = f[f"added_vs_control_{q}_ms"]
                name = f"added TTFC {q} < {TARGETS[limit]:g} ms vs same-time direct"
                ok = (added if added is not None else 1e9) < TARGETS[limit]
                checks.insert(3 if q == "p50" else 4, (name, ok, fmt(added)))
        cells = ", ".join(f"{name}: {'PASS' if ok else 'FAIL'} ({val})" for name, ok, val in checks)
        whole = (
            f"; whole phase (ramps included): added TTFC {fmt(r['added_ttfc_p50_ms'])} / "
            f"{fmt(r['added_ttfc_p99_ms'])}, REST p95 {fmt(r['rest_p95_ms'])} "
            f"(gateway log {fmt(r.get('rest_p95_gateway_ms'))})"
        )
        if windowed and f and f.get("machine_cpu_pct") is not None:
            # what decides these figures most on a shared machine (see bench/README.md)
            whole += f"; machine CPU in the window {fmt(f['machine_cpu_pct'], 0)} % of both cores (average)"
            if f.get("steal_pct") is not None:
                whole += f", steal {fmt(f['steal_pct'], 1)} % (worst half-second {fmt(f['steal_max_pct'], 0)} %)"
            if f.get("router_interval_ms"):
                ri = f["router_interval_ms"]
                whole += f"; router chunk interval p50 / max {fmt(ri['p50'], 0)} / {fmt(ri['max'], 0)} ms"
        out.append(f"- **{r['label']}**: {cells}{whole}")
    return "\n".join(out) + "\n"


def host_line(host: dict[str, Any] | None, host_end: dict[str, Any] | None = None) -> str:
    """The machine's speed before and after the run (`load/calibrate.py`): what to compare first between
    two runs, and whether the host itself changed during one."""
    if not host:
        return "Host speed: not measured.\n"

    def figures(h: dict[str, Any]) -> str:
        return (
            f"Python task {fmt(h.get('python_ms'))} ms, {fmt(h.get('python_busy_ms'))} ms with the other core "
            f"busy; loopback round trip {fmt(h.get('loopback_us'))} µs"
        )

    py = host.get("interpreter") or {}
    build = "shared libpython" if py.get("libpython_shared") else "static libpython"
    after = f" After the run: {figures(host_end)}." if host_end else ""
    return (
        f"Host speed (idle, lower is faster; `bench/load/calibrate.py`): {figures(host)}.{after} "
        f"Interpreter: CPython {py.get('version', '?')} ({build}), `{py.get('executable', '?')}`.\n"
    )


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    a = result["phase_a"]
    parts = [
        f"# Load benchmark {result['started']}\n",
        f"Machine: {cfg['cpus']} CPUs, {cfg['mem_gb']:.0f} GiB. Fake provider: TTFT {cfg['ttft_ms']:g} ms "
        f"(jitter ±{cfg['jitter'] * 100:g} %), {cfg['tokens_per_s']:g} tokens/s, {cfg['tokens']} tokens per answer. "
        f"Each discussion: {cfg.get('rounds', 1)} round(s) of 3 persona turns"
        + (", proceed and stop at once after the last" if cfg.get("end_proceed") else ", then stop")
        + f". Starts spread over {cfg.get('ramp_s', 0):g} s "
        f"(phase B: {cfg.get('ramp_b_s', cfg.get('ramp_s', 0)):g} s). "
        + (
            f"NATS: an embedded {cfg['nats_cluster']}-server JetStream cluster, every stream and bucket with "
            f"{cfg['nats_cluster']} replicas (nats-server CPU is the servers' sum). "
            if cfg.get("nats_cluster")
            else "NATS: one server. "
        )
        + f"Log level {cfg['log_level']}. Load average (1 min) at start / end: "
        f"{cfg['loadavg_start'][0]:.1f} / {cfg.get('loadavg_end', [0])[0]:.1f} (the machine is shared). "
        f"Command: `{cfg['command']}`\n",
        host_line(cfg.get("host"), cfg.get("host_end")),
        "All times in ms unless marked. TTFC = `message-start` → first `message-chunk` at the client (every "
        "turn but a discussion's first); direct TTFT = request sent → first token, same provider, same concurrency, "
        "same run.\n",
        "## Discussions through the gateway (phase A)\n",
        phase_a_table(a),
        "\n" + ttfc_split_table(a),
        "\n### Targets\n",
        "Read while every discussion of the phase was live (created, not yet through its last round): the "
        "load the targets name. Before that window discussions are being created, after it they end. Added "
        "TTFC is given twice: against the direct phase (the provider called alone, before the platform's "
        "phase, on an otherwise idle machine) and against the same-time direct calls (one-token calls to the "
        "provider kept running during the window: the provider and this client share the two cores with "
        "the platform, and that slows them too; the difference is what the platform's own hops add).\n",
        targets(a),
        "\n" + full_load_table(a),
        "\n### REST calls under load\n",
        rest_table(a),
        "\n### Errors\n",
        "\n".join(
            f"- {r['label']}: "
            + (", ".join(f"{k} ×{v}" for k, v in r["errors"].items()) or "none")
            + f"; turns with chunks missing: {r['turns_missing_chunks']} of {r['turns']} "
            + str(r.get("missing_detail") or {})
            for r in a
        )
        + "\n",
        "\n### Memory (max RSS; at the phase's start → its end) and CPU (average % of one core) per process\n",
        "Also read / write system calls per second (`/proc/<pid>/io`; sockets included), where readable.\n",
        resources_table(a),
        "\n### Timeline\n",
        "Per second of the phase: measured turns whose `message-start` came in that second (added TTFC "
        "against the direct p50; then its two halves' p50: the added *request*, `message-start` at the client → "
        "first token emitted, less the direct TTFT p50, and the *delivery*, emitted → at the client), REST calls "
        "ending in it, and CPU (machine: % of all cores; processes: % of one "
        "core). "
        "Creations first, then every discussion streaming (proceeds as rounds end), then stops.\n",
        "".join(timeline_table(r) for r in a),
        profiles_md(a),
        "\n## OpenAI-compatible path (phase B)\n",
        openai_table(result["phase_b"]) if result["phase_b"] else "(not run)\n",
        "\n## Horizontal scaling (same load, one vs two copies)\n",
        scaling_table(result.get("scaling_base"), result.get("scaling")),
    ]
    return "\n".join(parts)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    a = result["phase_a"]
    labels = [r["label"] for r in a]
    x = range(len(a))
    ax = axes[0][0]
    w = 0.2
    for i, (key, name) in enumerate(
        [("direct_ttft", "direct p50"), ("direct_ttft", "direct p99"), ("ttfc", "gateway p50"), ("ttfc", "gateway p99")]
    ):
        q = "p50" if "p50" in name else "p99"
        ax.bar([j + (i - 1.5) * w for j in x], [r[key][q] or 0 for r in a], w, label=name)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title("Time to first chunk: gateway (message-start → chunk) vs direct")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    b = result["phase_b"]
    if b:
        conc = [r["concurrency"] for r in b]
        for path_, style in (("direct", "o--"), ("gateway", "s-")):
            ax.plot(conc, [r[path_]["ttft"]["p50"] for r in b], style, label=f"{path_} TTFT p50")
            ax.plot(conc, [r[path_]["ttft"]["p99"] for r in b], style, alpha=0.5, label=f"{path_} TTFT p99")
        ax.set_xscale("log")
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
    ax.set_title("OpenAI-compatible path: TTFT via gateway vs direct")

    ax = axes[1][0]
    names = [k for k in a[-1]["resources"] if k not in ("nats-server", "postgres")]
    for i, r in enumerate(a):
        ax.bar(
            [j + (i - (len(a) - 1) / 2) * (0.8 / len(a)) for j in range(len(names))],
            [(r["resources"].get(n) or {}).get("rss_mb") or 0 for n in names],
            0.8 / len(a),
            label=r["label"],
        )
    ax.axhline(200, color="red", linestyle=":", label="200 MB target")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("max RSS (MB)")
    ax.set_title("Memory per process")
    ax.legend(fontsize=7)

    ax = axes[1][1]
    ax.bar(labels, [r["chunks_per_s"] or 0 for r in a], color="tab:green")
    ax.set_ylabel("tokens/s delivered to clients (in chunks)")
    ax.set_title("End-to-end token throughput (scaling run last)")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def profiles_md(rows: list[dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        for name, prof in (r.get("profiles") or {}).items():
            top = ", ".join(f"`{f}` {p:.0f} %" for f, p in prof["self"][:8])
            parts.append(f"- {r['label']} — **{name}** (py-spy, self time share of samples): {top}")
    return ("\n### Profiles\n" + "\n".join(parts) + "\n") if parts else ""
