"""Reference pattern for exactly-once effects: a table of processed ids, written in the same
transaction as the effect.

JetStream delivers at least once (a crash between the effect and the ack redelivers), so a
handler makes its effect idempotent by event id. With ``ProcessedLog`` the handler claims the
ids of its batch and applies the effect for the newly claimed ones *in one transaction*: either
both the effect and the claims commit, or neither, and a redelivery finds the ids claimed::

    async with pool.acquire() as conn, conn.transaction():
        fresh = await log.claim_many(conn, "my-consumer", [event_key(e) for e in batch])
        for env in batch:
            if event_key(env) in fresh:
                await apply_effect(conn, env.data)
"""

from __future__ import annotations

import re

import asyncpg

from workers.runtime.messages import Envelope

__all__ = ["ProcessedLog", "event_key"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def event_key(envelope: Envelope) -> str:
    """The id a message is deduplicated on: its ``Nats-Msg-Id``, else its stream sequence."""
    return envelope.msg_id if envelope.msg_id else f"seq:{envelope.stream_seq}"


class ProcessedLog:
    """The processed-ids table of a database (unqualified name: the search path decides).

    Args:
        table: the table name (a plain lower-case SQL identifier).

    Raises:
        ValueError: ``table`` is not a plain identifier.
    """

    def __init__(self, table: str = "processed_messages") -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"table: {table!r} is not a plain SQL identifier")
        self.table = table

    async def migrate(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        """Create the table if it does not exist (idempotent, safe at every start)."""
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.table} (
                consumer TEXT NOT NULL,
                msg_id TEXT NOT NULL,
                processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (consumer, msg_id)
            )"""
        )

    async def claim(self, conn: asyncpg.Connection, consumer: str, msg_id: str) -> bool:
        """Record ``msg_id`` as processed by ``consumer``; ``False`` if it already was.

        Call inside the transaction that applies the effect.
        """
        row = await conn.fetchval(
            f"INSERT INTO {self.table} (consumer, msg_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            consumer,
            msg_id,
        )
        return row is not None

    async def claim_many(
        self, conn: asyncpg.Connection, consumer: str, msg_ids: list[str]
    ) -> set[str]:
        """Claim a batch of ids in one statement; returns those not processed before."""
        if not msg_ids:
            return set()
        rows = await conn.fetch(
            f"INSERT INTO {self.table} (consumer, msg_id) "
            "SELECT $1, id FROM unnest($2::text[]) AS t(id) "
            "ON CONFLICT DO NOTHING RETURNING msg_id",
            consumer,
            list(dict.fromkeys(msg_ids)),
        )
        return {r["msg_id"] for r in rows}

    async def seen(
        self, conn: asyncpg.Connection | asyncpg.Pool, consumer: str, msg_id: str
    ) -> bool:
        """Whether ``msg_id`` was already processed by ``consumer``."""
        return bool(
            await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE consumer = $1 AND msg_id = $2)",
                consumer,
                msg_id,
            )
        )

    async def prune(self, conn: asyncpg.Connection | asyncpg.Pool, older_than_hours: float) -> int:
        """Forget ids older than ``older_than_hours`` (beyond the stream's redelivery horizon)."""
        status = await conn.execute(
            f"DELETE FROM {self.table} WHERE processed_at < now() - make_interval(secs => $1)",
            older_than_hours * 3600.0,
        )
        return int(status.split()[-1])
