"""``BatchPuller`` against a real JetStream server: batches, waiting, errors, redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import APIError

from tests.infra import Infra
from workers.runtime.pull import BatchPuller

STREAM, SUBJECT, DURABLE = "PULLTEST", "pulltest.events", "pull-test"


@pytest.fixture
async def puller(nc: NATS) -> AsyncIterator[BatchPuller]:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=["pulltest.>"]))
    await js.add_consumer(
        STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=2.0)
    )
    pull = BatchPuller(nc, stream=STREAM, durable=DURABLE)
    await pull.start()
    yield pull
    await pull.unsubscribe()
    await js.delete_stream(STREAM)


async def _publish(nc: NATS, count: int, start: int = 0) -> None:
    js = nc.jetstream()
    for i in range(start, start + count):
        await js.publish(SUBJECT, str(i).encode())


async def test_fetch_takes_what_is_there_in_batches(nc: NATS, puller: BatchPuller) -> None:
    """Available messages come at once, in order, at most ``batch`` per fetch, with their
    original subject and an ack subject."""
    await _publish(nc, 25)
    started = time.monotonic()
    first = await puller.fetch(10, timeout=5)
    second = await puller.fetch(10, timeout=5)
    third = await puller.fetch(10, timeout=5)
    assert time.monotonic() - started < 2.0  # no waiting for a full batch that cannot come
    bodies = [int(m.data) for m in first + second + third]
    assert bodies == list(range(25)) and [len(first), len(second), len(third)] == [10, 10, 5]
    assert {m.subject for m in first} == {SUBJECT}
    for msg in first + second + third:
        await msg.ack()


async def test_an_empty_consumer_waits_then_returns_the_first_arrival(
    nc: NATS, puller: BatchPuller
) -> None:
    """With nothing pending a fetch times out after ``timeout``; a message published while a
    fetch waits is returned as soon as it arrives, not at the end of the wait."""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await puller.fetch(10, timeout=0.5)
    assert 0.4 <= time.monotonic() - started < 2.0

    waiting = asyncio.create_task(puller.fetch(10, timeout=10))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await _publish(nc, 1)
    (msg,) = await waiting
    assert int(msg.data) == 0 and time.monotonic() - started < 2.0
    await msg.ack()


async def test_messages_arriving_after_a_fetch_returned_are_kept_for_the_next(
    nc: NATS, puller: BatchPuller
) -> None:
    """A waiting request returns with its first message; more delivered for that request
    later are handed out by the next fetch, none lost or repeated."""
    waiting = asyncio.create_task(puller.fetch(50, timeout=10))
    await asyncio.sleep(0.2)
    await _publish(nc, 1)
    got = await waiting
    await _publish(nc, 9, start=1)
    deadline = time.monotonic() + 5
    while len(got) < 10 and time.monotonic() < deadline:
        got += await puller.fetch(50, timeout=1)
    assert sorted(int(m.data) for m in got) == list(range(10))


async def test_unacknowledged_messages_come_back_after_ack_wait(
    nc: NATS, puller: BatchPuller
) -> None:
    """Messages handed out but never acknowledged are redelivered after ``ack_wait``."""
    await _publish(nc, 3)
    first = await puller.fetch(10, timeout=5)
    assert len(first) == 3
    again: list = []
    deadline = time.monotonic() + 10
    while len(again) < 3 and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            again += await puller.fetch(10, timeout=3)
    assert sorted(int(m.data) for m in again) == [0, 1, 2]
    assert all(m.metadata.num_delivered == 2 for m in again)


async def test_a_deleted_consumer_is_an_api_error(nc: NATS, puller: BatchPuller) -> None:
    """When the durable is gone the server has no responder: the fetch raises ``APIError``
    (the consumer loop re-provisions on it)."""
    await nc.jetstream().delete_consumer(STREAM, DURABLE)
    with pytest.raises(APIError):
        await puller.fetch(10, timeout=3)


async def test_fetch_after_unsubscribe_or_close_is_refused(
    infra: Infra, puller: BatchPuller
) -> None:
    """No fetch on an unsubscribed puller; none on a closed connection."""
    await puller.unsubscribe()
    with pytest.raises(nats.errors.BadSubscriptionError):
        await puller.fetch(1, timeout=1)
    own = await nats.connect(infra.nats_url)
    closing = BatchPuller(own, stream=STREAM, durable=DURABLE)
    await closing.start()
    await own.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await closing.fetch(1, timeout=1)
