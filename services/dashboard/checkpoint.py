"""Checkpoints of the dashboard aggregates, in the analytics database.

A checkpoint is one *generation*: a compressed blob per org (``export_state``) plus the stream
sequence each input stream was covered up to. It is written in one transaction, so a restore
always gets blobs and offsets that belong together, even when several replicas checkpoint side
by side (each writes its own generations; the newest wins; older ones are pruned).

Restart (ARCHITECTURE.md, "Delivery rules"): restore the newest generation, then replay each
stream from ``offset + 1``; events that were already inside the checkpoint are dropped by the
seen-id sets that travel with it, so replay never counts an event twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import asyncpg
import structlog

from services.dashboard.aggregator import DispatchAggregator

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "MemoryCheckpointStore",
    "PostgresCheckpointStore",
    "restore_checkpoint",
    "save_checkpoint",
]

log = structlog.get_logger(__name__)
KEEP_GENERATIONS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dashboard_checkpoints (
    generation BIGSERIAL PRIMARY KEY,
    writer TEXT NOT NULL,
    offsets JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS dashboard_checkpoint_orgs (
    generation BIGINT NOT NULL REFERENCES dashboard_checkpoints (generation) ON DELETE CASCADE,
    org_id TEXT NOT NULL,
    state BYTEA NOT NULL,
    PRIMARY KEY (generation, org_id)
);
"""


@dataclass
class Checkpoint:
    """One generation: per-org state blobs and the covered sequence of each stream."""

    offsets: dict[str, int] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    writer: str = ""
    generation: int = 0


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live."""

    async def setup(self) -> None:
        """Create the schema (idempotent)."""

    async def save(self, checkpoint: Checkpoint) -> int:
        """Store a generation atomically; returns its number."""

    async def load(self) -> Checkpoint | None:
        """The newest generation, or ``None``."""


class MemoryCheckpointStore:
    """In-process store (tests, single-process use)."""

    def __init__(self) -> None:
        self.generations: list[Checkpoint] = []

    async def setup(self) -> None:
        """Nothing to create."""

    async def save(self, checkpoint: Checkpoint) -> int:
        """Keep a copy of the generation."""
        checkpoint.generation = len(self.generations) + 1
        self.generations.append(
            Checkpoint(
                dict(checkpoint.offsets),
                dict(checkpoint.blobs),
                checkpoint.writer,
                checkpoint.generation,
            )
        )
        return checkpoint.generation

    async def load(self) -> Checkpoint | None:
        """The newest generation."""
        return self.generations[-1] if self.generations else None


class PostgresCheckpointStore:
    """Checkpoints in PostgreSQL (the analytics database), unqualified table names."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Create the two tables if missing."""
        async with self._pool.acquire() as conn:
            await conn.execute(_SCHEMA)

    async def save(self, checkpoint: Checkpoint) -> int:
        """Insert a generation and its blobs in one transaction, then prune old ones."""
        async with self._pool.acquire() as conn, conn.transaction():
            generation = await conn.fetchval(
                "INSERT INTO dashboard_checkpoints (writer, offsets) VALUES ($1, $2::jsonb) "
                "RETURNING generation",
                checkpoint.writer,
                json.dumps(checkpoint.offsets),
            )
            await conn.executemany(
                "INSERT INTO dashboard_checkpoint_orgs (generation, org_id, state) "
                "VALUES ($1, $2, $3)",
                [(generation, org, blob) for org, blob in checkpoint.blobs.items()],
            )
            await conn.execute(
                "DELETE FROM dashboard_checkpoints WHERE generation <= $1",
                generation - KEEP_GENERATIONS,
            )
        checkpoint.generation = generation
        return int(generation)

    async def load(self) -> Checkpoint | None:
        """The newest generation with all its blobs."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            row = await conn.fetchrow(
                "SELECT generation, writer, offsets FROM dashboard_checkpoints "
                "ORDER BY generation DESC LIMIT 1"
            )
            if row is None:
                return None
            blobs = await conn.fetch(
                "SELECT org_id, state FROM dashboard_checkpoint_orgs WHERE generation = $1",
                row["generation"],
            )
        return Checkpoint(
            {k: int(v) for k, v in json.loads(row["offsets"]).items()},
            {r["org_id"]: bytes(r["state"]) for r in blobs},
            row["writer"],
            int(row["generation"]),
        )


async def save_checkpoint(
    aggregator: DispatchAggregator,
    store: CheckpointStore,
    offsets: dict[str, int],
    writer: str = "",
) -> int:
    """Flush, cut every org's state with ``offsets`` (no await in between), store it.

    ``offsets`` must describe what had been ingested when this is called: the cut happens
    before the first await, so nothing ingested later can slip into the blobs.
    """
    aggregator.flush()
    cut = dict(offsets)
    blobs = {org: aggregator.export_state(org) for org in aggregator.org_ids()}
    generation = await store.save(Checkpoint(cut, blobs, writer))
    log.info(
        "dashboard.checkpoint_saved",
        generation=generation,
        orgs=len(blobs),
        bytes=sum(map(len, blobs.values())),
        offsets=cut,
    )
    return generation


async def restore_checkpoint(
    aggregator: DispatchAggregator, store: CheckpointStore
) -> dict[str, int]:
    """Load the newest generation into ``aggregator``; returns its offsets (empty if none)."""
    checkpoint = await store.load()
    if checkpoint is None:
        return {}
    for org, blob in checkpoint.blobs.items():
        aggregator.import_state(org, blob)
    log.info(
        "dashboard.checkpoint_restored",
        generation=checkpoint.generation,
        orgs=len(checkpoint.blobs),
        offsets=checkpoint.offsets,
    )
    return dict(checkpoint.offsets)
