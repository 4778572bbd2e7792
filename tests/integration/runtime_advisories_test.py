"""Messages JetStream gives up on without an answer still reach the DLQ (via the advisory)."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from workers.runtime.advisories import MaxDeliveriesWatcher
from workers.runtime.dlq import dlq_subject
from workers.runtime.metrics import WorkerMetrics


async def test_unanswered_final_delivery_is_dead_lettered(nc: NATS) -> None:
    """A message fetched max_deliver times and never acked is copied to the DLQ with its reason."""
    js = nc.jetstream()
    await js.add_stream(name="ADV", subjects=["ionveil.adv.>"])
    await js.add_stream(name="DLQ", subjects=["ionveil.dlq.>"])
    await js.add_consumer(
        "ADV",
        ConsumerConfig(
            durable_name="adv", ack_policy=AckPolicy.EXPLICIT, ack_wait=0.5, max_deliver=2
        ),
    )
    metrics = WorkerMetrics("advisory-test").consumer("adv")
    watcher = MaxDeliveriesWatcher(nc, js, stream="ADV", durable="adv", metrics=metrics)
    await watcher.start()
    dead = await nc.subscribe(dlq_subject("ionveil.adv.x"))
    try:
        await js.publish("ionveil.adv.x", b"payload", headers={"Nats-Msg-Id": "evt-1"})
        sub = await js.pull_subscribe_bind(durable="adv", stream="ADV")
        for _ in range(2):  # fetch and "crash": never ack, let ack_wait expire
            (msg,) = await sub.fetch(1, timeout=5)
            assert msg.data == b"payload"
        # A worker keeps a pull request open; the server then gives up instead of redelivering.
        with pytest.raises((nats.errors.TimeoutError, asyncio.TimeoutError)):
            await sub.fetch(1, timeout=2)
        copy = await dead.next_msg(timeout=10)
        assert copy.data == b"payload"
        assert copy.headers["Ionveil-Error-Code"] == "max_deliveries"
        assert copy.headers["Ionveil-Original-Msg-Id"] == "evt-1"
        assert copy.headers["Ionveil-Stream-Seq"] == "1"
    finally:
        await dead.unsubscribe()
        await watcher.stop()
