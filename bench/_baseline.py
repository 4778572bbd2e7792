"""The ceiling every NATS-consuming benchmark compares against: a bare nats-py pull loop.

Fetch a batch, decode each message with msgpack, ack each: what any consumer must at least do,
with nothing of IonVeil in it. Shared by ``bench/runtime.py`` and ``bench/dashboard.py`` so
both measure the same baseline.
"""

from __future__ import annotations

import time

import msgpack
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

__all__ = ["bare_fetch_loop"]


async def bare_fetch_loop(
    nc: NATS, count: int, durable: str, *, subject: str, batch: int
) -> tuple[float, float]:
    """Consume ``count`` messages of ``subject`` (stream DISPATCH) through a new durable.

    Returns:
        ``(wall seconds, CPU seconds of this process)``; the durable is deleted afterwards.
    """
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        subject,
        durable=durable,
        stream="DISPATCH",
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=4096),
    )
    done = 0
    started, cpu = time.perf_counter(), time.process_time()
    while done < count:
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            msgpack.unpackb(msg.data)
            await msg.ack()
        done += len(msgs)
    elapsed = time.perf_counter() - started, time.process_time() - cpu
    await nc.flush()
    await sub.unsubscribe()
    await js.delete_consumer("DISPATCH", durable)
    return elapsed
