"""The harness itself: real NATS with JetStream and three real PostgreSQL databases."""

from __future__ import annotations

import asyncpg
from nats.aio.client import Client as NATS


async def test_jetstream_round_trip(nc: NATS) -> None:
    """A stream can be created, published to and read back on the session's NATS."""
    js = nc.jetstream()
    await js.add_stream(name="SMOKE", subjects=["smoke.>"])
    ack = await js.publish("smoke.a", b"hello")
    assert ack.seq == 1
    sub = await js.pull_subscribe("smoke.>", durable="smoke")
    (msg,) = await sub.fetch(1, timeout=5)
    assert msg.data == b"hello"
    await msg.ack()


async def test_each_database_has_its_own_fresh_schema(dsns: dict[str, str]) -> None:
    """core, analytics and audit are three databases, each on an empty per-test schema."""
    seen = set()
    for name, dsn in dsns.items():
        conn = await asyncpg.connect(dsn)
        try:
            db, schema = await conn.fetchrow("SELECT current_database(), current_schema()")
            tables = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", schema
            )
        finally:
            await conn.close()
        assert schema.startswith("t_")
        assert tables == 0
        seen.add(db)
        assert name in db or len(dsns) == 3
    assert len(seen) == 3
