"""Draining at exit: in-hand work finishes and is acked; work cut off is redelivered."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS

from workers.codec import encode_payload
from workers.runtime import (
    ConsumerSpec,
    Envelope,
    Worker,
    ensure_streams,
    load_catalogue,
    run_worker,
)
from workers.runtime import runner as runner_module
from workers.settings import Settings

SUBJECT = "ionveil.incidents.acme"


class SlowWorker(Worker):
    """One consumer on INCIDENTS whose handler waits ``delay_s`` before finishing."""

    name = "rt-drain"

    def __init__(self, delay_s: float, *, ack_wait_s: float = 30.0) -> None:
        self.delay_s = delay_s
        self.ack_wait_s = ack_wait_s
        self.started = asyncio.Event()
        self.finished: list[str] = []
        self.seen: list[tuple[str, int]] = []

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                stream="INCIDENTS",
                durable="rt-drain",
                filter_subject="ionveil.incidents.>",
                handler=self.handle,
                ack_wait_s=self.ack_wait_s,
            )
        ]

    async def handle(self, batch: list[Envelope]) -> None:
        self.seen.extend((e.data["incident_id"], e.num_delivered) for e in batch)
        self.started.set()
        await asyncio.sleep(self.delay_s)
        self.finished.extend(e.data["incident_id"] for e in batch)


async def publish_incidents(nc: NATS, count: int) -> None:
    js = nc.jetstream()
    await ensure_streams(js, load_catalogue(), names=["INCIDENTS"])
    for i in range(count):
        await js.publish(
            SUBJECT,
            encode_payload({"incident_id": f"i{i}", "priority": 3, "status": "opened"}),
            headers={"Nats-Msg-Id": f"i{i}"},
        )


async def consumer_state(nc: NATS) -> tuple[int, int, int]:
    info = await nc.jetstream().consumer_info("INCIDENTS", "rt-drain")
    return info.num_pending, info.num_ack_pending, info.ack_floor.stream_seq


async def test_drain_finishes_and_acks_the_batch_in_hand(nc: NATS, settings: Settings) -> None:
    """Leaving run_worker while a slow handler runs lets it finish and acks its messages (the
    whole batch fetched); a restarted worker gets nothing redelivered."""
    await publish_incidents(nc, 3)  # before the worker starts: its first batch holds all 3
    worker = SlowWorker(delay_s=0.5)
    async with run_worker(worker, settings, http_port=0):
        await asyncio.wait_for(worker.started.wait(), 10)
    assert sorted(worker.finished) == ["i0", "i1", "i2"]
    assert await consumer_state(nc) == (0, 0, 3)

    again = SlowWorker(delay_s=0)
    async with run_worker(again, settings, http_port=0) as handle:
        await handle.wait_idle(timeout_s=5)
        await asyncio.sleep(0.3)
    assert again.seen == []


async def test_handler_cut_off_at_grace_is_redelivered(
    nc: NATS, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler still running when the drain grace ends is cancelled and acks nothing: the
    next worker on the durable gets the messages again (num_delivered 2) and loses none."""
    monkeypatch.setattr(runner_module, "DRAIN_GRACE_S", 0.2)
    await publish_incidents(nc, 2)
    stuck = SlowWorker(delay_s=60, ack_wait_s=1.0)
    async with run_worker(stuck, settings, http_port=0):
        await asyncio.wait_for(stuck.started.wait(), 10)
    assert stuck.finished == []

    fresh = SlowWorker(delay_s=0, ack_wait_s=1.0)
    async with run_worker(fresh, settings, http_port=0) as handle:
        await handle.wait_idle(timeout_s=15)
    assert sorted(fresh.finished) == ["i0", "i1"]
    assert all(delivered >= 2 for _, delivered in fresh.seen)


async def test_wait_idle_times_out_naming_the_busy_consumer(nc: NATS, settings: Settings) -> None:
    """wait_idle raises TimeoutError naming the consumer that still has work."""
    worker = SlowWorker(delay_s=2)
    async with run_worker(worker, settings, http_port=0) as handle:
        await publish_incidents(nc, 1)
        await asyncio.wait_for(worker.started.wait(), 10)
        with pytest.raises(TimeoutError, match="rt-drain"):
            await handle.wait_idle(timeout_s=0.2)
