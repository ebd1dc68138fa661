"""The launcher and the embedded servers a fresh machine falls back to."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest

from adp_cli import nats_cluster as nats_cluster_module
from adp_cli import procs as procs_module
from adp_cli import servers
from adp_cli.launcher import key_banner
from adp_cli.main import build_parser
from adp_cli.procs import Proc, ProcessManager
from adp_common import db
from adp_common.bus import Bus
from adp_testing.launcher import launcher_env, read_until, start_launcher


async def test_embedded_nats_has_jetstream(tmp_path: Path) -> None:
    started = await asyncio.to_thread(servers.start_embedded_nats, tmp_path / "nats")
    try:
        bus = await Bus.connect(started.url, prefix="emb")
        try:
            await bus.ensure_streams(["USAGE"])
            info = await bus.js.stream_info(bus.catalog.stream_name("USAGE"))
            assert info.config.name == "EMB_USAGE"
        finally:
            await bus.close(grace=1)
    finally:
        started.stop()


async def test_embedded_postgres_serves_databases(tmp_path: Path) -> None:
    started = await asyncio.to_thread(servers.start_embedded_postgres, tmp_path / "pg")
    try:
        await db.ensure_database(started.url, "emb_check")
        conn = await asyncpg.connect(db.with_database(started.url, "emb_check"))
        try:
            assert await conn.fetchval("SELECT 41 + 1") == 42
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(started.stop)


def test_parser_rejects_bad_scale() -> None:
    from adp_cli.launcher import _parse_scale

    assert _parse_scale(["llm-router=3"]) == {"llm-router": 3}
    with pytest.raises(Exception, match="SERVICE=N"):
        _parse_scale(["nope=2"])
    args = build_parser().parse_args(["up", "--replicas", "2", "--port", "9000"])
    assert args.replicas == 2 and args.port == 9000


@pytest.mark.slow
async def test_adp_up_brings_every_service_to_healthy(nats_url: str, pg_dsn: str, prefix: str, tmp_path: Path) -> None:
    """`adp up` starts all five services as processes, each healthy over HTTP, then stops on SIGTERM."""
    port = servers.free_port()
    env = launcher_env(pg_dsn, prefix, "adp_launcher_test_key_123456", nats_url)
    proc = start_launcher(["up", "--port", str(port), "--data-dir", str(tmp_path), "--quiet"], env)
    lines: list[str] = []
    try:
        await read_until(proc, "Stop:", lines, timeout=120)
        out = "".join(lines)
        assert f"http://127.0.0.1:{port}" in out
        # the banner says where the admin key is, masked; the key itself never reaches captured output
        assert "adp_launcher_test_key_123456" not in out
        assert "API key:  adp_laun…3456  (from ADP_BOOTSTRAP_API_KEY)" in out
        logs = tmp_path.resolve() / "logs"
        assert f"Logs:     {logs / 'error.log'}" in out  # where the logs are, printed
        combined = (logs / "combined.log").read_text()
        for service in ("gateway", "dialogue", "llm-router", "cost", "alerts"):
            assert f'"service": "{service}"' in combined, service
        assert (logs / "error.log").exists()
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{port}/health")
            assert r.status_code == 200
        bus = await Bus.connect(nats_url, prefix=prefix)
        try:
            for service in ("gateway", "dialogue", "llm-router", "cost", "alerts"):
                reply = await bus.request(bus.catalog.health(service), None, timeout=5)
                assert reply["status"] == "UP", (service, reply)
        finally:
            await bus.close(grace=1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for base in ("gateway", "dialogue", "cost", "alerts"):
            await db.drop_database(pg_dsn, f"{base}_{prefix}")
        from adp_testing.fixtures import cleanup_prefix

        await cleanup_prefix(nats_url, prefix)


def test_free_ports_are_distinct() -> None:
    for _ in range(200):
        ports = servers.free_ports(9)
        assert len(set(ports)) == 9


def test_a_service_copy_never_gets_a_port_another_copy_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy just started may not have bound its port yet when the next one is given one."""
    manager = ProcessManager(env={})
    manager.procs.append(Proc("gateway", 1, 41001, subprocess.Popen(["true"])))
    offers = iter([41001, 41001, 41002])
    monkeypatch.setattr(procs_module, "free_port", lambda: next(offers))
    assert manager._unused_port() == 41002
    manager.procs[0].popen.wait()


def test_a_cluster_whose_chosen_port_is_taken_starts_on_other_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free ports are chosen before the servers start, and another process can take one meanwhile: the cluster
    then starts on newly chosen ports."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first = [taken.getsockname()[1], *servers.free_ports(8)]
        choices = iter([first])
        real = nats_cluster_module.free_ports
        monkeypatch.setattr(nats_cluster_module, "free_ports", lambda n: next(choices, None) or real(n))
        cluster = nats_cluster_module.start_nats_cluster(3, tmp_path)
        try:
            assert taken.getsockname()[1] not in [n.port for n in cluster.nodes]
            assert all(n.healthy() for n in cluster.nodes)
        finally:
            cluster.stop()


def test_nats_cluster_needs_three_servers() -> None:
    assert build_parser().parse_args(["up", "--nats-cluster", "3"]).nats_cluster == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--nats-cluster", "2"])


@pytest.mark.slow
async def test_adp_up_nats_cluster_replicates_every_stream_and_bucket(pg_dsn: str, prefix: str, tmp_path: Path) -> None:
    """`adp up --nats-cluster 3` starts three NATS servers, points every service at all three, and every
    stream and KV bucket the services create has three replicas; Ctrl-C stops the servers too."""
    env = launcher_env(pg_dsn, prefix, "adp_launcher_test_key_123456")
    port = servers.free_port()
    argv = ["up", "--nats-cluster", "3", "--nats-port", "0", "--port", str(port), "--data-dir", str(tmp_path)]
    proc = start_launcher([*argv, "--quiet"], env)
    lines: list[str] = []
    try:
        await read_until(proc, "Stop:", lines, timeout=120)
        nats_line = next(line for line in lines if line.startswith("NATS"))
        url = nats_line.split()[1]
        assert len(url.split(",")) == 3 and "3-server cluster" in nats_line, nats_line
        bus = await Bus.connect(url, prefix=prefix)
        try:
            for service in ("gateway", "dialogue", "llm-router", "cost", "alerts"):
                reply = await bus.request(bus.catalog.health(service), None, timeout=5)
                assert reply["status"] == "UP", (service, reply)
            from adp_testing.fixtures import stream_names

            names = [n for n in await stream_names(bus) if n.startswith((prefix.upper(), f"KV_{prefix}"))]
            assert any(n.startswith("KV_") for n in names) and len(names) >= 5, names
            for name in names:
                assert (await bus.js.stream_info(name)).config.num_replicas == 3, name
        finally:
            await bus.close(grace=1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert not any(servers.port_open("127.0.0.1", int(u.rsplit(":", 1)[1])) for u in url.split(","))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for base in ("gateway", "dialogue", "cost", "alerts"):
            await db.drop_database(pg_dsn, f"{base}_{prefix}")


def test_banner_shows_where_the_key_is_not_the_key(tmp_path: Path) -> None:
    key = "adp_" + "k" * 30 + "WXYZ"
    line, curl = key_banner(key, tmp_path, from_env=False, show=False)
    assert key not in line and key not in curl
    assert line == f"adp_kkkk…WXYZ  (in {tmp_path / 'bootstrap-api-key'}; --show-key prints it)"
    assert curl == f"$(cat {tmp_path / 'bootstrap-api-key'})"
    assert key_banner(key, tmp_path, from_env=False, show=True) == (key, key)
    assert build_parser().parse_args(["up", "--show-key"]).show_key
