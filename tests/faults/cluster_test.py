"""R3 streams on a real three-node NATS cluster survive a node killed mid-workload.

NATS only (no workers): the streams of ``subjects.yaml`` are provisioned with
``IONVEIL_STREAM_REPLICAS=3``; a publisher sends a known set of events with ``Nats-Msg-Id``
while one node (the stream leader) is SIGKILLed and restarted with its store; a durable
consumer reads them all, and each id is stored and processed exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import api

from tests.faults._cluster import NatsCluster
from tests.faults._env import FaultEnv, Workload
from tests.faults._figures import FIGURES
from tests.faults._servers import PrivatePostgres, PrivateRedis
from tests.faults._workload import PublishStats, dispatch_events, publish_reliably
from workers.codec import decode_payload
from workers.runtime import ensure_streams, load_catalogue
from workers.runtime.provisioning import REPLICAS_ENV

pytestmark = pytest.mark.faults

EVENTS = 600


@pytest.fixture
async def cnc(cluster: NatsCluster) -> AsyncIterator[NATS]:
    """A reconnecting client of the cluster (all three URLs), no streams left over."""
    await cluster.wait_ready()
    client = await nats.connect(
        cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
    )
    js = client.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    try:
        yield client
    finally:
        await client.close()


async def test_catalogue_streams_are_created_with_three_replicas(
    cnc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IONVEIL_STREAM_REPLICAS=3 makes every catalogue stream R3, with two peers beside the
    leader, and provisioning a second time changes nothing."""
    monkeypatch.setenv(REPLICAS_ENV, "3")
    js = cnc.jetstream(timeout=10)
    catalogue = load_catalogue()
    await ensure_streams(js, catalogue)
    await ensure_streams(js, catalogue)
    for stream in catalogue.streams:
        info = await js.stream_info(stream.name)
        assert info.config.num_replicas == 3, stream.name
        assert info.cluster is not None and info.cluster.leader, stream.name
        assert len(info.cluster.replicas or []) == 2, stream.name


async def _consume(
    js: nats.js.JetStreamContext, want: int, seen: Counter[str], done: asyncio.Event
) -> None:
    """Read DISPATCH through a durable, ack each message, count each event id."""
    sub = await js.pull_subscribe_bind(durable="faults-reader", stream="DISPATCH")
    while len(seen) < want:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        except nats.errors.Error:
            await asyncio.sleep(0.2)  # leader moving or reconnecting: ask again
            continue
        for msg in msgs:
            value, _ = decode_payload(msg.data, msg.headers)
            if msg.metadata.num_delivered == 1 or value["event_id"] not in seen:
                seen[value["event_id"]] += 1
            # Not acknowledged: JetStream redelivers, and the id check absorbs it.
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await msg.ack_sync(timeout=2)
    done.set()


@pytest.mark.parametrize("victim", ["leader", "follower"])
async def test_node_killed_during_workload_loses_and_duplicates_nothing(
    cnc: NATS, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch, victim: str
) -> None:
    """With R3 streams, killing (SIGKILL) the DISPATCH leader or a follower a third of the way
    through 600 publishes and restarting it with its store: every event is stored once
    (publisher retries are absorbed by the duplicate window), a durable consumer reading
    concurrently processes each id exactly once, and the restarted node catches up."""
    monkeypatch.setenv(REPLICAS_ENV, "3")
    js = cnc.jetstream(timeout=5)
    await ensure_streams(js, load_catalogue(), names=["DISPATCH"])
    await js.add_consumer(
        "DISPATCH",
        api.ConsumerConfig(
            durable_name="faults-reader", ack_policy=api.AckPolicy.EXPLICIT, ack_wait=5
        ),
    )
    events = dispatch_events("metro", EVENTS, prefix=f"r3{victim}")
    seen: Counter[str] = Counter()
    done = asyncio.Event()
    reader = asyncio.create_task(_consume(js, EVENTS, seen, done))
    stats = PublishStats()
    info = await js.stream_info("DISPATCH")
    assert info.cluster is not None
    names = [f"n{i + 1}" for i in range(cluster.size)]
    leader = names.index(info.cluster.leader)
    index = leader if victim == "leader" else (leader + 1) % cluster.size

    for n, event in enumerate(events):
        if n == EVENTS // 3:
            cluster.kill(index)
        if n == 2 * EVENTS // 3:
            cluster.restart(index)
        await publish_reliably(js, "ionveil.dispatch.events.metro", event, event["event_id"], stats)
    await asyncio.wait_for(done.wait(), 120)
    await reader
    await cluster.wait_ready(replicas=3)

    state = (await js.stream_info("DISPATCH")).state
    duplicates = sum(c - 1 for c in seen.values() if c > 1)
    lost = EVENTS - len(seen)
    FIGURES.record(f"cluster[{victim}]", faults=1, published=EVENTS, lost=lost, dups=duplicates)
    assert stats.published == EVENTS
    assert state.messages == EVENTS, "stored count differs from published ids"
    assert set(seen) == {e["event_id"] for e in events}
    assert duplicates == 0 and lost == 0
    # The restarted node holds the whole stream again: read it from that node alone.
    alone = await nats.connect(cluster.urls[index], allow_reconnect=False)
    try:
        only = alone.jetstream(timeout=10)
        replica = await only.stream_info("DISPATCH")
        assert replica.state.messages == EVENTS
    finally:
        await alone.close()


@pytest.fixture
async def cluster_env(
    cluster: NatsCluster,
    private_pg: PrivatePostgres,
    private_redis: PrivateRedis | None,
    tmp_path: Path,
) -> AsyncIterator[FaultEnv]:
    """The fleet's environment on the three-node cluster (R3 streams), fresh state."""
    await cluster.wait_ready()
    environment = FaultEnv(tmp_path, cluster.urls, private_pg, private_redis, replicas=3)
    await environment.reset()
    try:
        yield environment
    finally:
        await environment.stop_workers()


async def test_fleet_on_cluster_survives_a_node_killed(
    cluster_env: FaultEnv, cluster: NatsCluster
) -> None:
    """The whole fleet (every worker as a process) on the three-node cluster with R3 streams:
    the DISPATCH stream leader is SIGKILLed mid-workload and restarted 3 s later with its
    store. Workers fail over to the other nodes; totals, alerts, notifications and jobs are
    exact."""
    await cluster_env.start_workers()
    nc = await cluster_env.connect()
    try:
        info = await nc.jetstream(timeout=10).stream_info("DISPATCH")
    finally:
        await nc.close()
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    victim = [f"n{i + 1}" for i in range(cluster.size)].index(info.cluster.leader)

    async def fault() -> None:
        cluster.kill(victim)
        await asyncio.sleep(3.0)
        cluster.restart(victim)

    wl = Workload()
    outcome, stats = await cluster_env.run(wl, fault)
    lost, dups = outcome.lost_and_duplicates(wl)
    FIGURES.record("cluster node killed (fleet)", faults=1, published=stats.published,
                   lost=lost, dups=dups)  # fmt: skip
    counts = (outcome.dashboard_events, outcome.policy_outcomes, outcome.analytics_records)
    assert counts == (wl.events,) * 3, outcome
    assert outcome.alerts == wl.breaches and len(outcome.notifications) == wl.breaches, outcome
    assert all(n == 1 for n in outcome.notifications.values()), outcome.notifications
    assert outcome.jobs_completed == wl.jobs, outcome
    await cluster.wait_ready(replicas=3)
