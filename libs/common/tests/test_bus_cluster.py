"""The bus on a NATS server list and on a three-server JetStream cluster: connecting with every server's URL,
and streams and KV buckets kept at ADP_STREAM_REPLICAS replicas."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from nats.js.errors import KeyNotFoundError

from adp_cli.nats_cluster import NatsCluster
from adp_cli.servers import free_port, start_embedded_nats
from adp_common.bus import Bus, ReplicasUnavailable, server_urls
from adp_common.schemas.llm import UsageRecord
from adp_testing.fixtures import cleanup_prefix
from adp_testing.procs import ServiceProcesses, cluster_size, stream_replicas


def test_server_urls_split_a_comma_separated_list() -> None:
    assert server_urls("nats://a:4222") == ["nats://a:4222"]
    assert server_urls(" nats://a:4222, nats://b:4222 ,nats://c:4222,") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    with pytest.raises(ValueError):
        server_urls(" , ")


async def test_connect_with_a_server_list_whose_first_server_is_down(nats_url: str, prefix: str) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    bus = await Bus.connect(f"{dead},{nats_url}", prefix=prefix, name="list", connect_timeout=2)
    try:
        assert bus.connected
        await bus.ensure_streams(["USAGE"])
    finally:
        await bus.close(grace=1)


async def _replicas(bus: Bus, stream: str) -> int:
    return (await bus.js.stream_info(stream)).config.num_replicas or 1


async def test_streams_and_buckets_are_created_with_the_configured_replicas(nats_cluster: NatsCluster) -> None:
    prefix = "c" + uuid.uuid4().hex[:10]
    bus = await Bus.connect(nats_cluster.url, prefix=prefix, name="r3", replicas=3)
    try:
        await bus.ensure_streams(["USAGE"])
        kv = await bus.kv("breakers")
        assert await _replicas(bus, bus.catalog.stream_name("USAGE")) == 3
        assert await _replicas(bus, kv._stream) == 3
    finally:
        await bus.close(grace=1)
        await cleanup_prefix(nats_cluster.url, prefix)


async def test_a_bucket_is_handed_out_once_its_leader_answers(nats_cluster: NatsCluster) -> None:
    """A service that opens a bucket while the bucket's leader is being elected (a cluster just started, a
    server lost) gets it once it answers reads, so its first read does not fail its start; also when another
    service created the bucket with another history."""
    prefix = "c" + uuid.uuid4().hex[:10]
    first = await Bus.connect(nats_cluster.url, prefix=prefix, name="first", replicas=3)
    try:
        stream = (await first.kv("budget"))._stream
        for history in (1, 5):
            second = await Bus.connect(nats_cluster.url, prefix=prefix, name="second", replicas=3)
            try:
                await second.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
                kv = await second.kv("budget", history=history)
                with pytest.raises(KeyNotFoundError):
                    await kv.get("global")
            finally:
                await second.close(grace=1)
    finally:
        await first.close(grace=1)
        await cleanup_prefix(nats_cluster.url, prefix)


async def test_fewer_replicas_are_raised_at_start_and_logged(
    nats_cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = "c" + uuid.uuid4().hex[:10]
    old = await Bus.connect(nats_cluster.url, prefix=prefix, name="r1", replicas=1)
    new = await Bus.connect(nats_cluster.url, prefix=prefix, name="r3", replicas=3)
    try:
        await old.ensure_streams(["USAGE"])
        kv = await old.kv("budget", history=5)
        assert await _replicas(old, kv._stream) == 1
        with caplog.at_level(logging.INFO, logger="adp.bus"):
            await new.ensure_streams(["USAGE"])
            await new.kv("budget")  # another history: the bucket is used as it is, with more replicas
        assert await _replicas(new, new.catalog.stream_name("USAGE")) == 3
        assert await _replicas(new, kv._stream) == 3
        raised = [r.getMessage() for r in caplog.records if "replicas raised from 1 to 3" in r.getMessage()]
        assert len(raised) == 2, raised
        # a copy still configured for one replica never lowers them again
        await old.ensure_streams(["USAGE"])
        assert await _replicas(old, old.catalog.stream_name("USAGE")) == 3
    finally:
        await old.close(grace=1)
        await new.close(grace=1)
        await cleanup_prefix(nats_cluster.url, prefix)


async def test_more_replicas_than_servers_is_a_clear_error(nats_url: str, nats_cluster: NatsCluster) -> None:
    for url, replicas in ((nats_url, stream_replicas() + 2), (nats_cluster.url, 5)):
        prefix = "c" + uuid.uuid4().hex[:10]
        bus = await Bus.connect(url, prefix=prefix, name="too-many", replicas=replicas)
        try:
            with pytest.raises(ReplicasUnavailable, match=f"ADP_STREAM_REPLICAS={replicas}"):
                await bus.ensure_streams(["USAGE"])
            with pytest.raises(ReplicasUnavailable, match="number of JetStream servers"):
                await bus.kv("leases")
        finally:
            await bus.close(grace=1)
            await cleanup_prefix(url, prefix)


@pytest.mark.skipif(cluster_size() >= 3, reason="the tests' NATS is a cluster")
async def test_a_service_asked_for_more_replicas_than_servers_stops_at_start(processes: ServiceProcesses) -> None:
    proc = processes.start("alerts", {"ADP_STREAM_REPLICAS": "3"})
    code = await asyncio.to_thread(proc.popen.wait, 60)
    assert code != 0
    assert "ADP_STREAM_REPLICAS=3" in proc.log_tail(), proc.log_tail()


async def test_an_unanswered_publish_is_sent_again_until_the_stream_answers(tmp_path: Path) -> None:
    """The server is away for longer than one publish's timeout: the publish is repeated with the same id
    until the stream answers, and stored once."""
    port = free_port()
    server = await asyncio.to_thread(start_embedded_nats, tmp_path, port)
    bus = await Bus.connect(server.url, prefix="pub", name="pub")
    try:
        await bus.ensure_streams(["USAGE"])
        await asyncio.to_thread(server.stop)
        publish = asyncio.create_task(
            bus.publish_event(bus.catalog.usage_record, _usage(), msg_id="once", timeout=1.0, retry_for=20)
        )
        await asyncio.sleep(2.5)
        assert not publish.done()
        server = await asyncio.to_thread(start_embedded_nats, tmp_path, port)
        seq = await asyncio.wait_for(publish, 20)
        again = await bus.publish_event(bus.catalog.usage_record, _usage(), msg_id="once")
        assert again == seq
        info = await bus.js.stream_info(bus.catalog.stream_name("USAGE"))
        assert info.state.messages == 1
    finally:
        await bus.close(grace=1)
        await asyncio.to_thread(server.stop)


def _usage() -> UsageRecord:
    return UsageRecord(request_id="once", provider="p", model="m", input_tokens=3)
