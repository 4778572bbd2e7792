"""The runtime's consumer loop against real NATS JetStream and PostgreSQL.

Delivery rules under test (ARCHITECTURE.md, "Delivery rules"): ack after the handler returned,
nak with back-off on failure, DLQ + term for undecodable, invalid, rejected and exhausted
messages, and idempotency by event id through ``ProcessedLog``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import msgpack
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig
from pydantic import BaseModel, Field, TypeAdapter

from ionveil.errors import TransientError
from workers.codec import CONTENT_TYPE_JSON, encode_payload
from workers.runtime import (
    ConsumerSpec,
    Envelope,
    ProcessedLog,
    Worker,
    WorkerContext,
    dlq_subject,
    run_worker,
)
from workers.runtime.idempotency import event_key
from workers.settings import Settings

SUBJECT = "ionveil.dispatch.events.acme"

Handler = Callable[[list[Envelope]], Awaitable[None]]


class Event(BaseModel):
    """The payload of the test stream."""

    event_id: str = Field(min_length=1)
    value: int


class ConsumingWorker(Worker):
    """A worker with one test consumer on DISPATCH whose handler the test provides."""

    name = "runtime-test"

    def __init__(
        self,
        handler: Handler,
        *,
        durable: str = "rt-dispatch",
        model: type[BaseModel] | TypeAdapter | None = Event,
        max_deliver: int = 5,
        backoff_s: tuple[float, ...] = (0.05,),
        batch: int = 64,
        ack_wait_s: float = 5.0,
        handler_timeout_s: float | None = None,
    ) -> None:
        self._spec = ConsumerSpec(
            stream="DISPATCH",
            durable=durable,
            filter_subject="ionveil.dispatch.events.>",
            handler=handler,
            model=model,
            max_deliver=max_deliver,
            backoff_s=backoff_s,
            batch=batch,
            ack_wait_s=ack_wait_s,
            handler_timeout_s=handler_timeout_s,
        )
        self.ctx: WorkerContext | None = None

    async def setup(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def consumers(self) -> list[ConsumerSpec]:
        return [self._spec]


class Recorder:
    """A handler spy: records every batch it receives."""

    def __init__(self) -> None:
        self.batches: list[list[Envelope]] = []

    async def __call__(self, batch: list[Envelope]) -> None:
        self.batches.append(list(batch))

    @property
    def envelopes(self) -> list[Envelope]:
        return [e for b in self.batches for e in b]


async def publish(
    nc: NATS,
    value: object,
    *,
    msg_id: str | None = None,
    as_json: bool = False,
    raw: bytes | None = None,
    subject: str = SUBJECT,
) -> None:
    headers = {}
    if msg_id:
        headers["Nats-Msg-Id"] = msg_id
    if as_json:
        headers["Content-Type"] = CONTENT_TYPE_JSON
    body = raw if raw is not None else encode_payload(value, as_json=as_json)
    await nc.jetstream().publish(subject, body, headers=headers or None)


async def dlq_messages(nc: NATS, expected: int, timeout_s: float = 10.0) -> list:
    """The first ``expected`` DLQ messages (waits until they are stored)."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout_s
    while (await js.stream_info("DLQ")).state.messages < expected:
        assert time.monotonic() < deadline, "DLQ messages did not arrive"
        await asyncio.sleep(0.05)
    sub = await js.pull_subscribe(
        "ionveil.dlq.>", stream="DLQ", config=ConsumerConfig(deliver_policy="all")
    )
    msgs = await sub.fetch(expected, timeout=5)
    await sub.unsubscribe()
    return msgs


async def test_valid_messages_reach_the_handler_with_metadata(nc: NATS, settings: Settings) -> None:
    """Valid messages arrive validated, in order, with org, msg id, stream seq and delivery
    count, and are acknowledged (the consumer is idle afterwards)."""
    recorder = Recorder()
    async with run_worker(ConsumingWorker(recorder), settings, http_port=0) as handle:
        for i in range(5):
            await publish(nc, {"event_id": f"e{i}", "value": i}, msg_id=f"e{i}")
        await handle.wait_idle(timeout_s=15)
    got = recorder.envelopes
    assert [e.data for e in got] == [Event(event_id=f"e{i}", value=i) for i in range(5)]
    assert {e.org for e in got} == {"acme"}
    assert [e.msg_id for e in got] == [f"e{i}" for i in range(5)]
    assert [e.stream_seq for e in got] == [1, 2, 3, 4, 5]
    assert all(e.num_delivered == 1 and e.subject == SUBJECT for e in got)


async def test_malformed_and_invalid_messages_go_to_dlq_while_the_rest_is_processed(
    nc: NATS, settings: Settings
) -> None:
    """An undecodable and a schema-invalid message each land on ionveil.dlq.<subject> with the
    reason headers and are terminated; the valid messages around them (MessagePack and JSON)
    are processed."""
    recorder = Recorder()
    async with run_worker(ConsumingWorker(recorder), settings, http_port=0) as handle:
        await publish(nc, {"event_id": "a", "value": 1}, msg_id="a")
        await publish(nc, None, raw=b"\xc1\xff not msgpack", msg_id="bad-bytes")
        await publish(nc, {"event_id": "b", "value": "not a number"}, msg_id="bad-value")
        await publish(nc, {"event_id": "c", "value": 3}, msg_id="c")
        await publish(nc, {"event_id": "d", "value": 4}, msg_id="d", as_json=True)
        await handle.wait_idle(timeout_s=15)
    assert [e.data.event_id for e in recorder.envelopes] == ["a", "c", "d"]

    dead = await dlq_messages(nc, 2)
    by_code = {m.headers["Ionveil-Error-Code"]: m for m in dead}
    assert set(by_code) == {"undecodable", "invalid"}
    for msg in dead:
        assert msg.subject == dlq_subject(SUBJECT)
        assert msg.headers["Ionveil-Original-Subject"] == SUBJECT
        assert msg.headers["Ionveil-Delivery-Count"] == "1"
    assert by_code["undecodable"].data == b"\xc1\xff not msgpack"
    assert by_code["undecodable"].headers["Ionveil-Stream-Seq"] == "2"
    assert "payload" in by_code["undecodable"].headers["Ionveil-Error"]
    assert by_code["invalid"].headers["Ionveil-Stream-Seq"] == "3"
    assert "value" in by_code["invalid"].headers["Ionveil-Error"]
    assert by_code["invalid"].headers["Ionveil-Original-Msg-Id"] == "bad-value"


async def test_transient_failure_is_retried_and_succeeds(nc: NATS, settings: Settings) -> None:
    """A handler raising TransientError has the batch nak'ed with back-off; the redelivery
    (num_delivered 2) succeeds and nothing is dead-lettered."""
    calls: list[int] = []

    async def flaky(batch: list[Envelope]) -> None:
        calls.append(batch[0].num_delivered)
        if len(calls) == 1:
            raise TransientError("database briefly unavailable")

    async with run_worker(ConsumingWorker(flaky), settings, http_port=0) as handle:
        await publish(nc, {"event_id": "x", "value": 1}, msg_id="x")
        await handle.wait_idle(timeout_s=15)
        metrics = handle.ctx.metrics.render().decode()
    assert calls == [1, 2]
    assert (await nc.jetstream().stream_info("DLQ")).state.messages == 0
    assert 'ionveil_messages_failed_total{consumer="rt-dispatch"} 1.0' in metrics
    assert 'ionveil_messages_processed_total{consumer="rt-dispatch"} 1.0' in metrics


async def test_always_failing_handler_ends_in_dlq_after_max_deliver(
    nc: NATS, settings: Settings
) -> None:
    """A message whose handler always fails is delivered max_deliver times, then published
    to the DLQ with code max_deliveries and terminated."""
    deliveries: list[int] = []

    async def broken(batch: list[Envelope]) -> None:
        deliveries.extend(e.num_delivered for e in batch)
        raise RuntimeError("bug in handler")

    worker = ConsumingWorker(broken, max_deliver=3)
    async with run_worker(worker, settings, http_port=0) as handle:
        await publish(nc, {"event_id": "doomed", "value": 1}, msg_id="doomed")
        [dead] = await dlq_messages(nc, 1)
        await handle.wait_idle(timeout_s=15)
        metrics = handle.ctx.metrics.render().decode()
    assert deliveries == [1, 2, 3]
    assert dead.headers["Ionveil-Error-Code"] == "max_deliveries"
    assert dead.headers["Ionveil-Delivery-Count"] == "3"
    assert "RuntimeError: bug in handler" in dead.headers["Ionveil-Error"]
    assert msgpack.unpackb(dead.data) == {"event_id": "doomed", "value": 1}
    assert (
        'ionveil_messages_dead_lettered_total{consumer="rt-dispatch",reason="max_deliveries"} 1.0'
        in metrics
    )


async def test_handler_longer_than_ack_wait_is_kept_alive_by_heartbeats(
    nc: NATS, settings: Settings
) -> None:
    """A handler allowed to outlast ``ack_wait`` (simulation jobs) has its messages kept with
    in-progress heartbeats: a 4 s job under a 1.5 s ack wait is delivered once, acked once."""
    deliveries: list[int] = []

    async def long_job(batch: list[Envelope]) -> None:
        deliveries.extend(e.num_delivered for e in batch)
        await asyncio.sleep(4.0)

    worker = ConsumingWorker(long_job, ack_wait_s=1.5, handler_timeout_s=20.0, batch=1)
    async with run_worker(worker, settings, http_port=0) as handle:
        await publish(nc, {"event_id": "job", "value": 1}, msg_id="job")
        await handle.wait_idle(timeout_s=20)
        await asyncio.sleep(2.0)  # a redelivery, had the heartbeats failed, would come now
        metrics = handle.ctx.metrics.render().decode()
    assert deliveries == [1]
    assert 'ionveil_messages_processed_total{consumer="rt-dispatch"} 1.0' in metrics
    beats = [
        line
        for line in metrics.splitlines()
        if line.startswith("ionveil_messages_in_progress_total")
    ]
    assert beats and float(beats[0].split()[-1]) >= 3.0, beats


async def test_handler_past_its_timeout_is_retried(nc: NATS, settings: Settings) -> None:
    """A handler that outlasts its own ``handler_timeout_s`` fails the batch (nak + retry),
    even while heartbeats were keeping the message."""
    deliveries: list[int] = []

    async def stuck_once(batch: list[Envelope]) -> None:
        deliveries.extend(e.num_delivered for e in batch)
        if len(deliveries) == 1:
            await asyncio.sleep(30.0)

    worker = ConsumingWorker(stuck_once, ack_wait_s=1.0, handler_timeout_s=2.5, batch=1)
    async with run_worker(worker, settings, http_port=0) as handle:
        await publish(nc, {"event_id": "slow", "value": 1}, msg_id="slow")
        await handle.wait_idle(timeout_s=20)
        metrics = handle.ctx.metrics.render().decode()
    assert deliveries == [1, 2]
    assert 'ionveil_messages_failed_total{consumer="rt-dispatch"} 1.0' in metrics


async def test_rejected_message_goes_to_dlq_and_the_rest_is_acked(
    nc: NATS, settings: Settings
) -> None:
    """Envelope.reject() sends only that message to the DLQ (code rejected, the reason in
    Ionveil-Error); the other messages of the batch are acknowledged."""

    async def picky(batch: list[Envelope]) -> None:
        for env in batch:
            if env.data.value < 0:
                env.reject("value: must be >= 0")

    async with run_worker(ConsumingWorker(picky), settings, http_port=0) as handle:
        for i, value in enumerate([1, -1, 2]):
            await publish(nc, {"event_id": f"r{i}", "value": value}, msg_id=f"r{i}")
        await handle.wait_idle(timeout_s=15)
    [dead] = await dlq_messages(nc, 1)
    assert dead.headers["Ionveil-Error-Code"] == "rejected"
    assert dead.headers["Ionveil-Error"] == "value: must be >= 0"
    assert dead.headers["Ionveil-Original-Msg-Id"] == "r1"


async def test_type_adapter_model_and_raw_payloads(nc: NATS, settings: Settings) -> None:
    """A TypeAdapter model validates each message (a single event or a list of them); without
    a model the handler gets the decoded value as is."""
    adapter = TypeAdapter(Event | list[Event])
    validated = Recorder()
    raw = Recorder()
    async with (
        run_worker(ConsumingWorker(validated, model=adapter), settings, http_port=0) as one,
        run_worker(
            ConsumingWorker(raw, model=None, durable="rt-raw"), settings, http_port=0
        ) as two,
    ):
        await publish(nc, {"event_id": "s", "value": 1})
        await publish(nc, [{"event_id": "l1", "value": 2}, {"event_id": "l2", "value": 3}])
        await publish(nc, [{"event_id": "", "value": 2}])
        await one.wait_idle(timeout_s=15)
        await two.wait_idle(timeout_s=15)
    assert [e.data for e in validated.envelopes] == [
        Event(event_id="s", value=1),
        [Event(event_id="l1", value=2), Event(event_id="l2", value=3)],
    ]
    assert raw.envelopes[0].data == {"event_id": "s", "value": 1}
    assert len(raw.envelopes) == 3
    [dead] = await dlq_messages(nc, 1)
    assert dead.headers["Ionveil-Consumer"] == "rt-dispatch"


async def test_message_delivered_twice_is_processed_once(
    nc: NATS, settings: Settings, core_pool: asyncpg.Pool
) -> None:
    """With ProcessedLog claimed in the effect's transaction, a redelivery (the first attempt
    committed its effect but failed before the ack) finds the id claimed: the effect happens
    once though the handler saw the message twice, with the same msg id and stream seq."""
    processed = ProcessedLog()
    await processed.migrate(core_pool)
    await core_pool.execute("CREATE TABLE IF NOT EXISTS totals (event_id TEXT, value INT)")
    seen: list[tuple[str | None, int, int]] = []

    async def effect_then_crash_once(batch: list[Envelope]) -> None:
        seen.extend((e.msg_id, e.stream_seq, e.num_delivered) for e in batch)
        async with core_pool.acquire() as conn, conn.transaction():
            fresh = await processed.claim_many(conn, "rt-dispatch", [event_key(e) for e in batch])
            for env in batch:
                if event_key(env) in fresh:
                    await conn.execute(
                        "INSERT INTO totals VALUES ($1, $2)", env.data.event_id, env.data.value
                    )
        if len(seen) == 1:
            raise ConnectionResetError("crash between commit and ack")

    async with run_worker(ConsumingWorker(effect_then_crash_once), settings, http_port=0) as h:
        await publish(nc, {"event_id": "once", "value": 7}, msg_id="evt-once")
        await h.wait_idle(timeout_s=15)
    assert seen == [("evt-once", 1, 1), ("evt-once", 1, 2)]
    assert await core_pool.fetch("SELECT event_id, value FROM totals") == [("once", 7)]
    async with core_pool.acquire() as conn:
        assert await processed.seen(conn, "rt-dispatch", "evt-once")
        assert not await processed.claim(conn, "rt-dispatch", "evt-once")
        assert await processed.claim(conn, "rt-dispatch", "evt-other")
    assert await processed.prune(core_pool, older_than_hours=0) == 2


@pytest.mark.parametrize("table", ["Bad Name", "x;drop", ""])
def test_processed_log_refuses_unsafe_table_names(table: str) -> None:
    """ProcessedLog only accepts a plain SQL identifier as its table name."""
    with pytest.raises(ValueError, match="table"):
        ProcessedLog(table)
