"""The benchmark scripts still run end to end (tiny sizes; the figures themselves are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adp_router.settings import RouterSettings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], tmp: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=tmp, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_router_bench_runs_and_writes_figures(tmp_path: Path, nats_url: str) -> None:
    res = run(
        [str(ROOT / "bench/router_bench.py"), "--levels", "1,2", "--repeat", "1", "--requests-per-stream", "2",
         "--min-requests", "2", "--nats", nats_url],
        tmp_path,
        180,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (out,) = (tmp_path / "bench-results").glob("router-bench-*.json")
    rows = json.loads(out.read_text())["rows"]
    assert [r["concurrency"] for r in rows] == [1, 2]
    for r in rows:
        assert r["direct"]["n"] == r["router"]["n"] > 0
        assert r["router"]["ttft_p50_ms"] > 0 and "ratio" in r["overhead"]["ttft_p50_ms"]


def test_load_bench_runs_and_writes_table_and_plot(tmp_path: Path, nats_url: str, pg_dsn: str, redis_url: str) -> None:
    res = run(
        [str(ROOT / "bench/load_bench.py"), "--discussions", "3", "--tokens", "6", "--tokens-per-s", "60",
         "--ttft-ms", "20", "--ramp-s", "0.2", "--no-scaling", "--openai-levels", "1", "--openai-min-requests", "2",
         "--rest-rps", "5", "--out", str(tmp_path / "out"), "--nats", nats_url, "--pg", pg_dsn, "--redis", redis_url],
        tmp_path,
        240,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (md,) = (tmp_path / "out").glob("load-*.md")
    (js,) = (tmp_path / "out").glob("load-*.json")
    result = json.loads(js.read_text())
    (row,) = result["phase_a"]
    assert row["completed"] == 3 and not row["errors"]
    # every measured turn's request part is split at the provider's arrival stamp; the provider's share is
    # its TTFT (20 ms) at least
    assert row["ttfc_to_provider"]["n"] == row["ttfc_provider_wait"]["n"] == row["ttfc_request"]["n"] > 0
    assert row["ttfc_provider_wait"]["p50"] >= 19.0
    # the router's chunk interval, sampled from its /metrics during the phase: the base interval or more
    sampled = [b["router_interval_ms"] for b in row["timeline"] if "router_interval_ms" in b]
    assert sampled and min(sampled) >= RouterSettings.model_fields["router_chunk_interval_ms"].default
    assert result["phase_b"][0]["gateway"]["errors"] == {}
    assert "## Discussions through the gateway" in md.read_text()
    host = result["config"]["host"]  # the yardstick for comparing runs across machines
    assert host["python_ms"] > 0 and host["python_busy_ms"] > 0 and host["loopback_us"] > 0
    assert host["interpreter"]["executable"] == sys.executable
    assert result["config"]["host_end"]["python_ms"] > 0  # and again once the run is over
    assert "Host speed (idle" in md.read_text() and "After the run:" in md.read_text()
    gateway = row["resources"]["gateway-1"]  # memory at the phase's start and end beside its max
    assert 0 < gateway["rss_start_mb"] <= gateway["rss_mb"] and 0 < gateway["rss_end_mb"] <= gateway["rss_mb"]
    assert list((tmp_path / "out").glob("load-*.png"))


def test_the_first_token_carries_when_the_provider_had_the_request() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from load.provider import arrival, stamps, token, token_count

    first, later = token(0, False, 1_712_345_678_100_000).encode(), token(5, False, 1_712_345_678_100_000).encode()
    assert arrival(first) == 1_712_345_678_100_000 and stamps(first)[0] >= 1_712_345_678_100_000
    assert arrival(later) is None and len(stamps(later)) == 1  # only a stream's first token says it
    event = b'{"chunk":"' + first + b'the "}'
    assert token_count(event) == 2 and len(stamps(event)) == 1


def test_load_bench_runs_on_a_nats_cluster(tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    res = run(
        [str(ROOT / "bench/load_bench.py"), "--nats-cluster", "3", "--discussions", "2", "--tokens", "6",
         "--tokens-per-s", "60", "--ttft-ms", "20", "--ramp-s", "0.2", "--no-scaling", "--openai-levels", "",
         "--rest-rps", "2", "--out", str(tmp_path / "out"), "--pg", pg_dsn, "--redis", redis_url],
        tmp_path,
        240,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (js,) = (tmp_path / "out").glob("load-*.json")
    result = json.loads(js.read_text())
    assert result["config"]["nats_cluster"] == 3
    (row,) = result["phase_a"]
    assert row["completed"] == 2 and not row["errors"]
    assert row["resources"]["nats-server"]["cpu_pct"] > 0  # the three servers' CPU, summed
    (md,) = (tmp_path / "out").glob("load-*.md")
    assert "3-server JetStream cluster" in md.read_text()
